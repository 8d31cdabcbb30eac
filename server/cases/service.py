"""Cases: opening them from clusters, suppression, retroactive resolution, outcomes.

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

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.cases.attribution import (
    OccupantEvidence,
    SuggestedOccupant,
    attributes,
    desk_check,
    occupant_evidence,
    suggested_occupant,
)
from server.cases.enums import FINAL_OUTCOMES, NOT_CLOSED, CaseStatus, Outcome, WhitelistKind
from server.cases.errors import BadOutcome, CaseClosed, CaseNotFound, ReopenRefused
from server.cases.models import Case, CaseEvent, WhitelistEntry
from server.cases.rules import CaseRule, case_due_day, local_day, priority
from server.clusters.enums import (
    REGISTERED_SUPPRESSIONS,
    TIMED_SUPPRESSIONS,
    ClusterStatus,
    Suppression,
)
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.clusters.service import SiteConfig, cluster_days, cluster_vectors, site_config
from server.db import utcnow
from server.embeddings import check_embeddings, model_dimension
from server.notify.service import emit_case_opened as notify_case_opened
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, create_occupant, delete_template_ids
from server.sightings import crops as crop_store
from server.sightings.models import Sighting
from server.sites.models import Unit
from server.users.models import User
from server.users.service import site_ids_of

log = logging.getLogger(__name__)

SYSTEM = "system:worker"

REOPEN_DAYS = 7
"""How long after closing a manager may reopen a case (admins always may): long enough
to catch a wrong tap after a weekend, short enough that a reopen is a correction, not
a second review of old cases."""


# -- events and audit ---------------------------------------------------------------------
def _event(
    session: Session, case: Case, *, actor: str, kind: str, detail: dict[str, Any] | None = None
) -> None:
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


def _cluster_state(cluster: UnknownCluster) -> dict[str, Any]:
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


def _restore_cluster(cluster: UnknownCluster, state: dict[str, Any]) -> None:
    cluster.status = state["status"]
    cluster.suppression = state["suppression"]
    until = state.get("suppressed_until")
    cluster.suppressed_until = datetime.fromisoformat(until) if until else None
    since = state.get("count_since")
    cluster.count_since = date.fromisoformat(since) if since else None
    cluster.occupant_id = state["occupant_id"]


def _close(
    session: Session,
    case: Case,
    *,
    actor: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
    undo: dict[str, Any] | None = None,
) -> None:
    case.status = CaseStatus.CLOSED
    case.outcome = outcome
    case.closed_at = utcnow()
    case.undo = undo
    session.flush()  # the partial unique index must see the case closed before a new one
    _event(session, case, actor=actor, kind="closed", detail={"outcome": outcome, **(detail or {})})


def open_case_of(*, session: Session, cluster_id: int) -> Case | None:
    """The cluster's case that is not closed, if any (at most one: a unique index)."""
    return session.scalar(
        select(Case).where(Case.cluster_id == cluster_id, Case.status.in_(NOT_CLOSED))
    )


# -- matching clusters against people -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TemplateMatch:
    """The best registered person a cluster resembles."""

    occupant_id: int
    site_id: int
    similarity: float


def _templates(
    session: Session, *, model_id: str, min_id: int = 0, site_id: int | None = None
) -> tuple[npt.NDArray[np.float32], list[int], list[int], list[int]]:
    """(embeddings, occupant ids, site ids, template ids) of active occupants' templates.

    Templates unusable as rows of the model's matrix (stored before embeddings were
    checked at every door: another size, NaN) are left out of the first three; the
    template ids name every template looked at, so a cursor moves past them too.
    """
    query = (
        select(
            FaceTemplate.id, FaceTemplate.occupant_id, FaceTemplate.site_id, FaceTemplate.embedding
        )
        .join(Occupant, Occupant.id == FaceTemplate.occupant_id)
        .where(
            FaceTemplate.model_id == model_id,
            FaceTemplate.id > min_id,
            Occupant.status == "active",
        )
        .order_by(FaceTemplate.id)
    )
    if site_id is not None:
        query = query.where(FaceTemplate.site_id == site_id)
    rows = session.execute(query).all()
    looked_at = [r.id for r in rows]
    # This matrix spans sites: one bad row must not stop every site's evaluation.
    dim = model_dimension(session, model_id)
    vecs = [np.frombuffer(r.embedding, "<f4") for r in rows]
    good = [v.size == dim and bool(np.all(np.isfinite(v))) and bool(v.any()) for v in vecs]
    if not all(good):
        _warn_unusable(model_id, dim, [r.id for r, ok in zip(rows, good, strict=True) if not ok])
        rows = [r for r, ok in zip(rows, good, strict=True) if ok]
        vecs = [v for v, ok in zip(vecs, good, strict=True) if ok]
    if not rows:
        return np.zeros((0, 0), dtype=np.float32), [], [], looked_at
    mat = np.vstack([_unit(v) for v in vecs])
    return mat, [r.occupant_id for r in rows], [r.site_id for r in rows], looked_at


_WARNED_TEMPLATES: set[int] = set()
"""Unusable templates already logged by this process (the worker loads them every pass)."""


def _warn_unusable(model_id: str, dim: int | None, template_ids: list[int]) -> None:
    new = [t for t in template_ids if t not in _WARNED_TEMPLATES]
    if not new:
        return
    _WARNED_TEMPLATES.update(new)
    log.warning(
        "left out %d face templates of model %r that are not finite %s-value vectors "
        "(ids %s): delete them or enrol those people again",
        len(new),
        model_id,
        dim,
        new[:20],
    )


def _unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def best_template_match(
    *,
    session: Session,
    cluster: UnknownCluster,
    rule: CaseRule,
    threshold: float | None = None,
    site_id: int | None = None,
    templates: tuple[npt.NDArray[np.float32], list[int], list[int]] | None = None,
) -> TemplateMatch | None:
    """The registered occupant the cluster matches best, if at or above ``threshold``.

    ``threshold`` defaults to the rule's ``occupant_match_threshold``; ``site_id``
    limits the search to one site's occupants (default: every site);
    ``templates`` (embeddings, occupant ids, site ids) skips loading them again.
    Scale note: this compares against every active template of the model; at
    district scale it belongs in a vector index (faiss/usearch), not numpy.
    """
    limit = rule.occupant_match_threshold if threshold is None else threshold
    if templates is None:
        mat, occupants, sites, _ = _templates(session, model_id=cluster.model_id, site_id=site_id)
    else:
        mat, occupants, sites = templates
    if not occupants:
        return None
    sims = (cluster_vectors(cluster) @ mat.T).max(axis=0)
    # Prefer the cluster's own site on near-equal scores: a resident is not a neighbour.
    order = sorted(
        range(len(occupants)),
        key=lambda i: (-(sims[i] + (0.01 if sites[i] == cluster.site_id else 0)), i),
    )
    i = order[0]
    if float(sims[i]) < limit:
        return None
    return TemplateMatch(occupant_id=occupants[i], site_id=sites[i], similarity=float(sims[i]))


def _whitelist_match(
    *, session: Session, cluster: UnknownCluster, rule: CaseRule
) -> WhitelistEntry | None:
    vectors = cluster_vectors(cluster)
    best: tuple[float, WhitelistEntry] | None = None
    for entry in session.scalars(
        select(WhitelistEntry)
        .where(
            WhitelistEntry.site_id == cluster.site_id,
            WhitelistEntry.model_id == cluster.model_id,
            WhitelistEntry.active.is_(True),
        )
        .order_by(WhitelistEntry.id)
    ):
        row_bytes = 4 * vectors.shape[1]
        emb = np.frombuffer(entry.embeddings[: len(entry.embeddings) // 4 * 4], "<f4")
        if len(entry.embeddings) % row_bytes or not len(emb) or not np.all(np.isfinite(emb)):
            # Stored before whitelisted faces were checked: it cannot match this model.
            log.warning(
                "whitelist entry %s is not of %d-value vectors; ignored", entry.id, vectors.shape[1]
            )
            continue
        emb = emb.reshape(-1, vectors.shape[1])
        sim = float(np.max(vectors @ emb.T))
        if sim >= rule.occupant_match_threshold and (best is None or sim > best[0]):
            best = (sim, entry)
    return None if best is None else best[1]


# -- the worker's side: open, update, resolve -----------------------------------------------
def evaluate_clusters(
    *,
    session: Session,
    cluster_ids: Iterable[int],
    config: SiteConfig,
    now: datetime | None = None,
) -> list[Case]:
    """Apply the case rule to clusters that just changed; returns the cases opened."""
    opened: list[Case] = []
    ids = sorted(set(cluster_ids))
    if not ids:
        return opened
    clusters = session.scalars(
        select(UnknownCluster).where(UnknownCluster.id.in_(ids)).order_by(UnknownCluster.id)
    ).all()
    open_cases = {
        c.cluster_id: c
        for c in session.scalars(
            select(Case).where(Case.cluster_id.in_(ids), Case.status.in_(NOT_CLOSED))
        )
    }
    wall = now or utcnow()
    site_templates = _SiteTemplates(session)
    for cluster in clusters:
        if cluster.status != ClusterStatus.ACTIVE:
            continue
        current = max(wall, cluster.last_seen)
        days = cluster_days(cluster)
        case = open_cases.get(cluster.id)
        if case is not None:
            case.priority = priority(
                days=days,
                night_entries=cluster.night_entries,
                last_seen=cluster.last_seen,
                now=current,
                rule=config.rule,
            )
            continue
        if cluster.suppression in REGISTERED_SUPPRESSIONS:
            continue
        if cluster.suppression == Suppression.LIKELY_OCCUPANT:
            # Re-checked as it grows (a look-alike's later sightings scatter and lift
            # it), but only when its distinct days reach a checkpoint: a resident the
            # edge misses is touched almost daily, and a full check every pass was the
            # largest cost of evaluating clusters.
            if len(cluster.days) not in RECHECK_AT_DAYS:
                continue
            evidence = _evidence(session, cluster, config, site_templates)
            if attributes(evidence, config.rule):
                cluster.occupant_id = evidence.occupant_id
                continue
            log.info("cluster %s no longer points at occupant %s", cluster.id, cluster.occupant_id)
            cluster.suppression = None
            cluster.occupant_id = None
        if (
            cluster.suppression in TIMED_SUPPRESSIONS
            and cluster.suppressed_until is not None
            and cluster.last_seen < cluster.suppressed_until
        ):
            continue
        since = cluster.count_since
        if cluster.suppression in TIMED_SUPPRESSIONS and cluster.suppressed_until:
            # Days seen while suppressed do not count: after it ends, min_days new days.
            end = local_day(cluster.suppressed_until, config.tz)
            since = end if since is None else max(since, end)
        if case_due_day(days, config.rule, since=since) is None:
            continue
        if _suppress_if_known(
            session=session, cluster=cluster, rule=config.rule, templates=site_templates
        ):
            continue
        evidence = _evidence(session, cluster, config, site_templates)
        if cluster.suppression != Suppression.NOT_OCCUPANT and attributes(evidence, config.rule):
            _label_likely_occupant(session, cluster, evidence)
            continue
        case = Case(
            site_id=cluster.site_id,
            cluster_id=cluster.id,
            status=CaseStatus.OPEN,
            priority=priority(
                days=days,
                night_entries=cluster.night_entries,
                last_seen=cluster.last_seen,
                now=current,
                rule=config.rule,
            ),
            triggered_at=cluster.last_seen,
            notes="",
        )
        session.add(case)
        session.flush()
        _event(
            session,
            case,
            actor=SYSTEM,
            kind="opened",
            detail={
                "cluster_id": cluster.id,
                "days": cluster.days,
                "night_entries": cluster.night_entries,
                **_possible_occupant(session, cluster, config.rule, site_templates),
                "evidence": evidence.as_detail(),
                # A registered occupant is a case only as a desk check that names them.
                "desk_check": desk_check(evidence),
            },
        )
        notify_case_opened(session=session, case=case, cluster=cluster)  # issue 15 outbox
        opened.append(case)
    session.flush()
    return opened


RECHECK_AT_DAYS = frozenset({5, 8, 13, 21, 34, 55, 89})
"""Distinct days seen at which a ``likely_occupant`` cluster's attribution is re-checked."""

MAX_EVIDENCE_MEMBERS = 200
"""Most recent member sightings weighed by the attribution (bounds the query)."""


_Templates = tuple[npt.NDArray[np.float32], list[int], list[int]]


class _SiteTemplates:
    """Occupant templates, loaded once per evaluation and only if a cluster needs them."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._cache: dict[tuple[int | None, str], _Templates] = {}

    def get(self, site_id: int | None, model_id: str) -> _Templates:
        """(embeddings, occupant ids, site ids) of one site's occupants (None: every site)."""
        key = (site_id, model_id)
        if key not in self._cache:
            mat, occupants, sites, _ = _templates(self._session, model_id=model_id, site_id=site_id)
            self._cache[key] = (mat, occupants, sites)
        return self._cache[key]


def member_embeddings(*, session: Session, cluster: UnknownCluster) -> npt.NDArray[np.float32]:
    """The cluster's most recent member embeddings (normalised rows).

    Falls back to the cluster's exemplars (members too) when the sightings'
    embeddings have been purged.
    """
    blobs = session.scalars(
        select(Sighting.embedding)
        .where(Sighting.cluster_id == cluster.id, Sighting.embedding.is_not(None))
        .order_by(Sighting.id.desc())
        .limit(MAX_EVIDENCE_MEMBERS)
    ).all()
    if not blobs:
        return cluster_vectors(cluster)[1:]
    return np.vstack([_unit(np.frombuffer(b, "<f4")) for b in blobs if b is not None])


def _evidence(
    session: Session, cluster: UnknownCluster, config: SiteConfig, templates: _SiteTemplates
) -> OccupantEvidence:
    """The attribution evidence for one cluster (members, templates, the edge's matches)."""
    rule = config.rule
    mat, occupants, _ = templates.get(cluster.site_id, cluster.model_id)
    if not occupants:
        return occupant_evidence(np.zeros((0, 0), np.float32), mat, [], member_floor=1.0)
    evidence = occupant_evidence(
        member_embeddings(session=session, cluster=cluster),
        mat,
        occupants,
        member_floor=rule.attribute_member_floor,
    )
    if evidence.occupant_id is None:
        return evidence
    # The edge's own evidence: on how many days of the window it recognised them.
    since = cluster.last_seen - timedelta(days=rule.window_days)
    seen = session.scalars(
        select(Sighting.started_at)
        .where(
            Sighting.site_id == cluster.site_id,
            Sighting.occupant_id == evidence.occupant_id,
            Sighting.kind == "known",
            Sighting.started_at >= since,
        )
        .limit(10_000)
    ).all()
    days = {local_day(t, config.tz) for t in seen}
    return dataclasses.replace(evidence, occupant_known_days=len(days))


def _label_likely_occupant(
    session: Session, cluster: UnknownCluster, evidence: OccupantEvidence
) -> None:
    """No case: the cluster is probably that occupant seen badly; a manager may confirm."""
    cluster.suppression = Suppression.LIKELY_OCCUPANT
    cluster.occupant_id = evidence.occupant_id
    log.info(
        "cluster %s is likely occupant %s (share %.2f, centroid %.2f, margin %.2f): no case",
        cluster.id,
        evidence.occupant_id,
        evidence.share,
        evidence.centroid_similarity,
        evidence.margin,
    )
    record(
        session=session,
        actor=SYSTEM,
        action="cluster.likely_occupant",
        object_type="unknown_cluster",
        object_id=cluster.id,
        site_id=cluster.site_id,
        detail=evidence.as_detail(),
    )


def _possible_occupant(
    session: Session, cluster: UnknownCluster, rule: CaseRule, templates: _SiteTemplates
) -> dict[str, Any]:
    """A weak match with one of the site's occupants, as a hint for the manager.

    Below the match threshold the server cannot tell a registered resident the
    edge missed (one poor enrolment photo) from a look-alike stranger: the hint is
    recorded, but the case names the candidate only as a desk check, when the
    measured rule holds (:func:`server.cases.attribution.desk_check`).
    """
    hint = best_template_match(
        session=session,
        cluster=cluster,
        rule=rule,
        threshold=rule.possible_occupant_hint,
        site_id=cluster.site_id,
        templates=templates.get(cluster.site_id, cluster.model_id),
    )
    if hint is None:
        return {}
    return {"possible_occupant_id": hint.occupant_id, "similarity": round(hint.similarity, 4)}


def _suppress_if_known(
    *,
    session: Session,
    cluster: UnknownCluster,
    rule: CaseRule,
    templates: _SiteTemplates | None = None,
) -> bool:
    """Suppress a cluster that is a registered occupant (here or elsewhere) or whitelisted."""
    match = best_template_match(
        session=session,
        cluster=cluster,
        rule=rule,
        templates=None if templates is None else templates.get(None, cluster.model_id),
    )
    if match is not None:
        cluster.occupant_id = match.occupant_id
        cluster.suppression = (
            Suppression.OCCUPANT if match.site_id == cluster.site_id else Suppression.NEIGHBOUR
        )
        log.info(
            "cluster %s matches occupant %s of site %s (%.2f): %s",
            cluster.id,
            match.occupant_id,
            match.site_id,
            match.similarity,
            cluster.suppression,
        )
        return True
    entry = _whitelist_match(session=session, cluster=cluster, rule=rule)
    if entry is not None:
        cluster.suppression = Suppression.WHITELIST
        return True
    return False


def on_clusters_merged(*, session: Session, survivor_id: int, absorbed_id: int) -> None:
    """Keep "one cluster, at most one open case" when cluster ``absorbed_id`` merged."""
    moved = open_case_of(session=session, cluster_id=absorbed_id)
    if moved is None:
        return
    kept = open_case_of(session=session, cluster_id=survivor_id)
    if kept is None:
        moved.cluster_id = survivor_id
        session.flush()
        _event(
            session,
            moved,
            actor=SYSTEM,
            kind="cluster_merged",
            detail={"from_cluster": absorbed_id, "to_cluster": survivor_id},
        )
    else:
        _close(
            session,
            moved,
            actor=SYSTEM,
            outcome=Outcome.CLUSTER_MERGED,
            detail={"into_case": kept.id, "to_cluster": survivor_id},
        )


def resolve_for_templates(
    *,
    session: Session,
    site_id: int,
    embeddings: npt.NDArray[np.float32],
    occupant_ids: Sequence[int],
    template_sites: Sequence[int],
    model_id: str,
    rule: CaseRule,
    actor: str = SYSTEM,
    skip_cluster: int | None = None,
    before: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Resolve the site's clusters that match newly enrolled templates (retroactive).

    A match with a template of this site makes the cluster that occupant's
    (an open case closes as ``resolved_by_enrolment``); a match with another
    site's occupant marks it a visiting neighbour. Returns the clusters changed;
    ``before`` (if given) receives each changed cluster's prior state and the case
    it closed, so a reopened enrolment can put them back.
    """
    if len(occupant_ids) == 0:
        return []
    changed: list[int] = []
    clusters = session.scalars(
        select(UnknownCluster)
        .where(
            UnknownCluster.site_id == site_id,
            UnknownCluster.model_id == model_id,
            UnknownCluster.status == ClusterStatus.ACTIVE,
        )
        .order_by(UnknownCluster.id)
    ).all()
    for cluster in clusters:
        if cluster.id == skip_cluster or cluster.suppression in (
            Suppression.OCCUPANT,
            Suppression.WHITELIST,
        ):
            continue
        sims = (cluster_vectors(cluster) @ embeddings.T).max(axis=0)
        i = int(np.argmax(sims))
        if float(sims[i]) < rule.occupant_match_threshold:
            continue
        own = template_sites[i] == site_id
        if not own and cluster.suppression == Suppression.NEIGHBOUR:
            continue
        prior = _cluster_state(cluster)
        cluster.occupant_id = occupant_ids[i]
        cluster.suppression = Suppression.OCCUPANT if own else Suppression.NEIGHBOUR
        changed.append(cluster.id)
        case = open_case_of(session=session, cluster_id=cluster.id)
        if before is not None:
            before.append({**prior, "case_id": case.id if case is not None and own else None})
        if case is not None and own:
            case.occupant_id = occupant_ids[i]
            _close(
                session,
                case,
                actor=actor,
                outcome=Outcome.RESOLVED_BY_ENROLMENT,
                detail={"occupant_id": occupant_ids[i], "similarity": round(float(sims[i]), 4)},
            )
        elif case is not None:
            _event(
                session,
                case,
                actor=actor,
                kind="neighbour_match",
                detail={"occupant_id": occupant_ids[i], "similarity": round(float(sims[i]), 4)},
            )
    session.flush()
    return changed


def resolve_new_templates(*, session: Session, state: ClusterSiteState, model_id: str) -> int:
    """Check templates enrolled since the site's cursor against its clusters.

    This is how a registry import (or any enrolment elsewhere) resolves open
    clusters and cases retroactively without the importer knowing about cases.
    Returns how many clusters changed.
    """
    config = site_config(state)
    mat, occupants, sites, tids = _templates(
        session, model_id=model_id, min_id=state.template_cursor
    )
    if not tids:
        return 0
    changed = resolve_for_templates(
        session=session,
        site_id=state.site_id,
        embeddings=mat,
        occupant_ids=occupants,
        template_sites=sites,
        model_id=model_id,
        rule=config.rule,
    )
    state.template_cursor = max(tids)
    session.flush()
    return len(changed)


# -- queries ------------------------------------------------------------------------------
def get_case(*, session: Session, case_id: int, site_ids: set[int] | None = None) -> Case:
    """The case; :class:`CaseNotFound` if missing or outside ``site_ids`` (None: any)."""
    case = session.get(Case, case_id)
    if case is None or (site_ids is not None and case.site_id not in site_ids):
        raise CaseNotFound(f"case {case_id} does not exist")
    return case


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
        rule = _config(session, site_id).rule
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
def _active(session: Session, case_id: int, site_ids: set[int] | None) -> Case:
    case = get_case(session=session, case_id=case_id, site_ids=site_ids)
    if case.status not in NOT_CLOSED:
        raise CaseClosed(
            f"case {case_id} is closed ({case.outcome})", case_id=case_id, outcome=case.outcome
        )
    return case


def _cluster(session: Session, case: Case) -> UnknownCluster:
    cluster = session.get(UnknownCluster, case.cluster_id)
    if cluster is None:  # pragma: no cover - FK cascade makes this impossible
        raise CaseNotFound(f"case {case.id} has no cluster")
    return cluster


def _config(session: Session, site_id: int) -> SiteConfig:
    return site_config(session.get(ClusterSiteState, site_id))


def assign_case(
    *, session: Session, case_id: int, user_id: int, actor: str, site_ids: set[int] | None = None
) -> Case:
    """Give the case to a user (status ``assigned``) who may see the case's site."""
    case = _active(session, case_id, site_ids)
    user = session.get(User, user_id)
    if user is None or user.disabled or user.role == "viewer":
        raise BadOutcome(f"user {user_id} cannot take cases")
    allowed = site_ids_of(session=session, user=user)
    if allowed is not None and case.site_id not in allowed:
        raise BadOutcome(f"user {user_id} has no access to the case's site")
    case.assigned_to = user_id
    case.status = CaseStatus.ASSIGNED
    _event(session, case, actor=actor, kind="assigned", detail={"user_id": user_id})
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
    case = _active(session, case_id, site_ids)
    if notes:
        case.notes = (case.notes + "\n" + notes).strip()
    _event(session, case, actor=actor, kind=kind, detail={"result": result, "notes": notes})
    session.flush()
    return case


def case_embeddings(*, session: Session, case: Case) -> npt.NDArray[np.float32]:
    """Embeddings of the case's best sightings (the crops the manager saw), best first."""
    # Crops and sightings may have expired: then the cluster's own vectors.
    return _best_embeddings(session, _cluster(session, case))


def _best_faces(
    session: Session, cluster: UnknownCluster
) -> tuple[npt.NDArray[np.float32], list[int | None]]:
    """Like :func:`_best_embeddings`, with the sighting each row came from (None: a
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
    return np.vstack([_unit(np.frombuffer(rows[s], "<f4")) for s in ids]), list(ids)


def _templates_into(
    session: Session,
    case: Case,
    occupant: Occupant,
    *,
    actor: str,
    outcome: str,
    created: bool,
) -> int:
    cluster = _cluster(session, case)
    before = _cluster_state(cluster)
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
    _close(
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
        rule=_config(session, case.site_id).rule,
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
    case = _active(session, case_id, site_ids)
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
    case = _active(session, case_id, site_ids)
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
    case = _active(session, case_id, site_ids)
    config = _config(session, case.site_id)
    cluster = _cluster(session, case)
    undo = {"cluster": _cluster_state(cluster)}
    _suppress_for(
        cluster, kind=Suppression.VISITOR, days=config.rule.visitor_suppress_days, tz_rule=config
    )
    _close(session, case, actor=actor, outcome=Outcome.VISITOR, detail={"notes": notes}, undo=undo)
    return case


def close_as_moved_out(
    *, session: Session, case_id: int, notes: str, actor: str, site_ids: set[int] | None = None
) -> Case:
    """The person has moved out: close; suppressed for ``moved_out_suppress_days``."""
    case = _active(session, case_id, site_ids)
    config = _config(session, case.site_id)
    cluster = _cluster(session, case)
    undo = {"cluster": _cluster_state(cluster)}
    _suppress_for(
        cluster,
        kind=Suppression.MOVED_OUT,
        days=config.rule.moved_out_suppress_days,
        tz_rule=config,
    )
    _close(
        session, case, actor=actor, outcome=Outcome.MOVED_OUT, detail={"notes": notes}, undo=undo
    )
    return case


def close_as_false_match(
    *, session: Session, case_id: int, notes: str, actor: str, site_ids: set[int] | None = None
) -> Case:
    """The cluster mixes people: close and retire it (new sightings start afresh)."""
    case = _active(session, case_id, site_ids)
    cluster = _cluster(session, case)
    undo = {"cluster": _cluster_state(cluster)}
    cluster.status = ClusterStatus.RETIRED
    _close(
        session, case, actor=actor, outcome=Outcome.FALSE_MATCH, detail={"notes": notes}, undo=undo
    )
    return case


def add_whitelist(
    *,
    session: Session,
    site_id: int,
    kind: str,
    label: str,
    model_id: str,
    embeddings: npt.NDArray[np.float32] | Sequence[npt.NDArray[np.float32]],
    actor: str,
    cluster_id: int | None = None,
    suppressed: list[int] | None = None,
) -> WhitelistEntry:
    """Whitelist staff or a courier by face; matching clusters never become cases.

    ``embeddings`` (rows) must each be of the model's size, finite and unit length
    (:class:`server.embeddings.InvalidEmbedding` otherwise, naming the first bad one).
    ``suppressed`` (if given) receives the ids of the clusters it suppressed.
    """
    if kind not in tuple(WhitelistKind):
        raise BadOutcome("whitelist kind must be 'staff' or 'courier'")
    # The same door check as every other embedding (size of the model, finite, unit
    # length): a wrong-size face here would break every later evaluation of the site.
    vecs = check_embeddings(
        list(embeddings), dim=model_dimension(session, model_id), what="embeddings"
    )
    entry = WhitelistEntry(
        site_id=site_id,
        kind=kind,
        label=label,
        model_id=model_id,
        embeddings=vecs.astype("<f4").tobytes(),
        cluster_id=cluster_id,
        active=True,
        created_by=actor,
    )
    session.add(entry)
    session.flush()
    record(
        session=session,
        actor=actor,
        action="whitelist.add",
        object_type="whitelist_entry",
        object_id=entry.id,
        site_id=site_id,
        detail={"kind": kind, "label": label, "cluster_id": cluster_id},
    )
    # Existing clusters of this person stop counting too.
    for cluster in session.scalars(
        select(UnknownCluster).where(
            UnknownCluster.site_id == site_id,
            UnknownCluster.model_id == model_id,
            UnknownCluster.status == ClusterStatus.ACTIVE,
            UnknownCluster.suppression.is_(None),
        )
    ):
        if (
            float(np.max(cluster_vectors(cluster) @ vecs.T))
            >= _config(session, site_id).rule.occupant_match_threshold
        ):
            cluster.suppression = Suppression.WHITELIST
            if suppressed is not None:
                suppressed.append(cluster.id)
    session.flush()
    return entry


def whitelist_from_case(
    *,
    session: Session,
    case_id: int,
    kind: str,
    label: str,
    actor: str,
    site_ids: set[int] | None = None,
) -> WhitelistEntry:
    """Staff or courier: whitelist the cluster's face and close the case."""
    case = _active(session, case_id, site_ids)
    cluster = _cluster(session, case)
    before = _cluster_state(cluster)
    suppressed: list[int] = []
    entry = add_whitelist(
        session=session,
        site_id=case.site_id,
        kind=kind,
        label=label,
        model_id=cluster.model_id,
        embeddings=cluster_vectors(cluster),
        actor=actor,
        cluster_id=cluster.id,
        suppressed=suppressed,
    )
    cluster.suppression = Suppression.WHITELIST
    _close(
        session,
        case,
        actor=actor,
        outcome=kind,
        detail={"whitelist_id": entry.id, "label": label},
        undo={
            "cluster": before,
            "whitelist_id": entry.id,
            "suppressed": [c for c in suppressed if c != cluster.id],
        },
    )
    return entry


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
    cluster = _cluster(session, case)
    reversed_: dict[str, Any] = {"outcome": outcome}
    _restore_cluster(cluster, undo["cluster"])
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
            _restore_cluster(other, prior)
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
    return case


def _reopen(session: Session, case: Case, *, actor: str, detail: dict[str, Any]) -> None:
    case.status = CaseStatus.ASSIGNED if case.assigned_to is not None else CaseStatus.OPEN
    case.outcome = None
    case.closed_at = None
    case.undo = None
    session.flush()  # the partial unique index sees it open again
    _event(session, case, actor=actor, kind="reopened", detail=detail)


# -- likely occupants: a manager confirms or rejects the attribution ------------------------
def _likely_cluster(session: Session, cluster_id: int, site_ids: set[int] | None) -> UnknownCluster:
    cluster = session.get(UnknownCluster, cluster_id)
    if cluster is None or (site_ids is not None and cluster.site_id not in site_ids):
        raise CaseNotFound(f"cluster {cluster_id} does not exist")
    if cluster.suppression != Suppression.LIKELY_OCCUPANT or cluster.occupant_id is None:
        raise BadOutcome(f"cluster {cluster_id} is not labelled as a likely occupant")
    return cluster


def likely_occupant_clusters(*, session: Session, site_id: int) -> list[UnknownCluster]:
    """The site's active clusters labelled ``likely_occupant``, most recently seen first."""
    return list(
        session.scalars(
            select(UnknownCluster)
            .where(
                UnknownCluster.site_id == site_id,
                UnknownCluster.status == ClusterStatus.ACTIVE,
                UnknownCluster.suppression == Suppression.LIKELY_OCCUPANT,
            )
            .order_by(UnknownCluster.last_seen.desc(), UnknownCluster.id)
        )
    )


def confirm_likely_occupant(
    *, session: Session, cluster_id: int, actor: str, site_ids: set[int] | None = None
) -> int:
    """The manager agrees: the cluster's best sightings become templates of the occupant.

    This is template augmentation (the edge then recognises the look it kept
    missing: the gallery version bumps); the cluster becomes an ``occupant``
    cluster. Returns how many templates were added.
    """
    cluster = _likely_cluster(session, cluster_id, site_ids)
    occupant_id = cluster.occupant_id
    assert occupant_id is not None  # checked by _likely_cluster
    vecs = _best_embeddings(session, cluster)
    for n, vec in enumerate(vecs):
        add_template(
            session=session,
            occupant_id=occupant_id,
            embedding=vec,
            model_id=cluster.model_id,
            quality=float(cluster.best_qualities[n]) if n < len(cluster.best_qualities) else 0.0,
            source=f"cluster:{cluster.id}",
            bump=n == len(vecs) - 1,  # one gallery version bump for the lot
        )
    cluster.suppression = Suppression.OCCUPANT
    record(
        session=session,
        actor=actor,
        action="cluster.likely_occupant_confirmed",
        object_type="unknown_cluster",
        object_id=cluster.id,
        site_id=cluster.site_id,
        detail={"occupant_id": occupant_id, "templates": len(vecs)},
    )
    session.flush()
    return len(vecs)


def reject_likely_occupant(
    *, session: Session, cluster_id: int, actor: str, site_ids: set[int] | None = None
) -> Case | None:
    """The manager disagrees: never attribute this cluster again; open its case if due."""
    cluster = _likely_cluster(session, cluster_id, site_ids)
    record(
        session=session,
        actor=actor,
        action="cluster.likely_occupant_rejected",
        object_type="unknown_cluster",
        object_id=cluster.id,
        site_id=cluster.site_id,
        detail={"occupant_id": cluster.occupant_id},
    )
    cluster.suppression = Suppression.NOT_OCCUPANT
    cluster.occupant_id = None
    session.flush()
    opened = evaluate_clusters(
        session=session, cluster_ids=[cluster.id], config=_config(session, cluster.site_id)
    )
    return opened[0] if opened else None


def _best_embeddings(session: Session, cluster: UnknownCluster) -> npt.NDArray[np.float32]:
    rows = {
        r.id: r.embedding
        for r in session.execute(
            select(Sighting.id, Sighting.embedding).where(Sighting.id.in_(cluster.best_sightings))
        )
        if r.embedding is not None
    }
    vecs = [_unit(np.frombuffer(rows[s], "<f4")) for s in cluster.best_sightings if s in rows]
    return np.vstack(vecs) if vecs else cluster_vectors(cluster)
