"""The recurrence rule: when an unknown cluster becomes a case, and how urgent it is.

Pure functions over dates and counts; no database. The defaults follow the
architecture: a case opens when a cluster has been seen on at least
``min_days`` distinct *site-local calendar days* inside any window of
``window_days`` consecutive days (3 in 14). "Within 14 days" means the first
and last of those days are at most 13 days apart: days 1, 7 and 14 open a case;
days 1, 7 and 15 do not (day 1 has left the window by day 15).

A night entry is a sighting whose site-local time of day falls in
``[night_start, night_end)``; a window that wraps midnight (22:00-06:00, the
default) is handled.

Priority (higher first)::

    days_weight * distinct days in the latest window
    + night_weight * min(night entries, night_cap)
    + recency_weight * 0.5 ** (days since last seen / recency_half_life_days)

so a person seen on many days, coming home at night and seen yesterday sorts
above one seen three times a fortnight ago.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_TIMEZONE = "Asia/Shanghai"


class CaseRule(BaseModel):
    """Per-site case rule; every field has a default, so ``CaseRule()`` is the house rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_days: int = Field(
        default=3, ge=1, le=60, description="Distinct days seen that open a case."
    )
    window_days: int = Field(
        default=14, ge=1, le=365, description="Length of the sliding window the days must fall in."
    )
    night_start: time = Field(default=time(22, 0), description="Night window start, site-local.")
    night_end: time = Field(
        default=time(6, 0), description="Night window end (exclusive), site-local."
    )
    visitor_suppress_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description=(
            "After a 'visitor' outcome the cluster opens no case for this many days "
            "(from its last sighting); afterwards only days after that count towards a new case."
        ),
    )
    moved_out_suppress_days: int = Field(
        default=90, ge=0, le=3650, description="Like visitor_suppress_days, after 'moved out'."
    )
    occupant_match_threshold: float = Field(
        default=0.45,
        ge=-1.0,
        le=1.0,
        description=(
            "Cosine between a cluster (centroid or exemplar) and an occupant's template at or "
            "above which the cluster is that occupant: used for retroactive resolution, "
            "visiting neighbours and whitelisted people. Above the max impostor pair (~0.33)."
        ),
    )
    possible_occupant_hint: float = Field(
        default=0.30,
        ge=-1.0,
        le=1.0,
        description=(
            "A new case whose cluster matches one of the site's occupants at or above this "
            "(but below occupant_match_threshold) records that occupant as a raw hint "
            "(possible_occupant_id) in its 'opened' event. The case names them only if the "
            "measured desk-check rule holds (server/cases/attribution.py): strangers reach 0.30."
        ),
    )
    attribute_weak_matches: bool = Field(
        default=True,
        description=(
            "Before opening a case, check whether the cluster's members consistently point at "
            "one occupant of the site (a registered resident the edge keeps missing); if so, "
            "label the cluster 'likely_occupant' instead (server/cases/attribution.py)."
        ),
    )
    attribute_member_floor: float = Field(
        default=0.20,
        ge=-1.0,
        le=1.0,
        description="A member sighting votes for its best occupant only at or above this cosine.",
    )
    attribute_min_share: float = Field(
        default=0.60,
        gt=0.0,
        le=1.0,
        description="Share of all members that must vote for the same occupant.",
    )
    attribute_centroid_min: float = Field(
        default=0.30,
        ge=-1.0,
        le=1.0,
        description="The members' centroid must match that occupant at least this well.",
    )
    attribute_margin: float = Field(
        default=0.10,
        ge=0.0,
        le=2.0,
        description="... and beat every other occupant of the site by this much.",
    )
    attribute_centroid_min_unseen: float = Field(
        default=0.35,
        ge=-1.0,
        le=1.0,
        description=(
            "attribute_centroid_min for an occupant the edge has not recognised on any day of "
            "the case window (no sign they pass the door): stricter."
        ),
    )
    attribute_second_template_min: float = Field(
        default=0.22,
        ge=-1.0,
        le=1.0,
        description=(
            "For an occupant with two or more templates: the members' centroid must also "
            "match their second-best template this well (a look-alike of one registry photo "
            "does not match the other; measured in server/cases/attribution.py)."
        ),
    )
    attribute_min_members: int = Field(
        default=3, ge=1, le=1000, description="Fewer member sightings: never attributed."
    )
    days_weight: float = Field(
        default=1.0, ge=0.0, description="Priority per distinct day in window."
    )
    night_weight: float = Field(
        default=0.5, ge=0.0, description="Priority per night entry (capped)."
    )
    night_cap: int = Field(default=10, ge=0, description="Night entries beyond this add nothing.")
    recency_weight: float = Field(
        default=2.0, ge=0.0, description="Priority of being seen just now."
    )
    recency_half_life_days: float = Field(
        default=3.0, gt=0.0, description="Days after which the recency term halves."
    )

    @field_validator("night_start", "night_end")
    @classmethod
    def _naive_time(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("night window times are site-local: give them without a timezone")
        return v

    @model_validator(mode="after")
    def _check(self) -> CaseRule:
        if self.min_days > self.window_days:
            raise ValueError("min_days cannot exceed window_days")
        return self


def site_zone(name: str | None) -> ZoneInfo:
    """The site's timezone (default Asia/Shanghai)."""
    return ZoneInfo(name or DEFAULT_TIMEZONE)


def local_day(ts: datetime, tz: ZoneInfo) -> date:
    """Site-local calendar day of an aware timestamp."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.astimezone(tz).date()


def is_night(ts: datetime, tz: ZoneInfo, rule: CaseRule) -> bool:
    """True when ``ts`` falls in the site-local night window ``[night_start, night_end)``."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    t = ts.astimezone(tz).time().replace(tzinfo=None)
    start, end = rule.night_start, rule.night_end
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # wraps midnight


def distinct_days(days: Iterable[date], *, since: date | None = None) -> list[date]:
    """Sorted distinct days, keeping only those on or after ``since``."""
    return sorted({d for d in days if since is None or d >= since})


def days_in_window(days: Iterable[date], *, end: date, window_days: int) -> int:
    """How many distinct days fall in the ``window_days`` days ending on ``end`` (inclusive)."""
    start = end - timedelta(days=window_days - 1)
    return sum(1 for d in set(days) if start <= d <= end)


def case_due_day(days: Iterable[date], rule: CaseRule, *, since: date | None = None) -> date | None:
    """The first day on which the rule holds (the ``min_days``-th day of a window), or None."""
    ds = distinct_days(days, since=since)
    for i in range(rule.min_days - 1, len(ds)):
        first = ds[i - rule.min_days + 1]
        if (ds[i] - first).days <= rule.window_days - 1:
            return ds[i]
    return None


def should_open_case(days: Iterable[date], rule: CaseRule, *, since: date | None = None) -> bool:
    """True when ``min_days`` distinct days (on or after ``since``) fit in one window."""
    return case_due_day(days, rule, since=since) is not None


def latest_window_days(days: Iterable[date], rule: CaseRule) -> int:
    """Distinct days in the window ending on the last day seen (0 when never seen)."""
    ds = distinct_days(days)
    if not ds:
        return 0
    start = ds[-1] - timedelta(days=rule.window_days - 1)
    return len(ds) - bisect.bisect_left(ds, start)


def priority(
    *,
    days: Iterable[date],
    night_entries: int,
    last_seen: datetime,
    now: datetime,
    rule: CaseRule,
) -> float:
    """Case priority (higher first); see the module docstring for the formula."""
    age_days = max((now - last_seen).total_seconds() / 86400.0, 0.0)
    recency = 0.5 ** (age_days / rule.recency_half_life_days)
    return (
        rule.days_weight * latest_window_days(days, rule)
        + rule.night_weight * min(night_entries, rule.night_cap)
        + rule.recency_weight * recency
    )
