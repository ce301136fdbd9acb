"""Calendar periods (days and months) in the platform's time zone, for daily and monthly figures.

Period keys are "d20261126" and "m202611". A minute never straddles local midnight (every time zone
offset is a multiple of 15 minutes), so the key of a timestamp is computed once per minute and
cached.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

MINUTE_MS: Final = 60_000
_CACHE_LIMIT: Final = 50_000


class Calendar:
    """Day and month keys of timestamps, and the instants periods end, in one time zone."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self._keys: dict[int, tuple[str, str]] = {}

    def keys(self, ts_ms: int) -> tuple[str, str]:
        """Return (day key, month key) of an epoch-ms timestamp."""
        minute = ts_ms - ts_ms % MINUTE_MS
        found = self._keys.get(minute)
        if found is None:
            if len(self._keys) > _CACHE_LIMIT:
                self._keys.clear()
            local = datetime.fromtimestamp(minute / 1000, self.zone)
            found = self._keys[minute] = (f"d{local:%Y%m%d}", f"m{local:%Y%m}")
        return found

    def today(self, now_ms: int) -> str:
        """Key of the day holding now_ms."""
        return self.keys(now_ms)[0]

    def yesterday(self, now_ms: int) -> str:
        """Key of the day before the one holding now_ms."""
        local = datetime.fromtimestamp(now_ms / 1000, self.zone)
        return f"d{(local.date() - timedelta(days=1)):%Y%m%d}"

    def this_month(self, now_ms: int) -> str:
        """Key of the month holding now_ms."""
        return self.keys(now_ms)[1]

    def end_ms(self, key: str) -> int:
        """Epoch ms at which the period of a key ends (local midnight after it)."""
        if key[0] == "d":
            day = datetime.strptime(key[1:], "%Y%m%d").date() + timedelta(days=1)
        else:
            month = datetime.strptime(key[1:], "%Y%m").date()
            day = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
        start = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return int(start.timestamp() * 1000)
