"""The recurrence rule at its edges, the night window, priority ordering."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from server.cases.rules import (
    CaseRule,
    case_due_day,
    days_in_window,
    distinct_days,
    is_night,
    latest_window_days,
    local_day,
    priority,
    should_open_case,
    site_zone,
)

D0 = date(2026, 3, 1)
RULE = CaseRule()
SH = site_zone(None)


def days(*offsets: int) -> list[date]:
    return [D0 + timedelta(days=o) for o in offsets]


def test_two_days_do_not_open_a_case_three_do() -> None:
    assert not should_open_case(days(0, 1), RULE)
    assert not should_open_case(days(0, 0, 1, 1, 1), RULE)  # many sightings, still 2 days
    assert should_open_case(days(0, 1, 2), RULE)
    assert case_due_day(days(0, 1, 2, 3), RULE) == D0 + timedelta(days=2)


def test_window_end_is_inclusive_of_day_14_not_15() -> None:
    assert should_open_case(days(0, 6, 13), RULE)  # first and last 13 days apart
    assert not should_open_case(days(0, 6, 14), RULE)  # day 0 left the window
    # Later days can still form a window of their own.
    assert case_due_day(days(0, 14, 20, 27), RULE) == D0 + timedelta(days=27)
    assert case_due_day(days(0, 14, 20, 28), RULE) is None


def test_only_days_since_a_closed_case_count() -> None:
    seen = days(0, 1, 2, 40, 41)
    assert should_open_case(seen, RULE)
    assert not should_open_case(seen, RULE, since=D0 + timedelta(days=40))
    assert should_open_case([*seen, D0 + timedelta(days=42)], RULE, since=D0 + timedelta(days=40))


def test_rule_is_configurable() -> None:
    rule = CaseRule(min_days=2, window_days=3)
    assert should_open_case(days(0, 2), rule)
    assert not should_open_case(days(0, 3), rule)
    with pytest.raises(ValueError):
        CaseRule(min_days=5, window_days=3)
    with pytest.raises(ValueError):
        CaseRule(min_dayz=3)  # type: ignore[call-arg]


def test_distinct_days_and_window_counts() -> None:
    assert distinct_days(days(3, 1, 1, 2)) == days(1, 2, 3)
    assert days_in_window(days(0, 5, 13, 14), end=D0 + timedelta(days=14), window_days=14) == 3
    assert latest_window_days(days(0, 5, 13, 14), RULE) == 3
    assert latest_window_days([], RULE) == 0


def test_local_day_uses_the_site_timezone() -> None:
    ts = datetime(2026, 3, 1, 17, 30, tzinfo=UTC)  # 01:30 on 2 March in Shanghai
    assert local_day(ts, SH) == date(2026, 3, 2)
    assert local_day(ts, site_zone("UTC")) == date(2026, 3, 1)
    with pytest.raises(ValueError):
        local_day(datetime(2026, 3, 1, 12, 0), SH)


@pytest.mark.parametrize(
    ("hh", "mm", "night"),
    [(21, 59, False), (22, 0, True), (23, 59, True), (0, 0, True), (5, 59, True), (6, 0, False)],
)
def test_night_window_wraps_midnight_in_site_time(hh: int, mm: int, night: bool) -> None:
    local = datetime(2026, 3, 1, hh, mm, tzinfo=SH)
    assert is_night(local, SH, RULE) is night
    # The same instant given in UTC is judged in site time.
    assert is_night(local.astimezone(UTC), SH, RULE) is night


def test_night_window_that_does_not_wrap() -> None:
    rule = CaseRule(night_start=time(1, 0), night_end=time(5, 0))
    assert is_night(datetime(2026, 3, 1, 1, 0, tzinfo=SH), SH, rule)
    assert not is_night(datetime(2026, 3, 1, 23, 0, tzinfo=SH), SH, rule)


def test_priority_rises_with_days_nights_and_recency() -> None:
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)

    def p(offsets: list[int], nights: int, age_days: float) -> float:
        return priority(
            days=days(*offsets),
            night_entries=nights,
            last_seen=now - timedelta(days=age_days),
            now=now,
            rule=RULE,
        )

    base = p([10, 11, 12], 0, 1.0)
    assert p([9, 10, 11, 12], 0, 1.0) > base
    assert p([10, 11, 12], 3, 1.0) > base
    assert p([10, 11, 12], 0, 0.0) > base > p([10, 11, 12], 0, 7.0)
    # Night entries are capped: the 11th adds nothing.
    assert p([10, 11, 12], 11, 1.0) == p([10, 11, 12], 10, 1.0)
