"""The worker's cluster-state cache: same grouping as loading afresh, and never stale."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import Engine, select

from server.clusters.algo import same_grouping
from server.clusters.models import UnknownCluster
from server.clusters.service import StateCache, recluster_site
from server.clusters.worker import drain
from server.db import make_session_factory
from server.sightings.models import Sighting
from tests.server.clusters.support import DAY0, ingest, item, look, new_session, person
from tests.server.conftest import DeviceCreds


def _grouping(engine: Engine, site_id: int) -> tuple[list[int], list[int]]:
    with new_session(engine) as s:
        stored = {
            r.id: r.cluster_id
            for r in s.execute(select(Sighting.id, Sighting.cluster_id).order_by(Sighting.id))
        }
        scratch = recluster_site(session=s, site_id=site_id)
    ids = sorted(stored)
    return [stored[i] for i in ids], [scratch[i] for i in ids]


def test_cached_passes_group_like_reclustering_from_scratch(
    engine: Engine, device: DeviceCreds
) -> None:
    rng = np.random.default_rng(6)
    people = [person(600 + i) for i in range(6)]
    cache = StateCache()
    factory = make_session_factory(engine)
    for day in range(5):  # one batch a day, as the worker sees a real site
        ingest(
            engine,
            device.device_id,
            [
                item(
                    look(people[int(rng.integers(len(people)))], 100 * day + n, noise=0.04),
                    DAY0 + timedelta(days=day, minutes=n),
                )
                for n in range(12)
            ],
        )
        drain(factory, batch_size=5, cache=cache)
    assert cache.hits > 0  # state was reused between passes...
    stored, scratch = _grouping(engine, device.site_id)
    assert same_grouping(stored, scratch)  # ...and gave the from-scratch grouping
    assert len(set(stored)) == 6


def test_a_change_by_anyone_else_is_seen_not_the_cached_state(
    engine: Engine, device: DeviceCreds
) -> None:
    face = person(700)
    cache = StateCache()
    factory = make_session_factory(engine)
    ingest(engine, device.device_id, [item(look(face, 1), DAY0)])
    drain(factory, cache=cache)
    # A manager closes its case as a false match: the cluster is retired.
    with new_session(engine) as s:
        cluster = s.scalars(select(UnknownCluster)).one()
        cluster.status = "retired"
        s.commit()
        retired = cluster.id
    misses = cache.misses
    ingest(engine, device.device_id, [item(look(face, 2), DAY0 + timedelta(days=1))])
    drain(factory, cache=cache)
    assert cache.misses == misses + 1
    with new_session(engine) as s:
        clusters = s.scalars(select(UnknownCluster).order_by(UnknownCluster.id)).all()
        # With the stale state the face would have joined the retired cluster.
        assert [(c.id == retired, c.status, c.count) for c in clusters] == [
            (True, "retired", 1),
            (False, "active", 1),
        ]
