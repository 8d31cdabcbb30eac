"""Issue 18, finding 1: bad data of one site never stops the worker for the others.

A 4-value template stored before the doors checked embeddings used to raise
in the first site's pass and end the whole pass, so no later site was
clustered or got cases. Now a wrong-size template is left out of the matrices
(it cannot match anybody), and a site whose pass still fails (here: a damaged
cluster row) is rolled back, logged, counted in /metrics and retried after a
back-off while every other site is processed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select, update

from server.cases.models import Case, WhitelistEntry
from server.cli import main
from server.clusters.models import UnknownCluster
from server.clusters.worker import SiteBackoff, run_once, serve_metrics, sites_with_work
from server.db import make_session_factory
from server.metrics import WORKER_REGISTRY
from server.occupants.models import FaceTemplate
from server.occupants.service import add_template, upsert_occupant
from server.sightings.models import Sighting
from tests.server.clusters.support import MODEL, new_session, person, seen_on, work
from tests.server.conftest import DeviceCreds


class FakeClock:
    """A monotonic clock the test moves by hand (no sleeping, no timed asserts)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cases(engine: Engine, site_id: int) -> int:
    with new_session(engine) as s:
        return int(s.scalar(select(func.count(Case.id)).where(Case.site_id == site_id)) or 0)


def _pending(engine: Engine, site_id: int) -> int:
    with new_session(engine) as s:
        return int(
            s.scalar(
                select(func.count(Sighting.id)).where(
                    Sighting.site_id == site_id, Sighting.processed.is_(False)
                )
            )
            or 0
        )


def _failures(site_id: int) -> float:
    value = WORKER_REGISTRY.get_sample_value(
        "lintel_worker_site_failures_total", {"site": str(site_id)}
    )
    return value or 0.0


def _poison_template(engine: Engine, site_id: int) -> int:
    """A 4-value template written straight to the table, as the import did before the fix."""
    with new_session(engine) as s:
        occ = upsert_occupant(session=s, site_id=site_id, name="Poisoned")
        # A good one too: the site's model has a known size (512) from its own data.
        add_template(session=s, occupant_id=occ.id, embedding=person(900), model_id=MODEL)
        bad = np.full(4, 0.5, np.float32)  # unit length, 4 values
        row = FaceTemplate(
            occupant_id=occ.id,
            site_id=site_id,
            embedding=bad.astype("<f4").tobytes(),
            model_id=MODEL,
        )
        s.add(row)
        s.commit()
        return row.id


def test_a_poisoned_template_of_site_1_does_not_stop_site_2_in_the_same_pass(
    engine: Engine, make_device: Callable[..., DeviceCreds]
) -> None:
    a = make_device(site="Alpha Court", name="gate-a")
    b = make_device(site="Beta Court", name="gate-b")
    assert a.site_id < b.site_id  # the worker visits sites in id order: A first
    _poison_template(engine, a.site_id)
    seen_on(engine, a.device_id, (person(11), 11), [0, 1, 2])
    seen_on(engine, b.device_id, (person(22), 22), [0, 1, 2])

    stats = run_once(make_session_factory(engine), backoff=SiteBackoff())

    assert stats.failed_sites == 0
    assert _pending(engine, b.site_id) == 0  # clustered ...
    assert _cases(engine, b.site_id) == 1  # ... and cased, in this very pass
    # Site A too: the 4-value template is left out, its good one still counts.
    assert _pending(engine, a.site_id) == 0
    assert _cases(engine, a.site_id) == 1
    # Its template cursor moved past the bad row: no pass comes back for it.
    with new_session(engine) as s:
        assert sites_with_work(s) == []


def test_a_poisoned_template_still_lets_its_occupant_be_recognised(
    engine: Engine, make_device: Callable[..., DeviceCreds]
) -> None:
    a = make_device(site="Alpha Court", name="gate-a")
    _poison_template(engine, a.site_id)
    # The occupant with the good template (person 900) walks in on 3 days: no case.
    seen_on(engine, a.device_id, (person(900), 900), [0, 1, 2])
    stats = run_once(make_session_factory(engine), backoff=SiteBackoff())
    assert stats.failed_sites == 0 and stats.processed == 3
    assert _cases(engine, a.site_id) == 0


def test_a_failing_site_is_counted_backed_off_and_retried_while_others_go_on(
    engine: Engine,
    client: httpx.Client,
    make_device: Callable[..., DeviceCreds],
) -> None:
    a = make_device(site="Alpha Court", name="gate-a")
    b = make_device(site="Beta Court", name="gate-b")
    factory = make_session_factory(engine)
    seen_on(engine, a.device_id, (person(11), 11), [0])
    work(engine)  # site A now has a cluster
    # Its stored state damaged (exemplar bytes that are no whole 512-value row):
    # loading site A's clusters raises, in every pass, until someone repairs it.
    with new_session(engine) as s:
        saved = s.scalars(
            select(UnknownCluster.exemplars).where(UnknownCluster.site_id == a.site_id)
        ).one()
    _damage_cluster(engine, a.site_id)
    seen_on(engine, a.device_id, (person(11), 11), [1])
    seen_on(engine, b.device_id, (person(22), 22), [0, 1, 2])
    before = _failures(a.site_id)
    clock = FakeClock()
    backoff = SiteBackoff(base_s=5.0, max_s=60.0, clock=clock)

    first = run_once(factory, backoff=backoff)
    assert first.failed_sites == 1
    assert _cases(engine, b.site_id) == 1  # site B was processed all the same
    assert _pending(engine, a.site_id) == 1  # site A rolled back: nothing lost
    assert _failures(a.site_id) == before + 1
    scrape = client.get("/metrics").text
    assert f'lintel_worker_site_failures_total{{site="{a.site_id}"}}' in scrape

    # Within the back-off the site is left alone (not failed again, not counted).
    second = run_once(factory, backoff=backoff)
    assert (second.failed_sites, second.deferred_sites) == (0, 1)
    assert _failures(a.site_id) == before + 1

    # After it, it is retried; still failing, it waits twice as long.
    clock.now += 5.0
    third = run_once(factory, backoff=backoff)
    assert third.failed_sites == 1 and _failures(a.site_id) == before + 2
    clock.now += 5.0
    assert run_once(factory, backoff=backoff).deferred_sites == 1

    # The operator repairs the row; the next retry clusters the site.
    with new_session(engine) as s:
        s.execute(
            update(UnknownCluster)
            .where(UnknownCluster.site_id == a.site_id)
            .values(exemplars=saved)
        )
        s.commit()
    clock.now += 5.0
    fourth = run_once(factory, backoff=backoff)
    assert fourth.failed_sites == 0 and fourth.processed == 1
    assert backoff.failures((engine.url.render_as_string(hide_password=True), a.site_id)) == 0


def test_backoff_doubles_to_its_bound_and_a_success_forgets() -> None:
    clock = FakeClock()
    backoff = SiteBackoff(base_s=5.0, max_s=30.0, clock=clock)
    assert [backoff.failed(1) for _ in range(5)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert not backoff.due(1) and backoff.due(2)
    clock.now += 30.0
    assert backoff.due(1)
    backoff.succeeded(1)
    assert backoff.failures(1) == 0 and backoff.failed(1) == 5.0


def _damage_cluster(engine: Engine, site_id: int) -> None:
    with new_session(engine) as s:
        cluster = s.scalars(select(UnknownCluster).where(UnknownCluster.site_id == site_id)).one()
        cluster.exemplars = cluster.exemplars[:12]
        s.commit()


def test_worker_once_exits_1_when_a_site_failed_after_doing_the_others(
    engine: Engine,
    db_url: str,
    make_device: Callable[..., DeviceCreds],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import server.clusters.worker as worker

    monkeypatch.setattr(worker, "DEFAULT_BACKOFF", SiteBackoff())  # this test's failures only
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    a = make_device(site="Alpha Court", name="gate-a")
    b = make_device(site="Beta Court", name="gate-b")
    seen_on(engine, a.device_id, (person(11), 11), [0])
    work(engine)
    _damage_cluster(engine, a.site_id)
    seen_on(engine, a.device_id, (person(11), 11), [1])
    seen_on(engine, b.device_id, (person(22), 22), [0, 1, 2])
    assert main(["worker", "--once"]) == 1  # a cron job sees that a site failed
    assert _cases(engine, b.site_id) == 1
    assert _pending(engine, a.site_id) == 1


def test_the_worker_serves_its_counters_for_prometheus() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    close = serve_metrics(port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        close()
    assert "# TYPE lintel_worker_site_failures_total counter" in text


def test_a_whitelist_entry_of_the_wrong_size_is_ignored_not_fatal(
    engine: Engine, make_device: Callable[..., DeviceCreds]
) -> None:
    a = make_device(site="Alpha Court", name="gate-a")
    with new_session(engine) as s:
        # Stored before whitelisted faces were checked (the API used to keep a
        # 4-value face when the site had no cluster to compare it with).
        s.add(
            WhitelistEntry(
                site_id=a.site_id,
                kind="staff",
                model_id=MODEL,
                embeddings=np.full(4, 0.5, "<f4").tobytes(),
                created_by="test",
            )
        )
        s.commit()
    seen_on(engine, a.device_id, (person(11), 11), [0, 1, 2])
    stats = run_once(make_session_factory(engine), backoff=SiteBackoff())
    assert stats.failed_sites == 0
    assert _cases(engine, a.site_id) == 1
