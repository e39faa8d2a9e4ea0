"""When a schedule is due: cron slots in their own time zone, DST, the 15-minute dispatcher, missed ticks."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import yaml

from common.errors import ConfigurationError
from common.services.cron import (
    InvalidCron,
    InvalidTimeZone,
    latest_slot,
    next_slot,
    parse_cron,
    parse_time_zone,
    shortest_interval,
)
from common.services.dispatcher import CATCH_UP, due_slot
from common.services.schedule_config import check_platform_config, platform_config
from common.settings import CONFIGS_DIR

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
TICK = dt.timedelta(minutes=15)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def run_dispatcher(
    cron: str, zone: ZoneInfo, start: dt.datetime, end: dt.datetime, *, floor: dt.datetime | None = None
) -> list[dt.datetime]:
    """The slots a 15-minute dispatcher ticking from start to end (inclusive) starts, remembering the last."""
    started: list[dt.datetime] = []
    now = start
    while now <= end:
        slot = due_slot(
            cron, zone, now, last_dispatched=started[-1] if started else None, floor=floor or now - TICK
        )
        if slot is not None:
            started.append(slot)
        now += TICK
    return started


# -- time zones and DST -----------------------------------------------------------------------------------


def test_a_berlin_morning_schedule_moves_an_hour_in_utc_when_summer_time_starts():
    assert latest_slot("0 6 * * *", BERLIN, utc(2024, 3, 30, 10)) == utc(2024, 3, 30, 5)
    assert latest_slot("0 6 * * *", BERLIN, utc(2024, 3, 31, 10)) == utc(2024, 3, 31, 4)


def test_a_berlin_morning_schedule_starts_once_a_day_across_both_dst_changes():
    spring = run_dispatcher("0 6 * * *", BERLIN, utc(2024, 3, 30, 0), utc(2024, 4, 1, 23, 45))
    assert spring == [utc(2024, 3, 30, 5), utc(2024, 3, 31, 4), utc(2024, 4, 1, 4)]
    autumn = run_dispatcher("0 6 * * *", BERLIN, utc(2024, 10, 26, 0), utc(2024, 10, 28, 23, 45))
    assert autumn == [utc(2024, 10, 26, 4), utc(2024, 10, 27, 5), utc(2024, 10, 28, 5)]


def test_a_slot_in_the_repeated_autumn_hour_starts_once():
    started = run_dispatcher("30 2 * * *", BERLIN, utc(2024, 10, 26, 12), utc(2024, 10, 27, 12))
    assert started == [utc(2024, 10, 27, 0, 30)]  # 02:30 CEST, not again at 02:30 CET


def test_a_slot_in_the_skipped_spring_hour_starts_right_after_the_gap():
    started = run_dispatcher("30 2 * * *", BERLIN, utc(2024, 3, 30, 12), utc(2024, 3, 31, 12))
    assert started == [utc(2024, 3, 31, 1)]  # 03:00 CEST: 02:30 does not exist that night


def test_an_hourly_schedule_runs_in_both_passes_of_the_repeated_hour():
    started = run_dispatcher("30 * * * *", BERLIN, utc(2024, 10, 26, 22), utc(2024, 10, 27, 22, 45))
    assert len(started) == 25  # the local day of 27 October 2024 has 25 hours
    assert len(set(started)) == 25


def test_next_slot_is_reported_in_utc_for_the_schedules_zone():
    assert next_slot("0 6 * * *", BERLIN, utc(2024, 7, 1, 4, 0)) == utc(2024, 7, 2, 4)
    assert next_slot("0 6 * * *", BERLIN, utc(2024, 12, 1, 3, 59)) == utc(2024, 12, 1, 5)


# -- the 15-minute dispatcher ---------------------------------------------------------------------------


def test_an_every_15_minutes_schedule_starts_each_slot_exactly_once_over_a_day():
    started = run_dispatcher("*/15 * * * *", ZoneInfo("Etc/UTC"), utc(2024, 5, 1, 0), utc(2024, 5, 1, 23, 45))
    assert len(started) == 96 and started[0] == utc(2024, 5, 1, 0) and started[-1] == utc(2024, 5, 1, 23, 45)


def test_a_tick_exactly_on_a_slot_starts_it_and_a_tick_just_before_does_not():
    zone = ZoneInfo("Etc/UTC")
    last = utc(2024, 5, 1, 10, 0)
    assert due_slot("*/15 * * * *", zone, utc(2024, 5, 1, 10, 15), last_dispatched=last, floor=last) == utc(
        2024, 5, 1, 10, 15
    )
    before = dt.datetime(2024, 5, 1, 10, 14, 59, 999999, tzinfo=UTC)
    assert due_slot("*/15 * * * *", zone, before, last_dispatched=last, floor=last) is None


def test_a_slot_between_ticks_starts_at_the_next_tick():
    started = run_dispatcher("7 * * * *", ZoneInfo("Etc/UTC"), utc(2024, 5, 1, 10, 0), utc(2024, 5, 1, 11, 0))
    assert started == [utc(2024, 5, 1, 10, 7)]  # by the 10:15 tick; the 11:00 tick has nothing new


# -- missed ticks and first sight -------------------------------------------------------------------------


def test_after_an_outage_only_the_most_recent_missed_slot_starts():
    zone = ZoneInfo("Etc/UTC")
    last = utc(2024, 5, 1, 6)
    now = utc(2024, 5, 4, 9)  # the dispatcher was down from 2 May to 4 May 09:00
    assert due_slot("0 6 * * *", zone, now, last_dispatched=last, floor=last) == utc(2024, 5, 4, 6)
    assert due_slot("0 6 * * *", zone, now + TICK, last_dispatched=utc(2024, 5, 4, 6), floor=last) is None


def test_a_slot_missed_for_longer_than_the_catch_up_window_never_starts():
    zone = ZoneInfo("Etc/UTC")
    now = utc(2024, 5, 10, 12)
    missed = utc(2024, 5, 1, 6)  # the monthly slot, 9 days before now
    assert now - missed > CATCH_UP
    assert latest_slot("0 6 1 * *", zone, now) == missed
    assert due_slot("0 6 1 * *", zone, now, last_dispatched=utc(2024, 4, 1, 6), floor=utc(2024, 1, 1)) is None
    assert (
        due_slot(
            "0 6 1 * *", zone, utc(2024, 5, 8, 5), last_dispatched=utc(2024, 4, 1, 6), floor=utc(2024, 1, 1)
        )
        == missed
    )


def test_a_new_platform_schedule_does_not_start_a_slot_from_before_the_last_dispatcher_period():
    zone = ZoneInfo("Etc/UTC")
    deploy = utc(2024, 5, 1, 14, 0)
    assert due_slot("0 6 * * *", zone, deploy, last_dispatched=None, floor=deploy - TICK) is None
    tick = utc(2024, 5, 2, 6, 0, 2)
    assert due_slot("0 6 * * *", zone, tick, last_dispatched=None, floor=tick - TICK) == utc(2024, 5, 2, 6)


def test_a_tenant_schedule_starts_no_slot_from_before_it_was_created():
    zone = ZoneInfo("Etc/UTC")
    created = utc(2024, 5, 1, 6, 30)
    assert due_slot("0 6 * * *", zone, utc(2024, 5, 1, 6, 45), last_dispatched=None, floor=created) is None
    later = utc(2024, 5, 2, 8, 0)  # the 2 May 06:00 tick was missed: it still starts, late
    assert due_slot("0 6 * * *", zone, later, last_dispatched=None, floor=created) == utc(2024, 5, 2, 6)


# -- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    ["", "61 * * * *", "* * * *", "0 6 * * * *", "@daily", "H 6 * * *", "R 6 * * *", "0 6 L * *",
     "0 6 * * 1#2", "0 6 ? * *", "0 6 31 2 *", "0 6 * * funday", "0 6 * mon *", "*/0 * * * *", "0 25 * * *"],
)  # fmt: skip
def test_an_invalid_cron_is_refused_with_400(cron):
    with pytest.raises(InvalidCron) as caught:
        parse_cron(cron)
    assert caught.value.status == 400 and caught.value.message


@pytest.mark.parametrize(
    "cron", ["0 6 * * *", "0 6 * * mon-fri", "30 5 1 JAN *", "*/15 * * * *", "0  6 * * *"]
)
def test_a_five_field_unix_cron_is_accepted(cron):
    assert parse_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize(
    "cron,minutes",
    [
        ("*/10 * * * *", 10),
        ("0,10 6 * * *", 10),
        ("0,55 0,23 * * *", 5),
        ("*/15 * * * *", 15),
        ("0 6 * * *", 1440),
    ],
)
def test_the_shortest_interval_of_a_cron_counts_gaps_across_hours_and_days(cron, minutes):
    assert shortest_interval(cron) == dt.timedelta(minutes=minutes)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "", "CET+1", None])
def test_an_unknown_time_zone_is_refused_with_400(name):
    with pytest.raises(InvalidTimeZone) as caught:
        parse_time_zone(name)
    assert caught.value.status == 400


# -- configs/schedules.yml ------------------------------------------------------------------------------


def test_the_shipped_schedules_file_has_one_15_minute_dispatcher_for_the_daily_gcp_costs():
    config = platform_config()
    assert config.default_dispatcher == "every-15-minutes"
    assert config.periods["every-15-minutes"] == TICK
    daily = config.schedules["daily_gcp_costs"]
    assert config.dispatcher_of(daily) == "every-15-minutes"
    assert (daily.template, daily.tenants, daily.parameters) == (
        "gcp/cost/cost_billing",
        "*",
        {"date": "yesterday"},
    )


def _file(**schedule: object) -> dict[str, object]:
    raw = yaml.safe_load((CONFIGS_DIR / "schedules.yml").read_text())
    entry = {"cron": "0 6 * * *", "time_zone": "Etc/UTC", "template": "gcp/example/dryrun", "tenants": "*"}
    raw["schedules"]["extra"] = entry | schedule
    return raw


@pytest.mark.parametrize(
    "change,named",
    [
        ({"cron": "*/5 * * * *"}, "more often than its dispatcher"),
        ({"dispatcher": "hourly"}, "no dispatcher 'hourly'"),
        ({"template": "gcp/example/nope"}, "no runnable template"),
        ({"parameters": {"notify_to": "x@example.com"}}, "notify_to"),
        ({"time_zone": "Europe/Nowhere"}, "time_zone"),
        ({"tenants": ["Acme!"]}, "tenants"),
        ({"owner": "ops"}, "owner"),
    ],
)
def test_a_wrong_platform_schedule_is_refused_naming_it(change, named):
    with pytest.raises(ConfigurationError) as caught:
        check_platform_config(_file(**change))
    assert named in caught.value.message


def test_the_flat_schedules_format_without_dispatchers_is_refused():
    with pytest.raises(ConfigurationError) as caught:
        check_platform_config({"daily": {"cron": "0 6 * * *", "time_zone": "Etc/UTC"}})
    assert "dispatchers" in caught.value.message
