"""Clustering unknown sightings of a site into :class:`UnknownCluster` rows.

:func:`cluster_pending` is the unit of work of the worker: it takes the site's
oldest unprocessed sightings (in id order, i.e. arrival order), puts each
unknown one in a cluster with :class:`server.clusters.algo.Clusterer`,
updates the clusters' numeric state and statistics, records merges, and marks
the sightings processed. It only flushes; the caller owns the transaction and
must hold the site (see :func:`claim_site`).

Re-clustering from scratch (:func:`recluster_site`) replays the same
sightings in the same order and therefore gives the same grouping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from server.cases.rules import DEFAULT_TIMEZONE, CaseRule, is_night, local_day, site_zone
from server.clusters.algo import Clusterer, ClusterParams, ClusterState
from server.clusters.enums import ClusterStatus
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.db import utcnow
from server.dialect import insert_ignore
from server.errors import InvalidInput
from server.sightings.models import Sighting

log = logging.getLogger(__name__)

BEST_CROPS = 5
"""Best-quality sightings kept per cluster (their crops are shown; their embeddings enrol)."""


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """A site's clustering thresholds, case rule and timezone."""

    params: ClusterParams
    rule: CaseRule
    tz: ZoneInfo


@dataclass(slots=True)
class BatchResult:
    """What one :func:`cluster_pending` call did."""

    processed: int = 0
    unknown: int = 0
    created: int = 0
    merges: list[tuple[int, int]] = field(default_factory=list)
    """(absorbed, survivor) cluster ids, in merge order: the caller moves their cases."""
    touched: set[int] = field(default_factory=set)
    """Live clusters that gained sightings or absorbed another cluster."""
    last_event: datetime | None = None


# -- per-site state ---------------------------------------------------------------
def ensure_site_state(*, session: Session, site_id: int) -> None:
    """Create the site's state row if missing (safe when two workers race)."""
    table = ClusterSiteState.__table__
    stmt = insert_ignore(session, table, ["site_id"])  # type: ignore[arg-type]
    session.execute(
        stmt, [{"site_id": site_id, "timezone": DEFAULT_TIMEZONE, "template_cursor": 0}]
    )


def claim_site(*, session: Session, site_id: int) -> ClusterSiteState | None:
    """Lock the site's state row for this transaction; None if another worker holds it.

    PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``. SQLite has no row locks
    (one writer at a time for the whole file), so there the row is read plainly
    and a single in-process worker is the supported setup.
    """
    query = select(ClusterSiteState).where(ClusterSiteState.site_id == site_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.scalar(query.execution_options(populate_existing=True))


def site_config(state: ClusterSiteState | None) -> SiteConfig:
    """The thresholds in force for a site (its overrides over the defaults)."""
    if state is None:
        return SiteConfig(params=ClusterParams(), rule=CaseRule(), tz=site_zone(None))
    return SiteConfig(
        params=ClusterParams.model_validate(state.cluster_params or {}),
        rule=CaseRule.model_validate(state.case_rule or {}),
        tz=site_zone(state.timezone),
    )


def configure_site(
    *,
    session: Session,
    site_id: int,
    timezone: str | None = None,
    cluster_params: ClusterParams | None = None,
    case_rule: CaseRule | None = None,
) -> SiteConfig:
    """Set a site's timezone, clustering thresholds and/or case rule (validated)."""
    ensure_site_state(session=session, site_id=site_id)
    state = session.get(ClusterSiteState, site_id, populate_existing=True)
    if state is None:  # pragma: no cover - the insert above guarantees it
        raise InvalidInput(f"site {site_id} has no clustering state")
    if timezone is not None:
        try:
            site_zone(timezone)
        except (KeyError, ValueError) as exc:
            raise InvalidInput(f"unknown timezone {timezone!r}") from exc
        state.timezone = timezone
    if cluster_params is not None:
        state.cluster_params = cluster_params.model_dump(mode="json")
    if case_rule is not None:
        state.case_rule = case_rule.model_dump(mode="json")
    session.flush()
    return site_config(state)


# -- numeric state <-> rows ---------------------------------------------------------
def to_state(
    cluster_id: int,
    total: bytes,
    count: int,
    exemplars: bytes,
    last_seen: datetime | None = None,
) -> ClusterState:
    """Decode a cluster's stored numeric state."""
    tot = np.frombuffer(total, dtype="<f8").astype(np.float64)
    ex = np.frombuffer(exemplars, dtype="<f4").astype(np.float32).reshape(-1, tot.shape[0])
    return ClusterState(
        id=cluster_id,
        total=tot,
        count=count,
        exemplars=list(ex),
        last_seen=None if last_seen is None else last_seen.timestamp(),
    )


def write_state(row: UnknownCluster, state: ClusterState) -> None:
    """Store a cluster's numeric state on its row."""
    row.total = np.asarray(state.total, dtype="<f8").tobytes()
    row.count = state.count
    row.exemplars = np.asarray(np.vstack(state.exemplars), dtype="<f4").tobytes()


def cluster_vectors(row: UnknownCluster) -> npt.NDArray[np.float32]:
    """The cluster's centroid and exemplars as rows (for matching against templates)."""
    state = to_state(row.id, row.total, row.count, row.exemplars)
    return np.vstack([state.centroid, *state.exemplars]).astype(np.float32)


def load_states(
    *, session: Session, site_id: int, model_id: str, seen_since: datetime | None = None
) -> list[ClusterState]:
    """Numeric state of the site's active clusters of one model, by id.

    ``seen_since`` leaves out clusters last seen before it: dormant for every
    sighting of the batch (``ClusterParams.horizon_days``), so never candidates.
    This is what keeps the work per batch bounded as strangers accumulate.
    """
    query = (
        select(
            UnknownCluster.id,
            UnknownCluster.total,
            UnknownCluster.count.label("n"),
            UnknownCluster.exemplars,
            UnknownCluster.last_seen,
        )
        .where(
            UnknownCluster.site_id == site_id,
            UnknownCluster.model_id == model_id,
            UnknownCluster.status == ClusterStatus.ACTIVE,
        )
        .order_by(UnknownCluster.id)
    )
    if seen_since is not None:
        query = query.where(UnknownCluster.last_seen >= seen_since)
    rows = session.execute(query)
    return [to_state(r.id, r.total, r.n, r.exemplars, r.last_seen) for r in rows]


# -- statistics -----------------------------------------------------------------------
def add_sighting_stats(
    row: UnknownCluster,
    *,
    sighting_id: int,
    started_at: datetime,
    entrance_id: int | None,
    quality: float,
    tz: ZoneInfo,
    rule: CaseRule,
) -> None:
    """Count one sighting in a cluster's days, night entries, entrances, times and crops."""
    # JSON columns are replaced, never mutated in place, so SQLAlchemy sees the change.
    day = local_day(started_at, tz).isoformat()
    if day not in row.days:
        row.days = sorted([*row.days, day])
    if is_night(started_at, tz, rule):
        row.night_entries = (row.night_entries or 0) + 1
    if entrance_id is not None and entrance_id not in row.entrances:
        row.entrances = sorted([*row.entrances, entrance_id])
    if row.first_seen is None or started_at < row.first_seen:
        row.first_seen = started_at
    if row.last_seen is None or started_at > row.last_seen:
        row.last_seen = started_at
    _set_best(
        row, [*zip(row.best_qualities, row.best_sightings, strict=True), (quality, sighting_id)]
    )


def _set_best(row: UnknownCluster, pairs: Iterable[tuple[float, int]]) -> None:
    # Highest quality first; equal qualities: the older sighting (lower id) first.
    best = sorted(set(pairs), key=lambda p: (-p[0], p[1]))[:BEST_CROPS]
    row.best_qualities = [float(q) for q, _ in best]
    row.best_sightings = [int(s) for _, s in best]


def merge_stats(survivor: UnknownCluster, absorbed: UnknownCluster) -> None:
    """Fold an absorbed cluster's statistics into the survivor's."""
    survivor.days = sorted(set(survivor.days) | set(absorbed.days))
    survivor.night_entries = (survivor.night_entries or 0) + (absorbed.night_entries or 0)
    survivor.entrances = sorted(set(survivor.entrances) | set(absorbed.entrances))
    survivor.first_seen = min(survivor.first_seen, absorbed.first_seen)
    survivor.last_seen = max(survivor.last_seen, absorbed.last_seen)
    _set_best(
        survivor,
        [
            *zip(survivor.best_qualities, survivor.best_sightings, strict=True),
            *zip(absorbed.best_qualities, absorbed.best_sightings, strict=True),
        ],
    )
    if survivor.suppression is None and absorbed.suppression is not None:
        survivor.suppression = absorbed.suppression
        survivor.suppressed_until = absorbed.suppressed_until
        survivor.occupant_id = absorbed.occupant_id
    survivor.count_since = _later(survivor.count_since, absorbed.count_since)


def _later(a: date | None, b: date | None) -> date | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def cluster_days(row: UnknownCluster) -> list[date]:
    """The cluster's distinct days seen, as dates."""
    return [date.fromisoformat(d) for d in row.days]


# -- the unit of work -----------------------------------------------------------------
def pending_sightings(*, session: Session, site_id: int, limit: int) -> Sequence[Any]:
    """The site's oldest unprocessed sightings (id order), locked where the database can."""
    query = (
        select(
            Sighting.id,
            Sighting.kind,
            Sighting.started_at,
            Sighting.entrance_id,
            Sighting.quality,
            Sighting.model_id,
            Sighting.embedding,
        )
        .where(Sighting.site_id == site_id, Sighting.processed.is_(False))
        .order_by(Sighting.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.execute(query).all()


def cluster_pending(
    *,
    session: Session,
    site_id: int,
    config: SiteConfig,
    limit: int = 1000,
    cache: StateCache | None = None,
) -> BatchResult:
    """Cluster up to ``limit`` of the site's unprocessed sightings (flush only).

    The caller must hold the site (:func:`claim_site`) so that no other worker
    clusters it at the same time. With a ``cache``, the clusters' numeric state
    is taken from it when still valid and staged back afterwards; the caller
    calls :meth:`StateCache.seal` once its own changes to the site are flushed.
    """
    result = BatchResult()
    if cache is not None:
        cache.begin(site_id)
    rows = pending_sightings(session=session, site_id=site_id, limit=limit)
    if not rows:
        return result
    result.processed = len(rows)
    unknown = [r for r in rows if r.kind == "unknown" and r.embedding is not None]
    result.unknown = len(unknown)
    final_cluster: dict[int, int] = {}
    by_model: dict[str, list[Any]] = {}
    for r in unknown:
        by_model.setdefault(r.model_id or "", []).append(r)

    for model_id, items in by_model.items():
        _cluster_model(
            cache=cache,
            session=session,
            site_id=site_id,
            model_id=model_id,
            items=items,
            config=config,
            result=result,
            final_cluster=final_cluster,
        )

    # Mark the whole batch processed in ONE statement (cluster ids by a CASE on
    # the id): per-cluster UPDATEs, or an executemany, were the largest fixed
    # cost of a pass at a real site's ~100 sightings a pass.
    session.flush()  # the clusters' rows first (an UPDATE ... WHERE would autoflush anyway)
    ids = [r.id for r in rows]
    cluster_of: Any = case(final_cluster, value=Sighting.id, else_=None) if final_cluster else None
    session.execute(
        update(Sighting)
        .where(Sighting.id.in_(ids))
        .values(processed=True, cluster_id=cluster_of)
        .execution_options(synchronize_session=False)
    )
    if unknown:
        result.last_event = max(r.started_at for r in unknown)
    session.flush()
    return result


def _cluster_model(
    *,
    cache: StateCache | None,
    session: Session,
    site_id: int,
    model_id: str,
    items: list[Any],
    config: SiteConfig,
    result: BatchResult,
    final_cluster: dict[int, int],
) -> None:
    horizon = config.params.horizon_days
    seen_since = (
        None if horizon is None else min(r.started_at for r in items) - timedelta(days=horizon)
    )
    states = None if cache is None else cache.take(session, site_id, model_id, seen_since)
    if states is None:
        states = load_states(
            session=session, site_id=site_id, model_id=model_id, seen_since=seen_since
        )
    new_rows: dict[int, UnknownCluster] = {}
    current: list[Any] = [None]

    def allocate() -> int:
        # Rows are inserted one at a time so ids grow with creation order: the
        # clusterer treats "lower id" as "older" for ties and merge survivors.
        r = current[0]
        row = UnknownCluster(
            site_id=site_id,
            model_id=model_id,
            status=ClusterStatus.ACTIVE,
            total=b"",
            count=0,
            exemplars=b"",
            days=[],
            night_entries=0,
            entrances=[],
            first_seen=r.started_at,
            last_seen=r.started_at,
            best_sightings=[],
            best_qualities=[],
        )
        session.add(row)
        session.flush()
        new_rows[row.id] = row
        return row.id

    clusterer = Clusterer(config.params, states, new_id=allocate)
    assigned: list[tuple[Any, int]] = []
    merges: list[tuple[int, int]] = []
    for r in items:
        current[0] = r
        vec = np.frombuffer(r.embedding, dtype="<f4")
        try:
            a = clusterer.add(vec, r.started_at.timestamp())
        except ValueError:
            log.warning("sighting %s has an unusable embedding; left unclustered", r.id)
            continue
        result.created += int(a.created)
        merges.extend(a.merged)
        assigned.append((r, a.cluster_id))

    result.merges.extend(merges)
    involved = {cid for _, cid in assigned} | {x for m in merges for x in m}
    rows_by_id = {
        row.id: row
        for row in session.scalars(select(UnknownCluster).where(UnknownCluster.id.in_(involved)))
    }
    for absorbed, survivor in merges:
        merge_stats(rows_by_id[survivor], rows_by_id[absorbed])
        rows_by_id[absorbed].status = ClusterStatus.MERGED
        rows_by_id[absorbed].merged_into_id = survivor
        rows_by_id[absorbed].count = 0
        session.execute(
            update(Sighting)
            .where(Sighting.cluster_id == absorbed)
            .values(cluster_id=survivor)
            .execution_options(synchronize_session=False)
        )
    for r, cid in assigned:
        live = clusterer.resolve(cid)
        final_cluster[r.id] = live
        add_sighting_stats(
            rows_by_id[live],
            sighting_id=r.id,
            started_at=r.started_at,
            entrance_id=r.entrance_id,
            quality=float(r.quality),
            tz=config.tz,
            rule=config.rule,
        )
    for cid in {clusterer.resolve(c) for c in involved}:
        if cid in clusterer.clusters:
            write_state(rows_by_id[cid], clusterer.clusters[cid])
            result.touched.add(cid)
    if cache is not None:
        cache.stage(session, site_id, model_id, list(clusterer.clusters.values()), seen_since)


class StateCache:
    """Clusters' numeric state kept between passes by one worker process.

    Loading and decoding every live cluster of a site (up to ``horizon_days``
    of strangers) is a fixed cost of every pass, whatever its size. The worker
    keeps what the clusterer ended with and reuses it next pass when nothing
    else changed the site's clusters. Validity: a fingerprint of the site's
    active clusters of the model (count, max id, max ``updated_at``, summed
    member count), taken after this worker's own changes are flushed
    (:meth:`seal`) and compared at the start of the next pass (:meth:`take`).
    Any other writer (another worker, a manager's action, a purge) updates a
    row, so the fingerprint moves and the state is loaded afresh. An entry is
    removed when taken, so a pass that fails before :meth:`seal` leaves nothing
    stale behind.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._valid: dict[tuple[str, int, str], _Cached] = {}
        self._staged: dict[tuple[str, int, str], _Cached] = {}

    @staticmethod
    def _key(session: Session, site_id: int, model_id: str) -> tuple[str, int, str]:
        url = session.get_bind().engine.url.render_as_string(hide_password=True)
        return (url, site_id, model_id)

    def begin(self, site_id: int) -> None:
        """Drop what an earlier pass on the site staged but never sealed (it failed)."""
        for key in [k for k in self._staged if k[1] == site_id]:
            del self._staged[key]

    def take(
        self, session: Session, site_id: int, model_id: str, seen_since: datetime | None
    ) -> list[ClusterState] | None:
        """The cached states if still valid (the entry is removed either way)."""
        entry = self._valid.pop(self._key(session, site_id, model_id), None)
        if (
            entry is None
            or (entry.since is not None and (seen_since is None or seen_since < entry.since))
            or entry.fingerprint != fingerprint(session=session, site_id=site_id, model_id=model_id)
        ):
            self.misses += 1
            return None
        self.hits += 1
        cut = None if seen_since is None else seen_since.timestamp()
        return [
            st for st in entry.states if cut is None or st.last_seen is None or st.last_seen >= cut
        ]

    def stage(
        self,
        session: Session,
        site_id: int,
        model_id: str,
        states: list[ClusterState],
        seen_since: datetime | None,
    ) -> None:
        """Keep a pass's final states, valid only once :meth:`seal` has run."""
        self._staged[self._key(session, site_id, model_id)] = _Cached(
            fingerprint=(), states=states, since=seen_since
        )

    def seal(self, session: Session, site_id: int) -> None:
        """Fingerprint the staged states of a site (call after the pass's last flush)."""
        for key in [k for k in self._staged if k[1] == site_id]:
            entry = self._staged.pop(key)
            entry.fingerprint = fingerprint(session=session, site_id=site_id, model_id=key[2])
            self._valid[key] = entry
        while len(self._valid) > self.max_entries:
            self._valid.pop(next(iter(self._valid)))

    def clear(self) -> None:
        """Forget everything (e.g. after a failed pass)."""
        self._valid.clear()
        self._staged.clear()


@dataclass(slots=True)
class _Cached:
    fingerprint: tuple[Any, ...]
    states: list[ClusterState]
    since: datetime | None


def fingerprint(*, session: Session, site_id: int, model_id: str) -> tuple[Any, ...]:
    """Changes whenever any active cluster of the site and model is written."""
    row = session.execute(
        select(
            func.count(),
            func.max(UnknownCluster.id),
            func.max(UnknownCluster.updated_at),
            func.coalesce(func.sum(UnknownCluster.count), 0),
        ).where(
            UnknownCluster.site_id == site_id,
            UnknownCluster.model_id == model_id,
            UnknownCluster.status == ClusterStatus.ACTIVE,
        )
    ).one()
    return tuple(row)


def recluster_site(
    *, session: Session, site_id: int, params: ClusterParams | None = None
) -> dict[int, int]:
    """Cluster the site's unknown sightings from scratch, in id order, without storing.

    Returns sighting id -> cluster label; compare groupings with
    :func:`server.clusters.algo.same_grouping`.
    """
    out: dict[int, int] = {}
    clusterers: dict[str, Clusterer] = {}
    counter = iter(range(1, 1 << 62))

    def new_id() -> int:
        # One id space across models, so labels of different models never collide.
        return next(counter)

    firsts: list[tuple[int, str, int]] = []
    rows = session.execute(
        select(Sighting.id, Sighting.model_id, Sighting.embedding, Sighting.started_at)
        .where(Sighting.site_id == site_id, Sighting.kind == "unknown")
        .order_by(Sighting.id)
    )
    for r in rows:
        if r.embedding is None:
            continue
        model = r.model_id or ""
        if model not in clusterers:
            clusterers[model] = Clusterer(params, new_id=new_id)
        c = clusterers[model]
        firsts.append(
            (
                r.id,
                r.model_id or "",
                c.add(np.frombuffer(r.embedding, "<f4"), r.started_at.timestamp()).cluster_id,
            )
        )
    for sid, model, cid in firsts:
        out[sid] = clusterers[model].resolve(cid)
    return out


def touch(row: UnknownCluster) -> None:
    """Mark a cluster updated now (actions that change it without new sightings)."""
    row.updated_at = utcnow()
