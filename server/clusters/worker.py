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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from server.cases.service import evaluate_clusters, resolve_new_templates
from server.clusters.models import ClusterSiteState
from server.clusters.service import (
    StateCache,
    claim_site,
    cluster_pending,
    ensure_site_state,
    site_config,
)
from server.db import session_scope
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
) -> PassStats:
    """Visit every site with work once (one batch each); ``cache=None`` loads state afresh."""
    # Clustering does one small matrix-vector product per sighting: multi-threaded
    # BLAS only adds contention (3x slower on 2 busy cores). Scale out with workers.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_once(factory, batch_size=batch_size, cache=cache)


def _run_once(
    factory: sessionmaker[Session], *, batch_size: int, cache: StateCache | None
) -> PassStats:
    total = PassStats()
    with factory() as session:
        site_ids = sites_with_work(session)
    for site_id in site_ids:
        stats = process_site(factory, site_id, batch_size=batch_size, cache=cache)
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
) -> PassStats:
    """Run passes until no site has work left (tests, benchmarks, ``--once``)."""
    total = PassStats()
    for _ in range(max_passes):
        stats = run_once(factory, batch_size=batch_size, cache=cache)
        total.processed += stats.processed
        total.clusters_created += stats.clusters_created
        total.merges += stats.merges
        total.cases_opened += stats.cases_opened
        total.resolved += stats.resolved
        total.skipped_sites += stats.skipped_sites
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
    from server.db import make_engine, make_session_factory, upgrade

    engine = make_engine(settings.sqlalchemy_url)
    try:
        upgrade(engine)
        factory = make_session_factory(engine)
        if args.once:
            stats = drain(factory, batch_size=args.batch)
            log.warning(
                "worker: processed %d sightings, %d cases opened",
                stats.processed,
                stats.cases_opened,
            )
            if not args.no_notify:
                send_once(factory, args=args)  # the cases just opened, told (issue 15)
            return 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        # Notifications (issue 15) in their own thread: a slow receiver never delays clustering.
        sender = (
            None if args.no_notify else start_sender(factory, stop, args=args, poll_s=args.poll)
        )
        run_forever(factory, stop, batch_size=args.batch, poll_s=args.poll)
        if sender is not None:
            sender.join(timeout=30)
        return 0
    finally:
        engine.dispose()
