"""A manager's outcomes of a case, and reopening a closed one.

Every function flushes and never commits: a route or the worker owns the
transaction, so an outcome, its effects (templates, whitelist, cluster
suppression, gallery bump) and its audit records land together or not at all.

Outcomes and what they do to the cluster (documented behaviour):

========================  ==========================================================
outcome                   effect
========================  ==========================================================
enrolled                  new occupant of the unit; templates from the embeddings of
                          the case's best sightings (gallery version bumps); cluster
                          suppressed as ``occupant``; other clusters matching the new
                          templates are resolved too (retroactive).
merged_into_occupant      same, but the templates go to an existing occupant.
visitor                   cluster suppressed for ``visitor_suppress_days`` after its
                          last sighting; afterwards only days after the suppression
                          ends count, so a visitor who keeps coming becomes a new case
                          after ``min_days`` new days in a window.
staff / courier           whitelist entry from the cluster (centroid + exemplars);
                          the cluster and any later cluster matching it open no case.
false_match               the cluster is retired (it mixed people); new sightings of
                          whoever it was form fresh clusters and count from zero.
moved_out                 like visitor, for ``moved_out_suppress_days``.
resolved_by_enrolment     set by the system when an occupant enrolled later (registry
                          import or another case) matches the cluster.
cluster_merged            set by the system when the cluster merged into one that
                          already had a case (the history stays with the closed one).
========================  ==========================================================
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.cases.enums import FINAL_OUTCOMES, CaseStatus, Outcome, WhitelistKind
from server.cases.errors import BadOutcome, CaseClosed, ReopenRefused
from server.cases.matching import best_embeddings, unit_vector
from server.cases.models import Case, WhitelistEntry
from server.cases.opening import resolve_for_templates
from server.cases.rules import local_day
from server.cases.service import (
    active_case,
    add_event,
    case_cluster,
    case_config,
    close_case,
    cluster_snapshot,
    get_case,
    open_case_of,
    restore_cluster,
)
from server.cases.whitelist import whitelist_from_case
from server.clusters.enums import ClusterStatus, Suppression
from server.clusters.models import UnknownCluster
from server.clusters.service import SiteConfig, cluster_vectors
from server.db import utcnow
from server.notify.service import emit_case_reopened as notify_case_reopened
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, create_occupant, delete_template_ids
from server.sightings import crops as crop_store
from server.sightings.models import Sighting
from server.sites.models import Unit

REOPEN_DAYS = 7
"""How long after closing a manager may reopen a case (admins always may): long enough
to catch a wrong tap after a weekend, short enough that a reopen is a correction, not
a second review of old cases."""


def case_embeddings(*, session: Session, case: Case) -> npt.NDArray[np.float32]:
    """Embeddings of the case's best sightings (the crops the manager saw), best first."""
    # Crops and sightings may have expired: then the cluster's own vectors.
    return best_embeddings(session, case_cluster(session, case))


def _best_faces(
    session: Session, cluster: UnknownCluster
) -> tuple[npt.NDArray[np.float32], list[int | None]]:
    """Like :func:`best_embeddings`, with the sighting each row came from (None: a
    cluster vector, the sightings having expired)."""
    rows = {
        r.id: r.embedding
        for r in session.execute(
            select(Sighting.id, Sighting.embedding).where(Sighting.id.in_(cluster.best_sightings))
        )
        if r.embedding is not None
    }
    ids = [s for s in cluster.best_sightings if s in rows]
    if not ids:
        vecs = cluster_vectors(cluster)
        return vecs, [None] * len(vecs)
    return np.vstack([unit_vector(np.frombuffer(rows[s], "<f4")) for s in ids]), list(ids)


def _templates_into(
    session: Session,
    case: Case,
    occupant: Occupant,
    *,
    actor: str,
    outcome: str,
    created: bool,
) -> int:
    cluster = case_cluster(session, case)
    before = cluster_snapshot(cluster)
    vecs, sighting_ids = _best_faces(session, cluster)
    template_ids: list[int] = []
    for n, vec in enumerate(vecs):
        sid = sighting_ids[n]
        # The door crop it was made from becomes its chip: the desk check of a later
        # case shows the face the manager accepted, not just a name.
        chip = crop_store.get(session=session, sighting_id=sid) if sid is not None else None
        template = add_template(
            session=session,
            occupant_id=occupant.id,
            embedding=vec,
            model_id=cluster.model_id,
            quality=float(cluster.best_qualities[n]) if n < len(cluster.best_qualities) else 0.0,
            source=f"case:{case.id}",
            chip=chip,
        )
        template_ids.append(template.id)
    cluster.occupant_id = occupant.id
    cluster.suppression = Suppression.OCCUPANT
    case.occupant_id = occupant.id
    case.unit_id = occupant.unit_id
    undo: dict[str, Any] = {
        "cluster": before,
        "occupant_id": occupant.id,
        "occupant_created": created,
        "template_ids": template_ids,
        "resolved": [],
    }
    resolved: list[dict[str, Any]] = []
    close_case(
        session,
        case,
        actor=actor,
        outcome=outcome,
        detail={"occupant_id": occupant.id, "templates": len(vecs)},
        undo=undo,
    )
    # Other clusters of the same person (split by pose or time) resolve now too.
    resolve_for_templates(
        session=session,
        site_id=case.site_id,
        embeddings=vecs,
        occupant_ids=[occupant.id] * len(vecs),
        template_sites=[case.site_id] * len(vecs),
        model_id=cluster.model_id,
        rule=case_config(session, case.site_id).rule,
        actor=actor,
        skip_cluster=cluster.id,
        before=resolved,
    )
    # A new dict and list: the JSON column only sees a changed value.
    case.undo = {**undo, "resolved": resolved}
    session.flush()
    return len(vecs)


def enrol_from_case(
    *,
    session: Session,
    case_id: int,
    unit_id: int,
    name: str,
    role: str = "tenant",
    phone: str | None = None,
    actor: str,
    site_ids: set[int] | None = None,
) -> Occupant:
    """Enrol the case's person as a NEW occupant of a unit, templates from the case's crops.

    Never matched to a registered person by name: the register changes only by the
    manager's explicit pick (:func:`merge_into_occupant`).
    """
    case = active_case(session, case_id, site_ids)
    unit = session.get(Unit, unit_id)
    if unit is None or unit.site_id != case.site_id:
        raise BadOutcome(f"unit {unit_id} is not a unit of the case's site")
    occupant = create_occupant(
        session=session, site_id=case.site_id, name=name, unit_id=unit_id, role=role, phone=phone
    )
    _templates_into(session, case, occupant, actor=actor, outcome=Outcome.ENROLLED, created=True)
    return occupant


def merge_into_occupant(
    *,
    session: Session,
    case_id: int,
    occupant_id: int,
    actor: str,
    site_ids: set[int] | None = None,
) -> Occupant:
    """The case's person is an existing occupant of the site: add templates to them."""
    case = active_case(session, case_id, site_ids)
    occupant = session.get(Occupant, occupant_id)
    if occupant is None or occupant.site_id != case.site_id:
        raise BadOutcome(f"occupant {occupant_id} is not an occupant of the case's site")
    _templates_into(
        session, case, occupant, actor=actor, outcome=Outcome.MERGED_INTO_OCCUPANT, created=False
    )
    return occupant


def _suppress_for(cluster: UnknownCluster, *, kind: str, days: int, tz_rule: SiteConfig) -> None:
    cluster.suppression = kind
    cluster.suppressed_until = cluster.last_seen + timedelta(days=days)
    # Only days after the case count towards a new one.
    cluster.count_since = local_day(cluster.last_seen, tz_rule.tz) + timedelta(days=1)


def close_as_visitor(
    *, session: Session, case_id: int, notes: str, actor: str, site_ids: set[int] | None = None
) -> Case:
    """A visitor: close; the cluster opens no case for ``visitor_suppress_days``."""
    case = active_case(session, case_id, site_ids)
    config = case_config(session, case.site_id)
    cluster = case_cluster(session, case)
    undo = {"cluster": cluster_snapshot(cluster)}
    _suppress_for(
        cluster, kind=Suppression.VISITOR, days=config.rule.visitor_suppress_days, tz_rule=config
    )
    close_case(
        session, case, actor=actor, outcome=Outcome.VISITOR, detail={"notes": notes}, undo=undo
    )
    return case


def close_as_moved_out(
    *, session: Session, case_id: int, notes: str, actor: str, site_ids: set[int] | None = None
) -> Case:
    """The person has moved out: close; suppressed for ``moved_out_suppress_days``."""
    case = active_case(session, case_id, site_ids)
    config = case_config(session, case.site_id)
    cluster = case_cluster(session, case)
    undo = {"cluster": cluster_snapshot(cluster)}
    _suppress_for(
        cluster,
        kind=Suppression.MOVED_OUT,
        days=config.rule.moved_out_suppress_days,
        tz_rule=config,
    )
    close_case(
        session, case, actor=actor, outcome=Outcome.MOVED_OUT, detail={"notes": notes}, undo=undo
    )
    return case


def close_as_false_match(
    *, session: Session, case_id: int, notes: str, actor: str, site_ids: set[int] | None = None
) -> Case:
    """The cluster mixes people: close and retire it (new sightings start afresh)."""
    case = active_case(session, case_id, site_ids)
    cluster = case_cluster(session, case)
    undo = {"cluster": cluster_snapshot(cluster)}
    cluster.status = ClusterStatus.RETIRED
    close_case(
        session, case, actor=actor, outcome=Outcome.FALSE_MATCH, detail={"notes": notes}, undo=undo
    )
    return case


def close_with_outcome(
    *,
    session: Session,
    case_id: int,
    outcome: str,
    notes: str = "",
    label: str = "",
    actor: str,
    site_ids: set[int] | None = None,
) -> Case:
    """Close a case as visitor, staff, courier, moved out or false match (one door for
    the JSON API and the web UI; enrol and merge have their own, they take a person)."""
    kw: dict[str, Any] = {
        "session": session,
        "case_id": case_id,
        "actor": actor,
        "site_ids": site_ids,
    }
    if outcome in tuple(WhitelistKind):
        whitelist_from_case(**kw, kind=outcome, label=label or notes)
    elif outcome == Outcome.VISITOR:
        close_as_visitor(**kw, notes=notes)
    elif outcome == Outcome.MOVED_OUT:
        close_as_moved_out(**kw, notes=notes)
    elif outcome == Outcome.FALSE_MATCH:
        close_as_false_match(**kw, notes=notes)
    else:
        raise BadOutcome(
            f"outcome must be one of {tuple(map(str, FINAL_OUTCOMES))}, not {outcome!r}"
        )
    return get_case(session=session, case_id=case_id)


def can_reopen(*, case: Case, is_admin: bool, now: datetime | None = None) -> bool:
    """Whether this caller may reopen the case now (closed by a manager's outcome;
    managers within :data:`REOPEN_DAYS` of closing, admins always)."""
    if case.status != CaseStatus.CLOSED or case.undo is None:
        return False
    if is_admin:
        return True
    closed = case.closed_at or utcnow()
    return (now or utcnow()) - closed <= timedelta(days=REOPEN_DAYS)


def _referenced(session: Session, occupant_id: int, case_id: int) -> bool:
    """Whether anything but this case still refers to the occupant."""
    checks = (
        select(FaceTemplate.id).where(FaceTemplate.occupant_id == occupant_id),
        select(Case.id).where(Case.occupant_id == occupant_id, Case.id != case_id),
        select(UnknownCluster.id).where(UnknownCluster.occupant_id == occupant_id),
        select(Sighting.id).where(Sighting.occupant_id == occupant_id),
    )
    return any(session.scalar(q.limit(1)) is not None for q in checks)


def reopen_case(
    *,
    session: Session,
    case_id: int,
    actor: str,
    is_admin: bool,
    site_ids: set[int] | None = None,
    now: datetime | None = None,
) -> Case:
    """Reopen a closed case and reverse what its outcome did (audited).

    Templates added by an enrol or merge are removed (the gallery version bumps),
    clusters it resolved go back to how they were, a whitelist entry is withdrawn,
    an occupant the enrol created is removed when nothing else refers to them, and
    the case's cluster returns to its state before the close. Managers may reopen
    for :data:`REOPEN_DAYS` after closing; admins always.
    """
    case = get_case(session=session, case_id=case_id, site_ids=site_ids)
    if case.status != CaseStatus.CLOSED:
        raise CaseClosed(f"case {case_id} is not closed")
    if case.undo is None:
        raise ReopenRefused(
            f"case {case_id} was closed by the system ({case.outcome}): nothing to reopen"
        )
    if not can_reopen(case=case, is_admin=is_admin, now=now):
        raise ReopenRefused(
            f"case {case_id} was closed more than {REOPEN_DAYS} days ago: ask an admin to reopen it"
        )
    if open_case_of(session=session, cluster_id=case.cluster_id) is not None:
        raise CaseClosed(f"the person of case {case_id} already has an open case")
    undo = dict(case.undo)
    outcome = case.outcome
    cluster = case_cluster(session, case)
    reversed_: dict[str, Any] = {"outcome": outcome}
    restore_cluster(cluster, undo["cluster"])
    occupant_id = undo.get("occupant_id")
    if occupant_id is not None and session.get(Occupant, occupant_id) is not None:
        removed = delete_template_ids(
            session=session, occupant_id=occupant_id, template_ids=list(undo["template_ids"])
        )
        reversed_["templates_removed"] = removed
        for prior in undo.get("resolved", []):
            other = session.get(UnknownCluster, prior["id"])
            if other is None or other.occupant_id != occupant_id:
                continue  # changed since: leave it
            restore_cluster(other, prior)
            resolved = session.get(Case, prior["case_id"]) if prior.get("case_id") else None
            if (
                resolved is not None
                and resolved.outcome == "resolved_by_enrolment"
                and open_case_of(session=session, cluster_id=resolved.cluster_id) is None
            ):
                resolved.occupant_id = None
                _reopen(session, resolved, actor=actor, detail={"with_case": case.id})
        case.occupant_id = None
        case.unit_id = None
        session.flush()
        if undo.get("occupant_created") and not _referenced(session, occupant_id, case.id):
            session.delete(session.get(Occupant, occupant_id))
            reversed_["occupant_removed"] = occupant_id
    entry = session.get(WhitelistEntry, undo["whitelist_id"]) if undo.get("whitelist_id") else None
    if entry is not None and entry.active:
        entry.active = False
        reversed_["whitelist_withdrawn"] = entry.id
        record(
            session=session,
            actor=actor,
            action="whitelist.withdraw",
            object_type="whitelist_entry",
            object_id=entry.id,
            site_id=entry.site_id,
            detail={"case_id": case.id},
        )
        for other in session.scalars(
            select(UnknownCluster).where(
                UnknownCluster.id.in_(undo.get("suppressed", [])),
                UnknownCluster.suppression == Suppression.WHITELIST,
            )
        ):
            other.suppression = None
    _reopen(session, case, actor=actor, detail=reversed_)
    notify_case_reopened(session=session, case=case, actor=actor)  # issue 15 outbox
    return case


def _reopen(session: Session, case: Case, *, actor: str, detail: dict[str, Any]) -> None:
    case.status = CaseStatus.ASSIGNED if case.assigned_to is not None else CaseStatus.OPEN
    case.outcome = None
    case.closed_at = None
    case.undo = None
    session.flush()  # the partial unique index sees it open again
    add_event(session, case, actor=actor, kind="reopened", detail=detail)
