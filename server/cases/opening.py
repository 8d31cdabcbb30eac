"""The worker's side of cases: open, update, suppress and resolve (retroactively).

Cases open from clusters that meet the case rule (:mod:`server.cases.rules`),
unless the cluster is suppressed (:class:`server.clusters.enums.Suppression`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.cases.attribution import OccupantEvidence, attributes, desk_check, occupant_evidence
from server.cases.enums import NOT_CLOSED, CaseStatus, Outcome
from server.cases.matching import (
    best_template_match,
    templates_of_site,
    unit_vector,
    whitelist_match,
)
from server.cases.models import Case
from server.cases.rules import CaseRule, case_due_day, local_day, priority
from server.cases.service import SYSTEM, add_event, close_case, cluster_snapshot, open_case_of
from server.clusters.enums import (
    REGISTERED_SUPPRESSIONS,
    TIMED_SUPPRESSIONS,
    ClusterStatus,
    Suppression,
)
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.clusters.service import SiteConfig, cluster_days, cluster_vectors, site_config
from server.db import utcnow
from server.notify.service import emit_case_opened as notify_case_opened
from server.sightings.models import Sighting

log = logging.getLogger(__name__)


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
        add_event(
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
        notify_case_opened(
            session=session,
            case=case,
            cluster=cluster,
            desk_check=desk_check(evidence) is not None,
        )  # issue 15 outbox
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
            mat, occupants, sites, _ = templates_of_site(
                self._session, model_id=model_id, site_id=site_id
            )
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
    return np.vstack([unit_vector(np.frombuffer(b, "<f4")) for b in blobs if b is not None])


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
    entry = whitelist_match(session=session, cluster=cluster, rule=rule)
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
        add_event(
            session,
            moved,
            actor=SYSTEM,
            kind="cluster_merged",
            detail={"from_cluster": absorbed_id, "to_cluster": survivor_id},
        )
    else:
        close_case(
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
        prior = cluster_snapshot(cluster)
        cluster.occupant_id = occupant_ids[i]
        cluster.suppression = Suppression.OCCUPANT if own else Suppression.NEIGHBOUR
        changed.append(cluster.id)
        case = open_case_of(session=session, cluster_id=cluster.id)
        if before is not None:
            before.append({**prior, "case_id": case.id if case is not None and own else None})
        if case is not None and own:
            case.occupant_id = occupant_ids[i]
            close_case(
                session,
                case,
                actor=actor,
                outcome=Outcome.RESOLVED_BY_ENROLMENT,
                detail={"occupant_id": occupant_ids[i], "similarity": round(float(sims[i]), 4)},
            )
        elif case is not None:
            add_event(
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
    mat, occupants, sites, tids = templates_of_site(
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
