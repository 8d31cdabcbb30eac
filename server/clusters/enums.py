"""A cluster's state fields, declared once (the stored strings are the values)."""

from __future__ import annotations

from enum import StrEnum


class ClusterStatus(StrEnum):
    """``active``: takes sightings; ``merged``: absorbed into ``merged_into_id``;
    ``retired``: a false match, kept for history but no longer matched."""

    ACTIVE = "active"
    MERGED = "merged"
    RETIRED = "retired"


class Suppression(StrEnum):
    """Why an active cluster opens no case (null: it may open one).

    It is a registered occupant of this site (enrolled, merged or resolved
    retroactively), a registered occupant of another site (a visiting neighbour),
    whitelisted staff/courier, or a closed case's visitor / moved-out outcome (until
    ``suppressed_until``). ``likely_occupant``: its members consistently point at one
    occupant of the site (``occupant_id``), so it is probably that resident seen badly
    (server/cases/attribution.py); it opens no case until a manager rejects that
    (``not_occupant``: never attributed again, the case rule applies as usual) or
    confirms it (``occupant``).
    """

    OCCUPANT = "occupant"
    NEIGHBOUR = "neighbour"
    WHITELIST = "whitelist"
    VISITOR = "visitor"
    MOVED_OUT = "moved_out"
    LIKELY_OCCUPANT = "likely_occupant"
    NOT_OCCUPANT = "not_occupant"


TIMED_SUPPRESSIONS = (Suppression.VISITOR, Suppression.MOVED_OUT)
"""Suppressions that end at ``suppressed_until`` (a closed case's outcome)."""

REGISTERED_SUPPRESSIONS = (Suppression.OCCUPANT, Suppression.NEIGHBOUR, Suppression.WHITELIST)
"""Suppressions that hold for good: the face is somebody's on a register."""
