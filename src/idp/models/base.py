"""Declarative base, UTC timestamps and id helpers shared by every table."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, configure_mappers

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Base of every table; constraint names are stable across backends."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


def column_attributes(model: type[Base]) -> tuple[str, ...]:
    """The attribute of each of `model`'s table columns, in the table's order: the keys
    of a Core row of the whole table (`from_columns(model, dict(zip(keys, row)))` is its
    object)."""
    mapper = model.__mapper__
    return tuple(mapper.get_property_by_column(column).key for column in mapper.local_table.c)


ModelT = TypeVar("ModelT", bound=Base)


def from_columns(model: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """An object of `model` with `values` (by attribute), as a read would set them, in
    no session (transient): made without the constructor, whose attribute events cost
    more CPU than the page view's own work. The way rows read with Core or the driver
    become objects; `make_transient_to_detached` then puts one in a session as read."""
    mapper = model.__mapper__
    if not mapper.configured:  # the constructor would configure the mappers: do it here
        configure_mappers()
    instance: ModelT = mapper.class_manager.new_instance()
    instance.__dict__.update(values)
    return instance


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    """A random, opaque identifier (UUID4 text)."""
    return str(uuid.uuid4())
