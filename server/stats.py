"""Counts for ``lintel-server stats`` (and later the dashboard)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.cases.enums import NOT_CLOSED
from server.cases.models import Case
from server.clusters.enums import ClusterStatus, Suppression
from server.clusters.models import UnknownCluster
from server.occupants.enums import OccupantStatus
from server.occupants.models import FaceTemplate, Occupant
from server.privacy.counts import people_with_templates
from server.sightings.service import count_sightings
from server.sites.models import Unit


def site_stats(*, session: Session, site_id: int | None = None) -> dict[str, Any]:
    """Units, occupants, templates, sightings (known/unknown), active clusters (and how
    many of them are likely occupants), open cases (open or assigned)."""

    def count(model: Any) -> int:
        query = select(func.count()).select_from(model)
        if site_id is not None:
            query = query.where(model.site_id == site_id)
        return int(session.scalar(query) or 0)

    active = (
        select(func.count()).select_from(Occupant).where(Occupant.status == OccupantStatus.ACTIVE)
    )
    if site_id is not None:
        active = active.where(Occupant.site_id == site_id)
    sightings = count_sightings(session=session, site_id=site_id)
    out: dict[str, Any] = {
        "site_id": site_id if site_id is not None else "all",
        "units": count(Unit),
        "occupants": count(Occupant),
        "occupants_active": int(session.scalar(active) or 0),
        "templates": count(FaceTemplate),
        "sightings_known": sightings["known"],
        "sightings_unknown": sightings["unknown"],
        "clusters": _count_where(
            session, UnknownCluster, site_id, UnknownCluster.status == ClusterStatus.ACTIVE
        ),
        "likely_occupant_clusters": _count_where(
            session,
            UnknownCluster,
            site_id,
            UnknownCluster.status == ClusterStatus.ACTIVE,
            UnknownCluster.suppression == Suppression.LIKELY_OCCUPANT,
        ),
        "open_cases": _count_where(session, Case, site_id, Case.status.in_(NOT_CLOSED)),
    }
    # People with face templates and the filing-threshold warning (engineer P).
    per_site = people_with_templates(session=session, site_id=site_id)
    out["people_with_templates"] = sum(c.people_with_templates for c in per_site)
    out["filing_warnings"] = [f"{c.site}: {c.warning}" for c in per_site if c.warning]
    return out


def _count_where(session: Session, model: Any, site_id: int | None, *where: Any) -> int:
    query = select(func.count()).select_from(model).where(*where)
    if site_id is not None:
        query = query.where(model.site_id == site_id)
    return int(session.scalar(query) or 0)
