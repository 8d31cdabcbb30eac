"""An occupant's state field, declared once (the stored strings are the values)."""

from __future__ import annotations

from enum import StrEnum


class OccupantStatus(StrEnum):
    ACTIVE = "active"
    MOVED_OUT = "moved_out"


class TemplateOrigin(StrEnum):
    """Where a face template came from, read from its ``source`` prefix."""

    REGISTRY = "registry"
    """A registry photo from the office import (``registry:<sha256>``); the photo itself
    stays in the office."""
    WEB = "web"
    """A photo added on the occupant's page (``web:<sha256>``), enrolled by the import's
    engine and then discarded. Told apart from the import's because a later import
    replaces only its own templates and keeps these."""
    CASE = "case"
    """The crops of a case closed as "enrolled" or "is this occupant" (``case:<id>``)."""
    ADAPTIVE = "adaptive"
    """A face group confirmed as a likely resident: the looks the door kept missing
    (``cluster:<id>``, :mod:`server.cases.likely`)."""
    OTHER = "other"
