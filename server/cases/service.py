"""Cases: their history and audit, closing, reads, assignment and contact notes.

Every function in ``server/cases/`` flushes and never commits: a route or the
worker owns the transaction, so an outcome, its effects (templates, whitelist,
cluster suppression, gallery bump) and its audit records land together or not
at all. The work is split by concern: :mod:`server.cases.matching` (clusters
against people), :mod:`server.cases.opening` (the worker: open, update, resolve),
:mod:`server.cases.outcomes` (a manager's outcomes and reopening),
:mod:`server.cases.whitelist` (staff and couriers) and :mod:`server.cases.likely`
(likely occupants a manager confirms or rejects).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.cases.attribution import SuggestedOccupant, suggested_occupant
from server.cases.enums import NOT_CLOSED, CaseStatus
from server.cases.errors import BadOutcome, CaseClosed, CaseNotFound
from server.cases.models import Case, CaseEvent
from server.cases.rules import priority
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.clusters.service import SiteConfig, cluster_days, site_config
from server.db import utcnow
from server.sightings import crops
from server.sightings.models import Sighting
from server.users.models import User
from server.users.service import site_ids_of

SYSTEM = "system:worker"


# -- events and audit ---------------------------------------------------------------------
def add_event(
    session: Session, case: Case, *, actor: str, kind: str, detail: dict[str, Any] | None = None
) -> None:
    """One step in the case's history, audited as ``case.<kind>``."""
    session.add(CaseEvent(case_id=case.id, actor=actor, kind=kind, detail=detail))
    record(
        session=session,
        actor=actor,
        action=f"case.{kind}",
        object_type="case",
        object_id=case.id,
        site_id=case.site_id,
        detail=detail,
    )


def cluster_snapshot(cluster: UnknownCluster) -> dict[str, Any]:
    """What closing may change on a cluster, as JSON (restored by a reopen)."""
    return {
        "id": cluster.id,
        "status": cluster.status,
        "suppression": cluster.suppression,
        "suppressed_until": (
            cluster.suppressed_until.isoformat() if cluster.suppressed_until else None
        ),
        "count_since": cluster.count_since.isoformat() if cluster.count_since else None,
        "occupant_id": cluster.occupant_id,
    }


def restore_cluster(cluster: UnknownCluster, state: dict[str, Any]) -> None:
    """Put back what :func:`cluster_snapshot` saved (a reopen)."""
    cluster.status = state["status"]
    cluster.suppression = state["suppression"]
    until = state.get("suppressed_until")
    cluster.suppressed_until = datetime.fromisoformat(until) if until else None
    since = state.get("count_since")
    cluster.count_since = date.fromisoformat(since) if since else None
    cluster.occupant_id = state["occupant_id"]


def close_case(
    session: Session,
    case: Case,
    *,
    actor: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
    undo: dict[str, Any] | None = None,
) -> None:
    """Close the case with ``outcome``; ``undo`` is what a reopen reverses."""
    case.status = CaseStatus.CLOSED
    case.outcome = outcome
    case.closed_at = utcnow()
    case.undo = undo
    session.flush()  # the partial unique index must see the case closed before a new one
    add_event(
        session, case, actor=actor, kind="closed", detail={"outcome": outcome, **(detail or {})}
    )


def open_case_of(*, session: Session, cluster_id: int) -> Case | None:
    """The cluster's case that is not closed, if any (at most one: a unique index)."""
    return session.scalar(
        select(Case).where(Case.cluster_id == cluster_id, Case.status.in_(NOT_CLOSED))
    )


# -- queries ------------------------------------------------------------------------------
def get_case(*, session: Session, case_id: int, site_ids: set[int] | None = None) -> Case:
    """The case; :class:`CaseNotFound` if missing or outside ``site_ids`` (None: any)."""
    case = session.get(Case, case_id)
    if case is None or (site_ids is not None and case.site_id not in site_ids):
        raise CaseNotFound(f"case {case_id} does not exist")
    return case


def view_case(
    *, session: Session, case_id: int, actor: str, site_ids: set[int] | None, via: str | None = None
) -> Case:
    """A case the caller may see; the view is audited (a case leads to a person's face crops)."""
    case = get_case(session=session, case_id=case_id, site_ids=site_ids)
    record(
        session=session,
        actor=actor,
        action="case.view",
        object_type="case",
        object_id=case.id,
        site_id=case.site_id,
        detail=None if via is None else {"via": via},
    )
    return case


def view_crop(
    *, session: Session, sighting: Sighting, actor: str, shown_for: Case | None = None
) -> bytes | None:
    """The sighting's face crop (None: expired or never sent); each view is audited.

    The JSON API and the web UI both call this, so a crop view is ``crop.view`` from
    either door (the API's rows from before read ``case.crop_view``).

    The caller checked that ``actor`` may see the sighting. ``shown_for`` is the case the
    crop was shown for: the audit names it only when it is a case of the sighting's site
    (the web's query parameter is only a hint).
    """
    jpeg = crops.get(session=session, sighting_id=sighting.id)
    if jpeg is None:
        return None
    named = shown_for is not None and shown_for.site_id == sighting.site_id
    record(
        session=session,
        actor=actor,
        action="crop.view",
        object_type="sighting",
        object_id=sighting.id,
        site_id=sighting.site_id,
        detail={"case_id": shown_for.id} if named and shown_for is not None else None,
    )
    return jpeg


def list_cases(
    *,
    session: Session,
    site_id: int,
    statuses: Sequence[str] = (CaseStatus.OPEN,),
    limit: int = 200,
    now: datetime | None = None,
) -> list[tuple[Case, float]]:
    """A site's cases with these statuses and their priority, highest first (then oldest).

    Priorities of cases that are not closed are computed for ``now`` (default:
    the current time), so recency decays even for clusters not seen lately; the
    stored value (as of the last sighting) only preselects. Nothing is written.
    """
    cases = list(
        session.scalars(
            select(Case)
            .where(Case.site_id == site_id, Case.status.in_(statuses))
            .order_by(Case.priority.desc(), Case.id)
            .limit(limit)
        )
    )
    scored = {c.id: c.priority for c in cases}
    active = [c for c in cases if c.status in NOT_CLOSED]
    if active:
        rule = case_config(session, site_id).rule
        clusters = {
            c.id: c
            for c in session.scalars(
                select(UnknownCluster).where(UnknownCluster.id.in_([c.cluster_id for c in active]))
            )
        }
        wall = now or utcnow()
        for case in active:
            cl = clusters[case.cluster_id]
            scored[case.id] = priority(
                days=cluster_days(cl),
                night_entries=cl.night_entries,
                last_seen=cl.last_seen,
                now=max(wall, cl.last_seen),
                rule=rule,
            )
    return sorted(((c, scored[c.id]) for c in cases), key=lambda cp: (-cp[1], cp[0].id))


def case_events(*, session: Session, case_id: int) -> list[CaseEvent]:
    """A case's history, oldest first."""
    return list(
        session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
        )
    )


def desk_checks(*, session: Session, case_ids: Sequence[int]) -> dict[int, SuggestedOccupant]:
    """The registered occupant each desk-check case names (cases naming nobody are absent)."""
    if not case_ids:
        return {}
    events = session.scalars(
        select(CaseEvent).where(CaseEvent.case_id.in_(list(case_ids)), CaseEvent.kind == "opened")
    )
    out: dict[int, SuggestedOccupant] = {}
    for e in events:
        named = suggested_occupant(e.detail or {})
        if named is not None:
            out[e.case_id] = named
    return out


# -- manager actions ------------------------------------------------------------------------
def active_case(session: Session, case_id: int, site_ids: set[int] | None) -> Case:
    """The case, if the caller may see it and it is not closed."""
    case = get_case(session=session, case_id=case_id, site_ids=site_ids)
    if case.status not in NOT_CLOSED:
        raise CaseClosed(
            f"case {case_id} is closed ({case.outcome})", case_id=case_id, outcome=case.outcome
        )
    return case


def case_cluster(session: Session, case: Case) -> UnknownCluster:
    """The case's cluster."""
    cluster = session.get(UnknownCluster, case.cluster_id)
    if cluster is None:  # pragma: no cover - FK cascade makes this impossible
        raise CaseNotFound(f"case {case.id} has no cluster")
    return cluster


def case_config(session: Session, site_id: int) -> SiteConfig:
    """The site's clustering thresholds, case rule and timezone."""
    return site_config(session.get(ClusterSiteState, site_id))


def assign_case(
    *, session: Session, case_id: int, user_id: int, actor: str, site_ids: set[int] | None = None
) -> Case:
    """Give the case to a user (status ``assigned``) who may see the case's site."""
    case = active_case(session, case_id, site_ids)
    user = session.get(User, user_id)
    if user is None or user.disabled or user.role == "viewer":
        raise BadOutcome(f"user {user_id} cannot take cases")
    allowed = site_ids_of(session=session, user=user)
    if allowed is not None and case.site_id not in allowed:
        raise BadOutcome(f"user {user_id} has no access to the case's site")
    case.assigned_to = user_id
    case.status = CaseStatus.ASSIGNED
    add_event(session, case, actor=actor, kind="assigned", detail={"user_id": user_id})
    session.flush()
    return case


def record_contact(
    *,
    session: Session,
    case_id: int,
    kind: str,
    result: str,
    notes: str,
    actor: str,
    site_ids: set[int] | None = None,
) -> Case:
    """Record a call or a visit and what came of it; the case stays open."""
    if kind not in ("call", "visit"):
        raise BadOutcome("contact kind must be 'call' or 'visit'")
    case = active_case(session, case_id, site_ids)
    if notes:
        case.notes = (case.notes + "\n" + notes).strip()
    add_event(session, case, actor=actor, kind=kind, detail={"result": result, "notes": notes})
    session.flush()
    return case
