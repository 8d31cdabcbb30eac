"""Matching clusters against people: occupants' templates and the whitelist."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.cases.models import WhitelistEntry
from server.cases.rules import CaseRule
from server.clusters.models import UnknownCluster
from server.clusters.service import cluster_vectors
from server.embeddings import model_dimension
from server.occupants.enums import OccupantStatus
from server.occupants.models import FaceTemplate, Occupant
from server.sightings.models import Sighting

log = logging.getLogger(__name__)


# -- matching clusters against people -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TemplateMatch:
    """The best registered person a cluster resembles."""

    occupant_id: int
    site_id: int
    similarity: float


def templates_of_site(
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
            Occupant.status == OccupantStatus.ACTIVE,
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
    mat = np.vstack([unit_vector(v) for v in vecs])
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


def unit_vector(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A vector scaled to unit length (a zero vector stays near zero)."""
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
        mat, occupants, sites, _ = templates_of_site(
            session, model_id=cluster.model_id, site_id=site_id
        )
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


def whitelist_match(
    *, session: Session, cluster: UnknownCluster, rule: CaseRule
) -> WhitelistEntry | None:
    """The site's active whitelist entry the cluster matches, if any."""
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


def best_embeddings(session: Session, cluster: UnknownCluster) -> npt.NDArray[np.float32]:
    """Unit embeddings of the cluster's best sightings (its centroid rows if none)."""
    rows = {
        r.id: r.embedding
        for r in session.execute(
            select(Sighting.id, Sighting.embedding).where(Sighting.id.in_(cluster.best_sightings))
        )
        if r.embedding is not None
    }
    vecs = [unit_vector(np.frombuffer(rows[s], "<f4")) for s in cluster.best_sightings if s in rows]
    return np.vstack(vecs) if vecs else cluster_vectors(cluster)
