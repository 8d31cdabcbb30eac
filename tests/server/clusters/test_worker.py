"""The clustering worker against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from server.cases.models import Case
from server.clusters.algo import same_grouping
from server.clusters.models import UnknownCluster
from server.clusters.service import claim_site, ensure_site_state, recluster_site
from server.clusters.worker import drain
from server.db import make_session_factory
from server.sightings.models import Sighting
from tests.server.clusters.support import (
    DAY0,
    at_cos,
    ingest,
    item,
    look,
    new_session,
    person,
    seen_on,
    work,
)
from tests.server.conftest import DeviceCreds


def _cases(engine: Engine) -> list[Case]:
    with new_session(engine) as s:
        return list(s.scalars(select(Case).order_by(Case.id)))


def test_third_distinct_day_opens_a_case_two_do_not(engine: Engine, device: DeviceCreds) -> None:
    alice = (person(1), 1)
    seen_on(engine, device.device_id, alice, [0, 1])
    # A courier-like stranger: many sightings on one day never make a case.
    ingest(
        engine,
        device.device_id,
        [item(look(person(2), n), DAY0 + timedelta(minutes=n)) for n in range(6)],
    )
    stats = work(engine)
    assert stats.processed == 8
    assert stats.clusters_created == 2
    assert _cases(engine) == []

    seen_on(engine, device.device_id, alice, [2])
    work(engine)
    cases = _cases(engine)
    assert len(cases) == 1
    assert cases[0].status == "open"
    assert cases[0].triggered_at == DAY0 + timedelta(days=2)
    with new_session(engine) as s:
        cluster = s.get(UnknownCluster, cases[0].cluster_id)
        assert cluster is not None
        assert cluster.days == ["2026-03-02", "2026-03-03", "2026-03-04"]
        assert cluster.count == 3
        assert cluster.night_entries == 0  # 19:00 local is not night
        assert s.scalar(select(func.count()).where(Sighting.processed.is_(False))) == 0


def test_window_end_day_15_is_outside_day_14_inside(engine: Engine, device: DeviceCreds) -> None:
    bob = (person(3), 3)
    seen_on(engine, device.device_id, bob, [0, 6, 14])
    work(engine)
    assert _cases(engine) == []  # day 0 and day 14 are 15 days: outside
    seen_on(engine, device.device_id, bob, [15])
    work(engine)
    assert len(_cases(engine)) == 1  # 6, 14, 15


def test_night_entries_and_entrances_are_counted_in_site_time(
    engine: Engine, device: DeviceCreds
) -> None:
    carol = person(4)
    # 23:30 Shanghai = 15:30 UTC; 05:59 Shanghai = 21:59 UTC the day before.
    times = [DAY0.replace(hour=15, minute=30), DAY0.replace(hour=21, minute=59), DAY0]
    ingest(
        engine,
        device.device_id,
        [item(look(carol, n), t, camera=f"cam-{n % 2}") for n, t in enumerate(times)],
    )
    work(engine)
    with new_session(engine) as s:
        cluster = s.scalars(select(UnknownCluster)).one()
        assert cluster.night_entries == 2
        assert cluster.days == ["2026-03-02", "2026-03-03"]  # 05:59 local is the next day
        assert len(cluster.best_sightings) == 3


def test_batched_worker_groups_like_reclustering_from_scratch(
    engine: Engine, device: DeviceCreds
) -> None:
    rng = np.random.default_rng(5)
    people = [person(100 + i) for i in range(8)]
    items = []
    for n in range(80):
        p = int(rng.integers(len(people)))
        items.append(item(look(people[p], 5000 + n, noise=0.04), DAY0 + timedelta(minutes=n)))
    ingest(engine, device.device_id, items)
    work(engine, batch_size=7)  # many small transactions, state reloaded each time
    with new_session(engine) as s:
        stored = {
            r.id: r.cluster_id
            for r in s.execute(select(Sighting.id, Sighting.cluster_id).order_by(Sighting.id))
        }
        scratch = recluster_site(session=s, site_id=device.site_id)
        active = s.scalar(
            select(func.sum(UnknownCluster.count)).where(UnknownCluster.status == "active")
        )
    ids = sorted(stored)
    assert same_grouping([stored[i] for i in ids], [scratch[i] for i in ids])
    assert len(set(stored.values())) == 8
    assert active == 80  # every sighting counted exactly once


def test_two_clusters_of_one_person_merge_and_keep_one_open_case(
    engine: Engine, device: DeviceCreds
) -> None:
    base = person(7)
    look2 = at_cos(base, 0.3, seed=8)  # the same person, far apart (e.g. glasses, dark)
    ingest(
        engine,
        device.device_id,
        [item(base, DAY0 + timedelta(days=d)) for d in range(3)]
        + [item(look2, DAY0 + timedelta(days=d, hours=1)) for d in range(3, 6)],
    )
    work(engine)
    cases = _cases(engine)
    assert len(cases) == 2  # two clusters, each seen on 3 days
    mid = (base + look2) / np.linalg.norm(base + look2)
    ingest(
        engine,
        device.device_id,
        [item(mid.astype(np.float32), DAY0 + timedelta(days=6, minutes=n)) for n in range(4)],
    )
    stats = work(engine)
    assert stats.merges == 1
    with new_session(engine) as s:
        clusters = list(s.scalars(select(UnknownCluster).order_by(UnknownCluster.id)))
        survivor, absorbed = clusters
        assert survivor.status == "active" and absorbed.status == "merged"
        assert absorbed.merged_into_id == survivor.id
        assert survivor.count == 10
        assert len(survivor.days) == 7
        assert set(s.scalars(select(Sighting.cluster_id))) == {survivor.id}
        states = {c.cluster_id: (c.status, c.outcome) for c in s.scalars(select(Case))}
    # One open case for the surviving cluster; the absorbed one's closed as merged.
    open_cases = [c for c in _cases(engine) if c.status == "open"]
    assert len(open_cases) == 1 and open_cases[0].cluster_id == survivor.id
    assert ("closed", "cluster_merged") in states.values()


@pytest.mark.postgres
def test_claim_skips_a_site_another_worker_holds(engine: Engine, device: DeviceCreds) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    factory = make_session_factory(engine)
    with factory() as s:
        ensure_site_state(session=s, site_id=device.site_id)
        s.commit()
    with factory() as first, factory() as second:
        assert claim_site(session=first, site_id=device.site_id) is not None
        assert claim_site(session=second, site_id=device.site_id) is None
        first.rollback()
        assert claim_site(session=second, site_id=device.site_id) is not None
        second.rollback()


@pytest.mark.postgres
def test_two_workers_side_by_side_do_no_double_work(
    engine: Engine, make_device: Callable[..., DeviceCreds]
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("concurrent workers need PostgreSQL")
    devices = [make_device(site=f"Site {i}", name="gate") for i in range(3)]
    expected = 0
    for i, dev in enumerate(devices):
        people = [person(1000 * i + p) for p in range(5)]
        items = [
            item(look(people[n % 5], 7000 * i + n), DAY0 + timedelta(days=n % 4, minutes=n))
            for n in range(120)
        ]
        ingest(engine, dev.device_id, items)
        expected += len(items)
    factory = make_session_factory(engine)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(drain(factory, batch_size=10).processed)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(results) == expected  # each sighting processed by exactly one worker
    with factory() as s:
        counted = s.scalar(
            select(func.sum(UnknownCluster.count)).where(UnknownCluster.status == "active")
        )
        assert counted == expected
        for dev in devices:
            stored = {
                r.id: r.cluster_id
                for r in s.execute(
                    select(Sighting.id, Sighting.cluster_id).where(Sighting.site_id == dev.site_id)
                )
            }
            scratch = recluster_site(session=s, site_id=dev.site_id)
            ids = sorted(stored)
            assert same_grouping([stored[i] for i in ids], [scratch[i] for i in ids])
        # Every site with a person seen on 4 days: 5 cases each, never two per cluster.
        assert s.scalar(select(func.count()).select_from(Case)) == 15


def test_a_face_back_after_the_horizon_starts_a_new_cluster(
    engine: Engine, device: DeviceCreds
) -> None:
    dan = (person(9), 9)
    seen_on(engine, device.device_id, dan, [0, 1])
    work(engine)
    seen_on(engine, device.device_id, dan, [2 + 121])  # default horizon: 120 days
    work(engine)
    with new_session(engine) as s:
        clusters = list(s.scalars(select(UnknownCluster).order_by(UnknownCluster.id)))
        assert [len(c.days) for c in clusters] == [2, 1]
        # Reclustering from scratch applies the same horizon.
        stored = {r.id: r.cluster_id for r in s.execute(select(Sighting.id, Sighting.cluster_id))}
        scratch = recluster_site(session=s, site_id=device.site_id)
        ids = sorted(stored)
        assert same_grouping([stored[i] for i in ids], [scratch[i] for i in ids])
    assert _cases(engine) == []
