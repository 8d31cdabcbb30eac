"""Incremental clustering of unknown faces (pure numpy, no database).

A cluster is one presumed person seen at one site. It keeps

* ``total``: the float64 sum of its members' L2-normalised embeddings; the
  cluster *centroid* is ``total / |total|``;
* ``count``: how many sightings it holds;
* ``exemplars``: up to ``max_exemplars`` member embeddings that differ from
  each other (different light, pose), so a person whose look varies is still
  recognised by the member they resemble most.

Each new embedding is compared with every cluster; a cluster's score is the
best of (centroid similarity, best exemplar similarity). The embedding joins
the best-scoring cluster if that score reaches ``assign_threshold``, else it
starts a new cluster. After joining, the cluster's centroid is compared with
the other centroids; clusters whose centroids reach ``merge_threshold`` are
merged (the lower id survives), repeatedly, until none converge.

Determinism: the result depends only on the order of the embeddings. Ties
(equal scores) go to the lower cluster id; merge survivors are the lower id;
state is kept in float64/float32 exactly as the database stores it, so
clustering in batches (the worker) and from scratch in one go give the same
grouping (up to labels).

Default thresholds (buffalo_s / w600k_mbf, 512-d), calibrated with
``bench/cluster_calibration.py`` on ``../shared/eval/faces`` (1,321 photos of
177 people, shuffled arrival order, seed 0; seed 1 agrees: purity 0.904 at
0.30, 1.000 from 0.35 up, split 0.043 at the default)::

    pairwise cosine   same person p1/p5/p50 0.15/0.31/0.58
                      different   p50/p99/p99.99/max 0.005/0.18/0.33/0.41
    assign  merge  purity  split   clusters (177 people)
    0.30    0.50   0.937   0.014   178    <- strangers start to merge
    0.35    0.50   1.000   0.024   185
    0.40    0.50   1.000   0.032   188    <- default
    0.45    0.50   1.000   0.057   199
    0.50    0.50   1.000   0.080   206

(purity: share of pairs put together that are one person; split: share of
same-person pairs left apart). 0.40 keeps a margin above 0.35, the lowest
value with no impure merge; the faces-east-asian set (103 photos, 16 people)
is grouped perfectly at every value from 0.30 to 0.50. Every configuration
re-clustered identically from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

Vector = npt.NDArray[np.float32]


class ClusterParams(BaseModel):
    """Clustering thresholds; calibrated with ``bench/cluster_calibration.py``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    assign_threshold: float = Field(
        default=0.40,
        ge=-1.0,
        le=1.0,
        description=(
            "Cosine similarity (best of centroid and exemplars) at or above which a sighting "
            "joins an existing cluster. Above the max impostor pair (~0.33) of buffalo_s."
        ),
    )
    merge_threshold: float = Field(
        default=0.50,
        ge=-1.0,
        le=1.0,
        description=(
            "Centroid-to-centroid cosine at or above which two clusters are one person and "
            "merge. Centroids average out noise, so same-person centroids are closer than "
            "single sightings are; different-person centroids stay near 0."
        ),
    )
    max_exemplars: int = Field(
        default=8, ge=1, le=64, description="Most exemplar embeddings kept per cluster."
    )
    horizon_days: float | None = Field(
        default=120.0,
        gt=0.0,
        description=(
            "A cluster last seen more than this many days before a sighting is not a "
            "candidate for it (that person starts a new cluster). Bounds the work per "
            "sighting as one-time strangers pile up; keep it above the longest case "
            "suppression (moved out: 90 days). None: clusters never go dormant."
        ),
    )
    exemplar_novelty: float = Field(
        default=0.80,
        ge=-1.0,
        le=1.0,
        description=(
            "A member becomes an exemplar only if its best similarity to the current "
            "exemplars is below this, so exemplars cover different looks, not duplicates."
        ),
    )


def normalise(vec: npt.ArrayLike) -> Vector:
    """L2-normalised float32 copy of a 1-D vector; raises ValueError on a zero vector."""
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("cannot normalise a zero or non-finite vector")
    return (v / n).astype(np.float32)


@dataclass
class ClusterState:
    """One cluster's numeric state, exactly as it is stored in the database."""

    id: int
    total: npt.NDArray[np.float64]
    count: int
    exemplars: list[Vector] = field(default_factory=list)
    last_seen: float | None = None
    """Event time (epoch seconds) of the latest member; None: unknown (never dormant)."""

    @classmethod
    def of(cls, cluster_id: int, embedding: Vector, at: float | None = None) -> ClusterState:
        """A new one-member cluster."""
        return cls(
            id=cluster_id,
            total=embedding.astype(np.float64),
            count=1,
            exemplars=[embedding.astype(np.float32)],
            last_seen=at,
        )

    @property
    def centroid(self) -> Vector:
        """The normalised mean of the members."""
        return (self.total / np.linalg.norm(self.total)).astype(np.float32)

    def similarity(self, vectors: npt.NDArray[np.float32]) -> float:
        """Best cosine between any of ``vectors`` (rows, normalised) and this cluster."""
        if len(vectors) == 0:
            return -1.0
        probes = np.vstack([self.centroid, *self.exemplars])
        return float(np.max(np.asarray(vectors, dtype=np.float32) @ probes.T))


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one embedding went."""

    cluster_id: int
    """The cluster holding the embedding after any merges it caused."""
    created: bool
    """True when the embedding started a new cluster."""
    similarity: float
    """Best score against the clusters before this embedding (-1.0 when there were none)."""
    merged: tuple[tuple[int, int], ...] = ()
    """(absorbed id, surviving id) for each merge this embedding caused, in order."""


class Clusterer:
    """Incremental clusterer over one site's unknown sightings of one model.

    ``new_id`` allocates ids for new clusters; by default one above the largest
    id seen. Ids must grow with creation order: merge survivors and ties use
    "lower id" as "older".
    """

    def __init__(
        self,
        params: ClusterParams | None = None,
        clusters: Iterable[ClusterState] = (),
        *,
        new_id: Callable[[], int] | None = None,
    ) -> None:
        self.params = params or ClusterParams()
        self._clusters: dict[int, ClusterState] = {}
        for c in sorted(clusters, key=lambda c: c.id):
            self._clusters[c.id] = c
        self._alias: dict[int, int] = {}
        self._next = max(self._clusters, default=0) + 1
        self._new_id = new_id
        # Row-major arrays, grown in place (capacity doubling) so one add costs two
        # matrix-vector products, not a rebuild; merges (rare) rebuild them:
        # centroids (n, d) and all exemplars flat (m, d) with their owner row. Flat,
        # not padded to max_exemplars: most clusters are one-sighting strangers, and
        # the products are memory-bound, so padding would read 8x the bytes.
        self._row: dict[int, int] = {}
        self._ids = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0, dtype=np.float64)
        self._cent = np.zeros((0, 0), dtype=np.float32)
        self._n = 0
        self._ex = np.zeros((0, 0), dtype=np.float32)
        self._owner = np.zeros(0, dtype=np.int64)
        self._m = 0
        self._rebuild()

    # -- queries ---------------------------------------------------------------
    @property
    def clusters(self) -> dict[int, ClusterState]:
        """Live clusters by id (merged-away ones are gone)."""
        return self._clusters

    def resolve(self, cluster_id: int) -> int:
        """The live cluster an id now belongs to (follows merges)."""
        while cluster_id in self._alias:
            cluster_id = self._alias[cluster_id]
        return cluster_id

    def scores(
        self, embedding: Vector, at: float | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(cluster ids ascending, score of each) for one normalised embedding.

        Clusters dormant at time ``at`` (see ``horizon_days``) score -inf.
        """
        n, m = self._n, self._m
        if n == 0:
            return self._ids[:0], np.zeros(0, dtype=np.float32)
        best = self._cent[:n] @ embedding
        if m:
            ex_sims = self._ex[:m] @ embedding
            owner = self._owner[:m]
            # Only exemplars that beat their cluster's centroid change anything; they
            # are few, so the unbuffered ufunc.at runs on a handful of elements.
            better = ex_sims > best[owner]
            np.maximum.at(best, owner[better], ex_sims[better])
        best[self._dormant(at)] = -np.inf
        return self._ids[:n], best

    def _dormant(self, at: float | None) -> npt.NDArray[np.bool_]:
        if at is None or self.params.horizon_days is None:
            return np.zeros(self._n, dtype=bool)
        return self._last[: self._n] < at - self.params.horizon_days * 86400.0

    # -- updates ---------------------------------------------------------------
    def add(self, embedding: npt.ArrayLike, at: float | None = None) -> Assignment:
        """Put one embedding in a cluster (normalising it first) and merge what converges.

        ``at`` is the sighting's event time (epoch seconds); without it no cluster
        is ever dormant.
        """
        e = normalise(embedding)
        ids, scores = self.scores(e, at)
        best_sim = -1.0
        if len(ids):
            # argmax returns the first maximum: ids are ascending, so ties go to the lower id.
            i = int(np.argmax(scores))
            best_sim = float(scores[i])
        if len(ids) and best_sim >= self.params.assign_threshold:
            cid = int(ids[i])
            self._join(self._clusters[cid], e, at)
            created = False
        else:
            cid = self._allocate()
            self._clusters[cid] = ClusterState.of(cid, e, at)
            self._append_row(self._clusters[cid])
            created = True
        merged = self._merge_from(cid, at)
        return Assignment(
            cluster_id=self.resolve(cid), created=created, similarity=best_sim, merged=merged
        )

    def _allocate(self) -> int:
        cid = self._new_id() if self._new_id is not None else self._next
        if self._clusters and cid <= max(self._clusters):
            raise ValueError(f"new cluster id {cid} is not above the existing ids")
        self._next = cid + 1
        return cid

    def _join(self, c: ClusterState, e: Vector, at: float | None) -> None:
        c.total = c.total + e.astype(np.float64)
        c.count += 1
        c.last_seen = _latest(c.last_seen, at)
        row = self._row[c.id]
        self._cent[row] = c.centroid
        self._last[row] = _as_time(c.last_seen)
        if self._maybe_exemplar(c, e):
            self._append_exemplar(row, e)

    def _maybe_exemplar(self, c: ClusterState, e: Vector) -> bool:
        """Add ``e`` to the cluster's exemplars if it is new enough; True if added."""
        if len(c.exemplars) >= self.params.max_exemplars:
            return False
        if c.exemplars and float(np.max(np.vstack(c.exemplars) @ e)) >= (
            self.params.exemplar_novelty
        ):
            return False
        c.exemplars.append(e)
        return True

    def _merge_from(self, cid: int, at: float | None) -> tuple[tuple[int, int], ...]:
        merges: list[tuple[int, int]] = []
        while True:
            n = self._n
            if n < 2:
                break
            cur = self._clusters[cid]
            sims = self._cent[:n] @ cur.centroid
            sims[self._row[cid]] = -np.inf
            sims[self._dormant(at)] = -np.inf  # dormant clusters do not merge either
            j = int(np.argmax(sims))
            if float(sims[j]) < self.params.merge_threshold:
                break
            other = int(self._ids[j])
            survivor, absorbed = min(cid, other), max(cid, other)
            self._absorb(self._clusters[survivor], self._clusters[absorbed])
            self._rebuild()
            merges.append((absorbed, survivor))
            cid = survivor
        return tuple(merges)

    def _absorb(self, survivor: ClusterState, absorbed: ClusterState) -> None:
        survivor.total = survivor.total + absorbed.total
        survivor.count += absorbed.count
        survivor.last_seen = _latest(survivor.last_seen, absorbed.last_seen)
        for ex in absorbed.exemplars:
            self._maybe_exemplar(survivor, ex)
        del self._clusters[absorbed.id]
        self._alias[absorbed.id] = survivor.id

    def _rebuild(self) -> None:
        """Rebuild the matrices from the live clusters (at start and after a merge)."""
        self._row = {}
        self._n = 0
        self._m = 0
        for c in self._clusters.values():
            self._append_row(c)

    def _append_row(self, c: ClusterState) -> None:
        dim = c.total.shape[0]
        if self._cent.shape[1] != dim:
            if self._n:
                raise ValueError(
                    f"embedding has {dim} values, the clusters have {self._cent.shape[1]}"
                )
            self._cent = np.zeros((16, dim), dtype=np.float32)
            self._ids = np.zeros(16, dtype=np.int64)
            self._last = np.zeros(16, dtype=np.float64)
            self._ex = np.zeros((64, dim), dtype=np.float32)
            self._owner = np.zeros(64, dtype=np.int64)
        if self._n == len(self._ids):
            self._cent = np.concatenate([self._cent, np.zeros_like(self._cent)])
            self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])
            self._last = np.concatenate([self._last, np.zeros_like(self._last)])
        row = self._n
        self._cent[row] = c.centroid
        self._ids[row] = c.id
        self._last[row] = _as_time(c.last_seen)
        self._row[c.id] = row
        self._n += 1
        # Stored clusters may hold more exemplars than a lowered max_exemplars allows.
        del c.exemplars[self.params.max_exemplars :]
        for ex in c.exemplars:
            self._append_exemplar(row, ex)

    def _append_exemplar(self, row: int, e: Vector) -> None:
        if self._m == len(self._owner):
            self._ex = np.concatenate([self._ex, np.zeros_like(self._ex)])
            self._owner = np.concatenate([self._owner, np.zeros_like(self._owner)])
        self._ex[self._m] = e
        self._owner[self._m] = row
        self._m += 1


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None if a is None and b is None else (a if b is None else b)
    return max(a, b)


def _as_time(t: float | None) -> float:
    return np.inf if t is None else t


def cluster_all(
    embeddings: Iterable[npt.ArrayLike],
    params: ClusterParams | None = None,
    times: Iterable[float | None] | None = None,
) -> list[int]:
    """Cluster embeddings from scratch in order; each one's final cluster id."""
    c = Clusterer(params)
    embs = list(embeddings)
    ats = list(times) if times is not None else [None] * len(embs)
    first = [c.add(e, at).cluster_id for e, at in zip(embs, ats, strict=True)]
    return [c.resolve(cid) for cid in first]


def same_grouping(a: list[int], b: list[int]) -> bool:
    """True when two labelings group the same items together (labels may differ)."""
    if len(a) != len(b):
        return False
    fwd: dict[int, int] = {}
    back: dict[int, int] = {}
    for x, y in zip(a, b, strict=True):
        if fwd.setdefault(x, y) != y or back.setdefault(y, x) != x:
            return False
    return True
