"""A case's state fields, declared once (the stored strings are the values)."""

from __future__ import annotations

from enum import StrEnum


class CaseStatus(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    CLOSED = "closed"


NOT_CLOSED = (CaseStatus.OPEN, CaseStatus.ASSIGNED)


class Outcome(StrEnum):
    """How a case was closed."""

    ENROLLED = "enrolled"  # enrolled as an occupant of a unit from the case's crops
    MERGED_INTO_OCCUPANT = "merged_into_occupant"  # an existing occupant's (templates added)
    VISITOR = "visitor"
    STAFF = "staff"
    COURIER = "courier"
    FALSE_MATCH = "false_match"  # the cluster mixes people / is not one recurring person
    MOVED_OUT = "moved_out"
    RESOLVED_BY_ENROLMENT = "resolved_by_enrolment"  # retroactive: enrolled later, matches
    CLUSTER_MERGED = "cluster_merged"  # its cluster merged into one that has its own case


FINAL_OUTCOMES = (
    Outcome.VISITOR,
    Outcome.STAFF,
    Outcome.COURIER,
    Outcome.MOVED_OUT,
    Outcome.FALSE_MATCH,
)
"""Outcomes a manager closes a case with that add nobody to the register."""


class WhitelistKind(StrEnum):
    STAFF = "staff"
    COURIER = "courier"
