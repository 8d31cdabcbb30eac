"""Per-site retention settings (the purge reads them from the site row)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.audit.service import record
from server.errors import InvalidInput, NotFound
from server.sites.models import Site

FIELDS = ("crop_retention_days", "closed_case_retention_days", "moved_out_template_days")
MAX_DAYS = 3650


def set_site_retention(
    *,
    session: Session,
    site_id: int,
    actor: str,
    crop_retention_days: int | None = None,
    closed_case_retention_days: int | None = None,
    moved_out_template_days: int | None = None,
) -> Site:
    """Set any of a site's retention periods in days; records ``site.retention``."""
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"site {site_id} does not exist")
    new = {
        "crop_retention_days": crop_retention_days,
        "closed_case_retention_days": closed_case_retention_days,
        "moved_out_template_days": moved_out_template_days,
    }
    changes: dict[str, list[int]] = {}
    for name, value in new.items():
        if value is None:
            continue
        # Crops must live at least a day: the worker clusters them after upload.
        low = 1 if name == "crop_retention_days" else 0
        if not low <= value <= MAX_DAYS:
            raise InvalidInput(f"{name} must be between {low} and {MAX_DAYS} days")
        old = getattr(site, name)
        if old != value:
            changes[name] = [old, value]
            setattr(site, name, value)
    session.flush()
    if changes:
        record(
            session=session,
            actor=actor,
            action="site.retention",
            object_type="site",
            object_id=site.id,
            site_id=site.id,
            detail=changes,
        )
    return site
