"""An occupant's state field, declared once (the stored strings are the values)."""

from __future__ import annotations

from enum import StrEnum


class OccupantStatus(StrEnum):
    ACTIVE = "active"
    MOVED_OUT = "moved_out"
