"""accounts known only by a shared legacy address: an index for the sign-in page's search

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 00:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Partial: only accounts without an address of their own are searched this way.
    op.create_index(
        "ix_accounts_legacy_email",
        "accounts",
        [sa.text("lower(legacy_email)")],
        unique=False,
        postgresql_where=sa.text("email_key IS NULL"),
        sqlite_where=sa.text("email_key IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_accounts_legacy_email", table_name="accounts")
