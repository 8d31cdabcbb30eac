"""Incremental clustering: grouping, thresholds at their edges, merges, determinism."""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt
import pytest

from server.clusters.algo import (
    Clusterer,
    ClusterParams,
    ClusterState,
    cluster_all,
    normalise,
    same_grouping,
)

DIM = 512


def unit(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    return normalise(rng.normal(size=DIM))


def orthonormal_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = unit(rng).astype(np.float64)
    b = rng.normal(size=DIM)
    b -= (b @ a) * a
    return a, b / np.linalg.norm(b)


def at_cos(a: np.ndarray, b: np.ndarray, cos: float) -> npt.NDArray[np.float32]:
    """A unit vector whose cosine with ``a`` is ``cos`` (``b`` orthonormal to ``a``)."""
    return normalise(cos * a + np.sqrt(1 - cos**2) * b)


def people_stream(
    rng: np.random.Generator, people: int, n: int, noise: float
) -> tuple[list[np.ndarray], list[int]]:
    """Interleaved noisy sightings of ``people`` random identities."""
    ids = [unit(rng) for _ in range(people)]
    xs, truth = [], []
    for _ in range(n):
        p = int(rng.integers(people))
        xs.append(ids[p] + rng.normal(size=DIM) * noise)
        truth.append(p)
    return xs, truth


def test_interleaved_people_are_grouped_one_cluster_each() -> None:
    rng = np.random.default_rng(1)
    # noise 0.045/dim gives same-person cosine ~0.55-0.6, like real buffalo_s pairs.
    xs, truth = people_stream(rng, people=25, n=400, noise=0.045)
    labels = cluster_all(xs)
    assert same_grouping(labels, truth)
    assert len(set(labels)) == 25


def test_reclustering_from_scratch_gives_the_same_grouping_and_batches_do_too() -> None:
    rng = np.random.default_rng(2)
    # Harder data (noisier, more people) so the grouping is not simply the truth.
    xs, _ = people_stream(rng, people=60, n=500, noise=0.06)
    whole = cluster_all(xs)
    assert whole == cluster_all(xs)
    # The worker clusters in batches, reloading state from the database in between:
    # simulate that by deep-copying the states into a fresh Clusterer every 37 items.
    states: list[ClusterState] = []
    first: list[int] = []
    alias: dict[int, int] = {}
    for start in range(0, len(xs), 37):
        c = Clusterer(clusters=copy.deepcopy(states))
        for x in xs[start : start + 37]:
            a = c.add(x)
            first.append(a.cluster_id)
            for absorbed, survivor in a.merged:
                alias[absorbed] = survivor
        states = list(c.clusters.values())

    def resolve(i: int) -> int:
        while i in alias:
            i = alias[i]
        return i

    assert same_grouping([resolve(i) for i in first], whole)


def test_assign_threshold_edges() -> None:
    rng = np.random.default_rng(3)
    a, b = orthonormal_pair(rng)
    params = ClusterParams(assign_threshold=0.40, merge_threshold=0.99)
    c = Clusterer(params)
    first = c.add(a)
    above = c.add(at_cos(a, b, 0.401))
    assert above.cluster_id == first.cluster_id and not above.created
    assert above.similarity == pytest.approx(0.401, abs=1e-5)

    c2 = Clusterer(params)
    c2.add(a)
    below = c2.add(at_cos(a, b, 0.399))
    assert below.created
    assert len(c2.clusters) == 2


def test_ties_go_to_the_lower_cluster_id() -> None:
    rng = np.random.default_rng(4)
    a, b = orthonormal_pair(rng)
    c = Clusterer(ClusterParams(assign_threshold=0.4, merge_threshold=0.99))
    ca = c.add(a).cluster_id
    cb = c.add(b).cluster_id
    assert ca < cb
    mid = normalise(a + b)  # cos 0.707 with both
    assert c.add(mid).cluster_id == ca


def test_two_clusters_of_one_person_merge_when_they_converge() -> None:
    rng = np.random.default_rng(5)
    a, b = orthonormal_pair(rng)
    # Two looks of one person, cos 0.3 apart: below the assign threshold, two clusters.
    look1 = a
    look2 = at_cos(a, b, 0.3).astype(np.float64)
    # Centroid of look1 + k bridges vs look2: k=1 0.58, k=2 0.67, k=3 0.71.
    c = Clusterer(ClusterParams(assign_threshold=0.4, merge_threshold=0.7))
    c1 = c.add(look1).cluster_id
    c2 = c.add(look2).cluster_id
    assert c1 != c2
    # Sightings in between pull cluster 1's centroid towards look 2 until they converge.
    merges: list[tuple[int, int]] = []
    bridges = 0
    for _ in range(6):
        bridges += 1
        merges.extend(c.add(normalise(look1 + look2)).merged)
        if merges:
            break
    assert merges == [(c2, c1)]
    assert bridges == 3
    assert list(c.clusters) == [c1]
    assert c.clusters[c1].count == 2 + bridges
    assert c.resolve(c2) == c1
    # Both looks now land in the surviving cluster.
    assert c.add(look2).cluster_id == c1
    assert c.add(look1).cluster_id == c1


def test_a_look_far_from_the_centroid_is_still_matched_through_an_exemplar() -> None:
    rng = np.random.default_rng(6)
    a, b = orthonormal_pair(rng)
    look2 = at_cos(a, b, 0.45)
    c = Clusterer(ClusterParams(assign_threshold=0.4, merge_threshold=0.99, exemplar_novelty=0.9))
    cid = c.add(a).cluster_id
    for _ in range(20):
        c.add(a)
    assert c.add(look2).cluster_id == cid  # 0.45 >= 0.4: joins, becomes an exemplar
    for _ in range(30):
        c.add(a)  # centroid back near ``a``
    # A probe near look 2 but past the centroid: only the exemplar reaches the threshold.
    probe = normalise(look2 * 0.9 + at_cos(a, b, 0.0) * 0.3)
    assert float(c.clusters[cid].centroid @ probe) < 0.4
    assert c.add(probe).cluster_id == cid


def test_exemplars_are_capped_and_novel() -> None:
    rng = np.random.default_rng(7)
    base = unit(rng)
    c = Clusterer(ClusterParams(max_exemplars=3, exemplar_novelty=0.8, assign_threshold=0.3))
    cid = c.add(base).cluster_id
    c.add(base)  # a duplicate is no new exemplar
    assert len(c.clusters[cid].exemplars) == 1
    for _ in range(10):
        c.add(base + rng.normal(size=DIM) * 0.04)
    assert len(c.clusters[cid].exemplars) == 3


def test_new_ids_must_grow() -> None:
    rng = np.random.default_rng(8)
    ids = iter([10, 5])
    c = Clusterer(ClusterParams(assign_threshold=0.9), new_id=lambda: next(ids))
    assert c.add(unit(rng)).cluster_id == 10
    with pytest.raises(ValueError, match="not above"):
        c.add(unit(rng))


def test_zero_vector_is_refused() -> None:
    with pytest.raises(ValueError):
        normalise(np.zeros(DIM))


def test_params_forbid_unknown_fields() -> None:
    with pytest.raises(ValueError):
        ClusterParams(assign=0.5)  # type: ignore[call-arg]


def test_same_grouping_is_up_to_labels_only() -> None:
    assert same_grouping([1, 1, 2], [7, 7, 3])
    assert not same_grouping([1, 1, 2], [7, 3, 3])
    assert not same_grouping([1, 2], [7, 7])


def test_clusters_go_dormant_after_the_horizon() -> None:
    rng = np.random.default_rng(9)
    face = unit(rng)
    day = 86400.0
    c = Clusterer(ClusterParams(horizon_days=120))
    first = c.add(face, at=0.0).cluster_id
    assert c.add(face, at=119 * day).cluster_id == first  # still a candidate
    back = c.add(face, at=(119 + 121) * day)  # 121 days after the last sighting
    assert back.created and back.cluster_id != first
    # Without times (or without a horizon) nothing is dormant.
    assert Clusterer(ClusterParams(horizon_days=None)).add(face, at=0.0).created
    again = cluster_all([face, face], ClusterParams(horizon_days=1), times=[0.0, 3 * day])
    assert again[0] != again[1]
    assert len(set(cluster_all([face, face], ClusterParams(horizon_days=1)))) == 1
