"""The clustering worker (``lintel-server worker``).

One pass (:func:`run_once`) visits every site with unprocessed sightings or
with face templates enrolled since it last looked, and for each site, in one
transaction:

1. claims the site's :class:`ClusterSiteState` row (``FOR UPDATE SKIP LOCKED``
   on PostgreSQL: a site another worker holds is skipped, not waited for);
2. resolves clusters matching newly enrolled templates (retroactive);
3. clusters up to ``batch_size`` pending sightings in arrival order;
4. applies the case rule to the clusters that changed.

Fixed costs per pass matter: a real site sends ~100 sightings between passes.
The worker keeps each site's cluster state between passes
(:class:`server.clusters.service.StateCache`, checked against a fingerprint
of the site's active clusters before use, so another writer is never
missed), finds sites with work by one index seek per site, and marks a batch
processed with one UPDATE.

Sites are isolated: a site whose pass fails (bad data stored before the
doors checked it, a bug) is rolled back, logged, counted in
``lintel_worker_site_failures_total{site=...}`` and tried again after a
back-off (:class:`SiteBackoff`: 5 s, doubling up to 10 min), while the
other sites of the pass go on.

Several workers can run side by side on PostgreSQL: each site is clustered by
one of them at a time, so no sighting is processed twice and the grouping is
what a single worker would produce. On SQLite run one worker (SQLite has no
row locks; its single writer lock serialises everything anyway).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import start_http_server
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from server.cases.opening import evaluate_clusters, on_clusters_merged, resolve_new_templates
from server.clusters.models import ClusterSiteState
from server.clusters.service import (
    StateCache,
    claim_site,
    cluster_pending,
    ensure_site_state,
    site_config,
)
from server.db import make_engine, make_session_factory, session_scope, upgrade
from server.metrics import WORKER_REGISTRY, WORKER_SITE_FAILURES
from server.notify.worker import send_once, start_sender
from server.occupants.models import FaceTemplate
from server.privacy.purge import PurgeSchedule
from server.sightings.models import Sighting
from server.sites.models import Site

log = logging.getLogger(__name__)

DEFAULT_CACHE = StateCache()
"""This process's cluster states between passes (validated before every use)."""


@dataclass(slots=True)
class PassStats:
    """What one pass did, summed over sites."""

    processed: int = 0
    clusters_created: int = 0
    merges: int = 0
    cases_opened: int = 0
    resolved: int = 0
    skipped_sites: int = 0
    failed_sites: int = 0
    """Sites whose pass failed (rolled back, retried after a back-off)."""
    deferred_sites: int = 0
    """Sites with work left alone this pass: their back-off after a failure runs."""


@dataclass
class SiteBackoff:
    """When a site whose pass failed may be tried again: ``base_s`` after the first
    failure, doubling with each further one up to ``max_s``; a success forgets it.

    A failure that data stored in the database causes comes back every pass, so
    retrying at once would only fill the log; a passing glitch (a dropped
    connection) clears at the first retry.
    """

    base_s: float = 5.0
    max_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[Hashable, int] = field(default_factory=dict)
    _due: dict[Hashable, float] = field(default_factory=dict)

    def due(self, site: Hashable) -> bool:
        """Whether the site (any key naming it: the worker uses database URL and id)
        may be processed now."""
        return self.clock() >= self._due.get(site, float("-inf"))

    def failed(self, site: Hashable) -> float:
        """Note a failure; returns the seconds until the site is tried again."""
        n = self._failures.get(site, 0) + 1
        self._failures[site] = n
        delay = min(self.base_s * 2 ** min(n - 1, 30), self.max_s)
        self._due[site] = self.clock() + delay
        return delay

    def succeeded(self, site: Hashable) -> None:
        """Forget the site's failures."""
        self._failures.pop(site, None)
        self._due.pop(site, None)

    def failures(self, site: Hashable) -> int:
        """Failures in a row of the site (0: its last pass worked)."""
        return self._failures.get(site, 0)


DEFAULT_BACKOFF = SiteBackoff()
"""This process's failed sites and when to retry them."""


def sites_with_work(session: Session) -> list[int]:
    """Sites with unprocessed sightings, or with templates newer than their cursor."""
    # One index seek per site on (site_id, processed), not a DISTINCT over every
    # sighting's index entry: this runs at the start of every pass.
    has_pending = (
        select(Sighting.id)
        .where(Sighting.site_id == Site.id, Sighting.processed.is_(False))
        .limit(1)
        .exists()
    )
    pending = set(session.scalars(select(Site.id).where(has_pending)))
    newest = session.scalar(select(func.max(FaceTemplate.id))) or 0
    if newest:
        stale = session.scalars(
            select(ClusterSiteState.site_id).where(ClusterSiteState.template_cursor < newest)
        )
        pending |= set(stale)
    return sorted(pending)


def process_site(
    factory: sessionmaker[Session],
    site_id: int,
    *,
    batch_size: int = 1000,
    cache: StateCache | None = None,
) -> PassStats | None:
    """One transaction of work on one site; None when another worker holds it."""
    stats = PassStats()
    with session_scope(factory) as session:
        # ON CONFLICT DO NOTHING in the same transaction: if another worker is
        # creating the row right now, this waits for it, then the claim skips.
        ensure_site_state(session=session, site_id=site_id)
        state = claim_site(session=session, site_id=site_id)
        if state is None:
            return None
        site = session.get(Site, site_id)
        if site is None:
            return stats
        config = site_config(state)
        stats.resolved = resolve_new_templates(session=session, state=state, model_id=site.model_id)
        result = cluster_pending(
            session=session, site_id=site_id, config=config, limit=batch_size, cache=cache
        )
        # Clustering knows nothing of cases: keep "one cluster, at most one open case".
        for absorbed, survivor in result.merges:
            on_clusters_merged(session=session, survivor_id=survivor, absorbed_id=absorbed)
        opened = evaluate_clusters(session=session, cluster_ids=result.touched, config=config)
        if cache is not None:
            session.flush()
            cache.seal(session, site_id)
        stats.processed = result.processed
        stats.clusters_created = result.created
        stats.merges = len(result.merges)
        stats.cases_opened = len(opened)
    return stats


def run_once(
    factory: sessionmaker[Session],
    *,
    batch_size: int = 1000,
    cache: StateCache | None = DEFAULT_CACHE,
    backoff: SiteBackoff | None = None,
) -> PassStats:
    """Visit every site with work once (one batch each); ``cache=None`` loads state afresh.

    A site whose pass fails is rolled back, logged, counted and left to ``backoff``
    (default: this process's :data:`DEFAULT_BACKOFF`); the other sites go on.
    """
    # Clustering does one small matrix-vector product per sighting: multi-threaded
    # BLAS only adds contention (3x slower on 2 busy cores). Scale out with workers.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_once(
            factory,
            batch_size=batch_size,
            cache=cache,
            backoff=DEFAULT_BACKOFF if backoff is None else backoff,
        )


def _run_once(
    factory: sessionmaker[Session],
    *,
    batch_size: int,
    cache: StateCache | None,
    backoff: SiteBackoff,
) -> PassStats:
    total = PassStats()
    with factory() as session:
        site_ids = sites_with_work(session)
        url = session.get_bind().engine.url.render_as_string(hide_password=True)
    for site_id in site_ids:
        key = (url, site_id)  # one process may serve several databases (tests)
        if not backoff.due(key):
            total.deferred_sites += 1
            continue
        try:
            stats = process_site(factory, site_id, batch_size=batch_size, cache=cache)
        except Exception:
            # One site's bad data (or a bug it triggers) must not stop the others:
            # its transaction was rolled back; it is retried after the back-off.
            delay = backoff.failed(key)
            WORKER_SITE_FAILURES.labels(site=str(site_id)).inc()
            total.failed_sites += 1
            if cache is not None:
                cache.clear()  # nothing staged by the failed pass may be reused
            log.exception(
                "clustering site %d failed (%d in a row); retrying it in %.0f s, "
                "the other sites go on",
                site_id,
                backoff.failures(key),
                delay,
            )
            continue
        backoff.succeeded(key)
        if stats is None:
            total.skipped_sites += 1
            continue
        total.processed += stats.processed
        total.clusters_created += stats.clusters_created
        total.merges += stats.merges
        total.cases_opened += stats.cases_opened
        total.resolved += stats.resolved
    return total


def drain(
    factory: sessionmaker[Session],
    *,
    batch_size: int = 1000,
    max_passes: int = 10_000,
    cache: StateCache | None = DEFAULT_CACHE,
    backoff: SiteBackoff | None = None,
) -> PassStats:
    """Run passes until no site has work left that it can do (tests, benchmarks,
    ``--once``): a site whose pass failed waits for its back-off, so it is tried once."""
    total = PassStats()
    for _ in range(max_passes):
        stats = run_once(factory, batch_size=batch_size, cache=cache, backoff=backoff)
        total.processed += stats.processed
        total.clusters_created += stats.clusters_created
        total.merges += stats.merges
        total.cases_opened += stats.cases_opened
        total.resolved += stats.resolved
        total.skipped_sites += stats.skipped_sites
        total.failed_sites += stats.failed_sites
        if stats.processed == 0 and stats.skipped_sites == 0:
            break
        if stats.processed == 0:
            time.sleep(0.05)  # another worker holds the remaining sites
    return total


def run_forever(
    factory: sessionmaker[Session],
    stop: threading.Event,
    *,
    batch_size: int = 1000,
    poll_s: float = 1.0,
) -> None:
    """Work until ``stop`` is set; sleeps ``poll_s`` when there is nothing to do."""
    # Retention purge, hourly, in the same loop (engineer P, server/privacy/purge.py).
    purges = PurgeSchedule()
    while not stop.is_set():
        try:
            purges.tick(factory)
            stats = run_once(factory, batch_size=batch_size)
        except Exception:  # keep the worker alive; the transaction was rolled back
            log.exception("clustering pass failed; retrying in %.1f s", poll_s)
            stop.wait(poll_s)
            continue
        if stats.processed or stats.cases_opened or stats.resolved:
            log.info(
                "processed %d sightings, %d new clusters, %d merges, %d cases opened",
                stats.processed,
                stats.clusters_created,
                stats.merges,
                stats.cases_opened,
            )
        else:
            stop.wait(poll_s)


def cli_worker(args: argparse.Namespace, settings: Any) -> int:
    """``lintel-server worker``: cluster sightings and open cases until stopped."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade(engine)
        factory = make_session_factory(engine)
        if args.once:
            stats = drain(factory, batch_size=args.batch)
            log.warning(
                "worker: processed %d sightings, %d cases opened, %d sites failed",
                stats.processed,
                stats.cases_opened,
                stats.failed_sites,
            )
            if not args.no_notify:
                send_once(factory, args=args)  # the cases just opened, told (issue 15)
            return 1 if stats.failed_sites else 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        # The worker's counters (site failures, notifications) for Prometheus.
        close = serve_metrics(args.metrics_port, args.metrics_addr) if args.metrics_port else None
        # Notifications (issue 15) in their own thread: a slow receiver never delays clustering.
        sender = (
            None if args.no_notify else start_sender(factory, stop, args=args, poll_s=args.poll)
        )
        try:
            run_forever(factory, stop, batch_size=args.batch, poll_s=args.poll)
        finally:
            if sender is not None:
                sender.join(timeout=30)
            if close is not None:
                close()
        return 0
    finally:
        engine.dispose()


def serve_metrics(port: int, addr: str = "127.0.0.1") -> Callable[[], None]:
    """Serve the worker's counters (:data:`server.metrics.WORKER_REGISTRY`) over HTTP
    for Prometheus, in a daemon thread; returns the function that stops it."""
    httpd, thread = start_http_server(port, addr=addr, registry=WORKER_REGISTRY)

    def close() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    return close
