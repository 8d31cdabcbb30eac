"""Likely occupants: a manager confirms or rejects the attribution."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.cases.errors import BadOutcome, CaseNotFound
from server.cases.matching import best_embeddings
from server.cases.models import Case
from server.cases.opening import evaluate_clusters
from server.cases.service import case_config
from server.clusters.enums import ClusterStatus, Suppression
from server.clusters.models import UnknownCluster
from server.occupants.service import add_template


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
    vecs = best_embeddings(session, cluster)
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
        session=session, cluster_ids=[cluster.id], config=case_config(session, cluster.site_id)
    )
    return opened[0] if opened else None
