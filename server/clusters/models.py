"""Unknown-face clusters (陌生人档案) and the clustering worker's per-site state."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.cases.rules import DEFAULT_TIMEZONE
from server.clusters.enums import ClusterStatus
from server.db import Base, UTCDateTime, utcnow


class ClusterSiteState(Base):
    """Per-site clustering settings and the row the worker locks to own a site.

    The worker takes a site with ``SELECT ... FOR UPDATE SKIP LOCKED`` on this
    row, so two workers never cluster one site at once (clustering a site is
    sequential by nature: each sighting depends on the clusters before it).
    ``cluster_params`` / ``case_rule`` hold overrides of
    :class:`server.clusters.algo.ClusterParams` / :class:`server.cases.rules.CaseRule`
    (null: the defaults). ``template_cursor`` is the highest face template id
    already checked against the site's clusters (retroactive resolution).
    """

    __tablename__ = "cluster_site_state"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    cluster_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    case_rule: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    template_cursor: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class UnknownCluster(Base):
    """Unknown sightings of one site presumed to be one person.

    ``total`` (float64 bytes), ``count`` and ``exemplars`` (float32 bytes, row
    after row) are :class:`server.clusters.algo.ClusterState` as stored.
    ``days`` are the distinct site-local days seen (ISO strings, sorted);
    ``best_sightings`` the ids of the best-quality sightings (their crops are
    what a manager sees; their embeddings become templates on enrolment).
    """

    __tablename__ = "unknown_clusters"
    __table_args__ = (
        Index("ix_unknown_clusters_site_id_status", "site_id", "status"),
        # SQLite: AUTOINCREMENT, so an erased row's id never names a later one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=ClusterStatus.ACTIVE)
    merged_into_id: Mapped[int | None] = mapped_column(Integer)
    total: Mapped[bytes] = mapped_column(LargeBinary)
    count: Mapped[int] = mapped_column(Integer, default=0)
    exemplars: Mapped[bytes] = mapped_column(LargeBinary)
    days: Mapped[list[str]] = mapped_column(JSON, default=list)
    night_entries: Mapped[int] = mapped_column(Integer, default=0)
    entrances: Mapped[list[int]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    best_sightings: Mapped[list[int]] = mapped_column(JSON, default=list)
    best_qualities: Mapped[list[float]] = mapped_column(JSON, default=list)
    count_since: Mapped[date | None] = mapped_column(Date)
    # A Suppression (server/clusters/enums.py); null: the cluster may open a case.
    suppression: Mapped[str | None] = mapped_column(String(16))
    suppressed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    occupant_id: Mapped[int | None] = mapped_column(ForeignKey("occupants.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
