"""Staff and couriers of a site: whitelisted faces open no case."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.cases.enums import WhitelistKind
from server.cases.errors import BadOutcome
from server.cases.models import WhitelistEntry
from server.cases.service import (
    active_case,
    case_cluster,
    case_config,
    close_case,
    cluster_snapshot,
)
from server.clusters.enums import ClusterStatus, Suppression
from server.clusters.models import UnknownCluster
from server.clusters.service import cluster_vectors
from server.embeddings import check_embeddings, model_dimension


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
            >= case_config(session, site_id).rule.occupant_match_threshold
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
    case = active_case(session, case_id, site_ids)
    cluster = case_cluster(session, case)
    before = cluster_snapshot(cluster)
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
    close_case(
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
