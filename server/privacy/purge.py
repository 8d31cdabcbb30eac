"""Retention: the purge that removes face data past each site's retention.

What goes, per site (:class:`~server.sites.models.Site` settings):

- unknown sightings that *arrived* more than ``crop_retention_days`` ago
  (``received_at``, the server's clock: a device's clock may be wrong, and a
  sighting it dated in the future would otherwise never age): their crop and
  their embedding (the sighting row stays: time, entrance, quality, no face);
- clusters last seen before that cutoff (or dated beyond any accepted clock
  skew) none of whose sightings arrived since: their vectors (centroid sum and
  exemplars), and an active one is retired (a later sighting starts afresh);
- clusters whose case closed more than ``closed_case_retention_days`` ago:
  every crop and embedding of their sightings and their vectors; the case
  keeps its outcome, notes and history;
- occupants moved out ``moved_out_template_days`` ago (0: at once): their
  face templates; the gallery version is bumped, so every edge drops them on
  its next sync (the edge replaces its cached gallery whole).

Spared: everything of a cluster with an open or assigned case, and of a
cluster whose case closed within ``closed_case_retention_days``; sightings
the clustering worker has not processed yet.

:func:`purge` with ``dry_run=True`` counts and changes nothing (not even the
audit log). A real run records one ``privacy.purge`` audit event per site
that lost anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from server.audit.service import record
from server.cases.enums import NOT_CLOSED, CaseStatus
from server.cases.models import Case
from server.clusters.enums import ClusterStatus
from server.clusters.models import ClusterSiteState, UnknownCluster
from server.clusters.service import claim_site, ensure_site_state
from server.db import checkpoint_after_commit, session_scope, utcnow
from server.devices.snapshots import purge_snapshots
from server.occupants import service as occupants
from server.occupants.enums import OccupantStatus
from server.occupants.models import FaceTemplate, Occupant
from server.sightings import crops
from server.sightings.models import Sighting, SightingCrop
from server.sites.models import Site
from server.users.service import delete_ended_web_sessions

log = logging.getLogger(__name__)

_MAX_AHEAD = timedelta(days=1)
"""The most any ingest setting lets a sighting lie in the future (max_clock_ahead_s <= 1 day)."""


@dataclass(frozen=True, slots=True)
class SitePurge:
    """What a purge removed (or, in a dry run, would remove) from one site."""

    site_id: int
    site: str
    crops: int
    embeddings: int
    clusters_wiped: int
    closed_cases: int
    templates: int
    occupants: int
    gallery_version: int
    snapshots: int = 0  # camera snapshots past the site's snapshot retention (issue 17 D)

    @property
    def anything(self) -> bool:
        """Whether this site lost any face data."""
        return bool(
            self.crops or self.embeddings or self.clusters_wiped or self.templates or self.snapshots
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def hold_site(*, session: Session, site_id: int, wait: bool) -> bool:
    """Lock the site against the clustering worker for this transaction (PostgreSQL).

    Wiping a cluster's vectors while a worker clusters the same site would be
    overwritten by the worker's write-back (or resurrect a retired cluster), so
    purge and erasure take the worker's own per-site row lock first. With
    ``wait=False`` a site the worker holds is skipped (False); the next purge
    gets it. SQLite serialises writers anyway.
    """
    ensure_site_state(session=session, site_id=site_id)
    if wait:
        query = select(ClusterSiteState.site_id).where(ClusterSiteState.site_id == site_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        return session.scalar(query) is not None
    return claim_site(session=session, site_id=site_id) is not None


def open_case_sightings(*, session: Session, site_id: int | None = None) -> set[int]:
    """Ids of sightings in clusters that have an open or assigned case."""
    query = (
        select(Sighting.id)
        .join(Case, Case.cluster_id == Sighting.cluster_id)
        .where(Case.status.in_(NOT_CLOSED))
    )
    if site_id is not None:
        query = query.where(Sighting.site_id == site_id)
    return set(session.scalars(query))


def delete_expired(*, session: Session, now: datetime | None = None) -> int:
    """Delete crops past their stored expiry, sparing those of open cases; returns how many.

    The stored expiry is the site's retention at upload time; the purge
    (:func:`server.privacy.purge.purge`) applies the site's current setting.
    """
    now = now or utcnow()
    query = select(SightingCrop.sighting_id).where(SightingCrop.expires_at < now)
    ids = set(session.scalars(query))
    ids -= open_case_sightings(session=session)
    return crops.delete_many(session=session, sighting_ids=sorted(ids))


def _protected_clusters(session: Session, site: Site, now: datetime) -> set[int]:
    """Clusters whose face data stays: a case not closed, or closed within the period."""
    recent = now - timedelta(days=site.closed_case_retention_days)
    return set(
        session.scalars(
            select(Case.cluster_id).where(
                Case.site_id == site.id,
                or_(Case.status.in_(NOT_CLOSED), Case.closed_at >= recent),
            )
        )
    )


def _face_sightings(session: Session, where: list[object]) -> list[tuple[int, bool, bool]]:
    """(id, has_crop, has_embedding) of unknown sightings still holding face data."""
    rows = session.execute(
        select(Sighting.id, Sighting.has_crop, Sighting.embedding.is_not(None)).where(
            Sighting.kind == "unknown",
            or_(Sighting.has_crop.is_(True), Sighting.embedding.is_not(None)),
            *where,  # type: ignore[arg-type]
        )
    ).all()
    return [(int(r[0]), bool(r[1]), bool(r[2])) for r in rows]


def _purge_site(session: Session, site: Site, now: datetime, *, dry_run: bool) -> SitePurge:
    protected = _protected_clusters(session, site, now)
    cutoff = now - timedelta(days=site.crop_retention_days)
    closed_before = now - timedelta(days=site.closed_case_retention_days)

    # Clusters of cases closed long enough ago lose all their face data.
    stale_closed = (
        set(
            session.scalars(
                select(Case.cluster_id).where(
                    Case.site_id == site.id,
                    Case.status == CaseStatus.CLOSED,
                    Case.closed_at < closed_before,
                )
            )
        )
        - protected
    )
    not_protected = (
        Sighting.cluster_id.is_(None) | Sighting.cluster_id.not_in(protected)
        if protected
        else true()
    )
    expired = _face_sightings(
        session,
        [
            Sighting.site_id == site.id,
            Sighting.processed.is_(True),
            Sighting.received_at < cutoff,
            not_protected,
        ],
    )
    of_closed = (
        _face_sightings(
            session, [Sighting.site_id == site.id, Sighting.cluster_id.in_(stale_closed)]
        )
        if stale_closed
        else []
    )
    targets = {sid: (crop, emb) for sid, crop, emb in expired + of_closed}

    # A cluster's last_seen is a device's clock; what decides is whether any
    # of its sightings arrived since the cutoff. A last_seen beyond anything
    # ingest accepts (stored before uploads checked the clock) ages by arrival alone.
    arrived_since = select(Sighting.cluster_id).where(
        Sighting.site_id == site.id,
        Sighting.received_at >= cutoff,
        Sighting.cluster_id.is_not(None),
    )
    wipe_query = select(UnknownCluster.id).where(
        UnknownCluster.site_id == site.id,
        func.length(UnknownCluster.total) > 0,
        or_(
            and_(
                or_(UnknownCluster.last_seen < cutoff, UnknownCluster.last_seen > now + _MAX_AHEAD),
                UnknownCluster.id.not_in(arrived_since),
            ),
            UnknownCluster.id.in_(stale_closed),
        ),
    )
    wipe = set(session.scalars(wipe_query)) - protected

    moved_cutoff = (now - timedelta(days=site.moved_out_template_days)).date()
    moved = [
        occ
        for occ in session.scalars(
            select(Occupant).where(
                Occupant.site_id == site.id,
                Occupant.status == OccupantStatus.MOVED_OUT,
                Occupant.id.in_(
                    select(FaceTemplate.occupant_id).where(FaceTemplate.site_id == site.id)
                ),
            )
        )
        if _moved_out_on(occ) <= moved_cutoff
    ]
    templates = int(
        session.scalar(
            select(func.count())
            .select_from(FaceTemplate)
            .where(FaceTemplate.occupant_id.in_([o.id for o in moved]))
        )
        or 0
    )

    if not dry_run:
        crops.delete_many(
            session=session, sighting_ids=[sid for sid, (crop, _e) in targets.items() if crop]
        )
        emb_ids = sorted(sid for sid, (_c, emb) in targets.items() if emb)
        for start in range(0, len(emb_ids), 500):
            session.execute(
                update(Sighting)
                .where(Sighting.id.in_(emb_ids[start : start + 500]))
                .values(embedding=None)
                .execution_options(synchronize_session=False)
            )
        for row in session.scalars(select(UnknownCluster).where(UnknownCluster.id.in_(wipe))):
            # The vectors are face data; the counts, days and entrances are not.
            row.total = b""
            row.exemplars = b""
            if row.status == ClusterStatus.ACTIVE:
                row.status = ClusterStatus.RETIRED
        for occ in moved:
            occupants.delete_templates(session=session, occupant_id=occ.id)
        session.flush()
        if targets or wipe or moved:
            # SQLite: until a checkpoint, the purged face data is readable in -wal.
            checkpoint_after_commit(session)
        session.refresh(site, ["gallery_version"])
    return SitePurge(
        site_id=site.id,
        site=site.name,
        crops=sum(1 for crop, _e in targets.values() if crop),
        embeddings=sum(1 for _c, emb in targets.values() if emb),
        clusters_wiped=len(wipe),
        closed_cases=len(
            set(
                session.scalars(
                    select(Case.id).where(
                        Case.cluster_id.in_(stale_closed & wipe), Case.status == CaseStatus.CLOSED
                    )
                )
            )
        ),
        templates=templates,
        occupants=len(moved),
        gallery_version=site.gallery_version,
        snapshots=purge_snapshots(session=session, site=site, now=now, dry_run=dry_run),
    )


def _moved_out_on(occ: Occupant) -> date:
    if occ.move_out is not None:
        return occ.move_out
    return occ.updated_at.date()


def purge(
    *,
    session: Session,
    now: datetime | None = None,
    site_id: int | None = None,
    dry_run: bool = False,
    actor: str = "purge",
) -> list[SitePurge]:
    """Apply every site's retention (or one site's); flushes, the caller commits.

    A site the clustering worker holds right now is left for the next run
    (not in the result).
    """
    now = now or utcnow()
    query = select(Site).order_by(Site.id)
    if site_id is not None:
        query = query.where(Site.id == site_id)
    out = []
    for site in session.scalars(query).all():
        if not dry_run and not hold_site(session=session, site_id=site.id, wait=False):
            log.info("purge: site %s is being clustered; next time", site.id)
            continue
        result = _purge_site(session, site, now, dry_run=dry_run)
        if result.anything and not dry_run:
            detail = result.as_dict()
            detail.pop("site")
            record(
                session=session,
                actor=actor,
                action="privacy.purge",
                object_type="site",
                object_id=site.id,
                site_id=site.id,
                detail=detail,
            )
        out.append(result)
    return out


class PurgeSchedule:
    """Runs :func:`purge` at most every ``interval_s`` (the worker's hook)."""

    def __init__(self, interval_s: float = 3600.0, first_after_s: float = 60.0) -> None:
        self.interval_s = interval_s
        # Not at once: a worker started for a short job should not purge first thing,
        # but one restarted often must still purge, so not a whole interval either.
        self._due = time.monotonic() + first_after_s

    def tick(self, factory: sessionmaker[Session]) -> list[SitePurge] | None:
        """Purge if it is due; None when it was not."""
        now = time.monotonic()
        if now < self._due:
            return None
        self._due = now + self.interval_s
        with factory() as session:
            site_ids = list(session.scalars(select(Site.id).order_by(Site.id)))
        results: list[SitePurge] = []
        for site_id in site_ids:
            # One transaction per site: the site lock and the audit chain's lock
            # (PostgreSQL) are held for one site's purge, not the whole district's.
            with session_scope(factory) as session:
                results += purge(session=session, site_id=site_id, actor="worker")
        with session_scope(factory) as session:
            # Web sessions that ended (server/web/session.py) leave the table too.
            ended = delete_ended_web_sessions(session=session)
        if ended:
            log.info("purge: %d ended web sessions deleted", ended)
        for r in results:
            if r.anything:
                log.info(
                    "purge: site %s: %d crops, %d embeddings, %d clusters, %d templates",
                    r.site_id,
                    r.crops,
                    r.embeddings,
                    r.clusters_wiped,
                    r.templates,
                )
        return results
