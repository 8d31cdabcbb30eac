"""A web import job's state, declared once (the stored strings are the values)."""

from __future__ import annotations

from enum import StrEnum


class ImportStatus(StrEnum):
    CHECKING = "checking"
    """The dry run runs: rows validated, photos enrolled, the plan made; nothing written."""
    CHECKED = "checked"
    """The dry run's report is ready; the job waits to be applied or discarded."""
    APPLYING = "applying"
    APPLIED = "applied"
    FAILED = "failed"
    """The dry run or the apply stopped (``error`` says why); nothing was written."""
    STALE = "stale"
    """Not applied: the register changed after the dry run (run a new one)."""
    EXPIRED = "expired"
    """Not applied in time, or the server restarted: the uploaded files are gone."""
    DISCARDED = "discarded"


RUNNING = (ImportStatus.CHECKING, ImportStatus.APPLYING)
