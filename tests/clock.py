"""A clock tests move by hand, for code that takes `now` as a callable."""

from __future__ import annotations

import datetime as dt


class Clock:
    """Timezone-aware UTC `now`, from `start` (the real time when not given)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)
