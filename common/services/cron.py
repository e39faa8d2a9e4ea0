"""Cron expressions and time zones of schedules: five-field unix cron read in an IANA time zone, with the
slots before and after a moment computed by croniter on aware datetimes (daylight-saving safe)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from functools import lru_cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from common.errors import BadRequest

CRON_FIELD_RE = re.compile(r"^[0-9A-Za-z*/,-]+$")
MONTHS = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
CRON_WORDS = (
    set(),
    set(),
    set(),
    MONTHS,
    {"sun", "mon", "tue", "wed", "thu", "fri", "sat"},
)  # names per field
CRON_REFERENCE = dt.datetime(2024, 1, 1)  # a leap year, so 29 February crons have slots to measure


class InvalidCron(BadRequest):
    code = "invalid_cron"


class InvalidTimeZone(BadRequest):
    code = "invalid_time_zone"


def parse_cron(text: Any) -> str:
    """A five-field unix-cron expression (as Cloud Scheduler reads it), whitespace normalised; else 400."""
    fields = text.split() if isinstance(text, str) else []
    if len(fields) != 5:
        raise InvalidCron(
            "cron must have five fields (minute hour day-of-month month day-of-week), e.g. 0 6 * * *"
        )
    for index, field in enumerate(fields):
        words = {w.lower() for w in re.findall(r"[A-Za-z]+", field)}
        if not CRON_FIELD_RE.fullmatch(field) or not words <= CRON_WORDS[index]:
            raise InvalidCron(f"cron field {index + 1} ({field!r}) is not unix-cron")
    cron = " ".join(fields)
    if not croniter.is_valid(cron):
        raise InvalidCron(f"cron {cron!r} is not valid: a value is out of range")
    try:
        croniter(cron, CRON_REFERENCE).get_next(dt.datetime)
    except (CroniterBadDateError, CroniterBadCronError):
        raise InvalidCron(f"cron {cron!r} never fires") from None
    return cron


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_time_zone(name: Any) -> ZoneInfo:
    """An IANA time zone such as Europe/Berlin or Etc/UTC; else 400."""
    if not isinstance(name, str) or name not in _zone_names():
        raise InvalidTimeZone(f"time_zone must be an IANA time zone name such as Europe/Berlin, not {name!r}")
    return ZoneInfo(name)


def _slots(cron: str, zone: ZoneInfo, start: dt.datetime, forward: bool) -> Iterator[dt.datetime]:
    """Slots (UTC) after (or before) `start`, one per wall-clock time (see the module's time zone rules)."""
    every_hour = cron.split()[1] == "*"
    it = croniter(cron, start.astimezone(zone))
    step = it.get_next if forward else it.get_prev
    try:
        while True:
            slot = step(dt.datetime).astimezone(dt.UTC)
            if every_hour or not slot.astimezone(zone).fold:
                yield slot
    except CroniterBadDateError:
        return


def latest_slot(cron: str, zone: ZoneInfo, now: dt.datetime) -> dt.datetime | None:
    """The schedule's latest slot at or before `now`, in UTC."""
    return next(_slots(cron, zone, now + dt.timedelta(microseconds=1), forward=False), None)


def next_slot(cron: str, zone: ZoneInfo, now: dt.datetime) -> dt.datetime | None:
    """The schedule's first slot after `now`, in UTC."""
    return next(_slots(cron, zone, now, forward=True), None)


def _gaps(cron: str, count: int) -> list[dt.timedelta]:
    it = croniter(cron, CRON_REFERENCE)
    times = [it.get_next(dt.datetime) for _ in range(count + 1)]
    return [later - earlier for earlier, later in pairwise(times)]


@lru_cache(maxsize=1024)
def shortest_interval(cron: str) -> dt.timedelta:
    """The shortest wall-clock gap between two slots (over the first 1,000 slots from 2024)."""
    return min(_gaps(cron, 1000))


@lru_cache(maxsize=64)
def longest_interval(cron: str) -> dt.timedelta:
    """The longest gap between two ticks: a dispatcher's period."""
    return max(_gaps(cron, 400))
