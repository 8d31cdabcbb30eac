"""Retention purge: expired face data goes, open cases keep theirs, dry runs change nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.cases.models import Case
from server.cli import main
from server.clusters.models import UnknownCluster
from server.clusters.service import claim_site
from server.db import utcnow
from server.occupants.models import FaceTemplate
from server.occupants.service import gallery_entries
from server.privacy.purge import delete_expired, purge
from server.sightings import crops
from server.sightings.models import Sighting, SightingCrop
from server.sites.models import Site
from tests.server.clusters.support import new_session, work
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import World, build, sightings_with_crops


def snapshot(s: Session) -> dict[str, Any]:
    """Every piece of face data and what a purge writes, to compare before/after."""
    return {
        "crops": sorted(s.scalars(select(SightingCrop.sighting_id))),
        "embeddings": sorted(s.scalars(select(Sighting.id).where(Sighting.embedding.is_not(None)))),
        "has_crop": sorted(s.scalars(select(Sighting.id).where(Sighting.has_crop.is_(True)))),
        "cluster_vectors": sorted(
            s.scalars(select(UnknownCluster.id).where(func.length(UnknownCluster.total) > 0))
        ),
        "cluster_status": sorted(s.execute(select(UnknownCluster.id, UnknownCluster.status)).all()),
        "templates": sorted(s.scalars(select(FaceTemplate.id))),
        "gallery": sorted(s.scalars(select(Site.gallery_version))),
        "audit": s.scalar(select(func.count()).select_from(AuditEvent)),
    }


@pytest.fixture
def world(engine: Engine, device: DeviceCreds) -> World:
    return build(engine, device.site_id, device.device_id)


def test_purge_removes_expired_spares_open_and_recently_closed_cases(
    engine: Engine, world: World
) -> None:
    # The sightings are from March; the visitor case was closed just now.
    with new_session(engine) as s:
        before = snapshot(s)
        gallery_before = s.get(Site, world.site_id).gallery_version  # type: ignore[union-attr]
        [dry] = purge(session=s, dry_run=True)
        assert snapshot(s) == before  # a dry run changes nothing, audit log included
        s.rollback()
    with new_session(engine) as s:
        [result] = purge(session=s)
        s.commit()
    assert (result.crops, result.embeddings, result.templates, result.occupants) == (
        dry.crops,
        dry.embeddings,
        dry.templates,
        dry.occupants,
    )
    # Only the passer-by's sighting had expired and was unprotected.
    assert (result.crops, result.embeddings) == (1, 1)
    assert (result.templates, result.occupants) == (2, 1)
    with new_session(engine) as s:
        after = snapshot(s)
        protected = world.open_sightings | world.closed_sightings
        assert set(after["crops"]) == protected
        assert set(after["embeddings"]) == protected
        assert set(after["has_crop"]) == protected
        [passerby] = world.passerby_sightings
        assert crops.get(session=s, sighting_id=passerby) is None
        assert s.get(Sighting, passerby).embedding is None  # type: ignore[union-attr]
        open_one = min(world.open_sightings)
        assert crops.get(session=s, sighting_id=open_one) is not None
        # The moved-out occupant's templates left; the gallery version moved so edges resync.
        left = set(s.scalars(select(FaceTemplate.occupant_id)))
        assert left == {world.active_occupant}
        site = s.get(Site, world.site_id)
        assert site is not None and site.gallery_version > gallery_before
        assert {e.occupant_id for e in gallery_entries(session=s, site=site)} == {
            world.active_occupant
        }
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "privacy.purge")).one()
        assert event.detail is not None and event.detail["crops"] == 1
    # A second run finds nothing and writes nothing.
    with new_session(engine) as s:
        [again] = purge(session=s)
        s.commit()
        assert not again.anything
        assert snapshot(s) == after


def test_closed_case_loses_face_data_after_its_period_open_case_never(
    engine: Engine, world: World
) -> None:
    later = utcnow() + timedelta(days=31)  # past the visitor case's 30-day period
    with new_session(engine) as s:
        [result] = purge(session=s, now=later)
        s.commit()
    assert result.closed_cases == 1
    assert result.crops == len(world.closed_sightings) + len(world.passerby_sightings)
    with new_session(engine) as s:
        assert set(s.scalars(select(SightingCrop.sighting_id))) == set(world.open_sightings)
        closed = s.get(Case, world.closed_case)
        assert closed is not None and (closed.status, closed.outcome) == ("closed", "visitor")
        cluster = s.get(UnknownCluster, closed.cluster_id)
        assert cluster is not None and cluster.total == b"" and cluster.exemplars == b""
        assert cluster.days  # the history stays: days seen, counts
        open_case = s.get(Case, world.open_case)
        assert open_case is not None
        open_cluster = s.get(UnknownCluster, open_case.cluster_id)
        assert open_cluster is not None and open_cluster.total != b""


def test_site_settings_drive_the_purge(engine: Engine, world: World) -> None:
    with new_session(engine) as s:
        site = s.get(Site, world.site_id)
        assert site is not None
        site.crop_retention_days = 3650  # nothing is old enough
        site.moved_out_template_days = 3650
        s.commit()
        [result] = purge(session=s, dry_run=True)
        assert not result.anything


def test_delete_expired_spares_open_case_crops(engine: Engine, world: World) -> None:
    with new_session(engine) as s:
        deleted = delete_expired(session=s, now=utcnow() + timedelta(days=400))
        s.commit()
        assert deleted == len(world.closed_sightings) + len(world.passerby_sightings)
        assert set(s.scalars(select(SightingCrop.sighting_id))) == set(world.open_sightings)


def test_cli_purge_dry_run_then_real(
    engine: Engine,
    world: World,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "dev")
    monkeypatch.setenv("LINTEL_CROP_KEY", "A" * 43 + "=")
    with new_session(engine) as s:
        before = snapshot(s)
    assert main(["purge", "--dry-run", "--site", str(world.site_id), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["dry_run"] is True and row["crops"] == 1 and row["templates"] == 2
    with new_session(engine) as s:
        assert snapshot(s) == before
    assert main(["purge", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["dry_run"] is False and row["crops"] == 1
    with new_session(engine) as s:
        assert snapshot(s) != before


def test_a_site_held_by_the_clustering_worker_is_left_for_the_next_run(
    engine: Engine, world: World
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises writers instead")
    worker = new_session(engine)
    try:
        assert claim_site(session=worker, site_id=world.site_id) is not None  # the worker's lock
        with new_session(engine) as s:
            assert purge(session=s) == []
            s.commit()
    finally:
        worker.rollback()
        worker.close()
    with new_session(engine) as s:
        [result] = purge(session=s)
        s.commit()
    assert result.crops == 1


def test_retention_counts_from_arrival_not_the_device_clock(
    engine: Engine, device: DeviceCreds
) -> None:
    # A sighting dated 2199 (stored before uploads checked the clock) and one
    # from a box whose clock is 5 years slow both arrived now: both keep their
    # face data for the full retention period, and both lose it once that
    # period has passed since arrival (by its date, the first never would).
    now = utcnow()
    fast = sightings_with_crops(engine, device.device_id, 71, [0])
    slow = sightings_with_crops(engine, device.device_id, 72, [0])
    with new_session(engine) as s:
        for uuids, started in ((fast, now.replace(year=2199)), (slow, now.replace(year=2021))):
            s.execute(
                update(Sighting)
                .where(Sighting.uuid.in_(uuids))
                .values(
                    started_at=started,
                    ended_at=started + timedelta(seconds=3),
                    received_at=now,
                    processed=True,
                )
            )
        s.commit()
        [kept] = purge(session=s, now=now + timedelta(days=29))
        s.rollback()
        assert (kept.crops, kept.embeddings) == (0, 0)
        [gone] = purge(session=s, now=now + timedelta(days=31))
        s.commit()
        assert (gone.crops, gone.embeddings) == (2, 2)
        assert not s.scalars(select(SightingCrop.sighting_id)).all()


def test_a_cluster_dated_in_the_future_loses_its_vectors_by_arrival(
    engine: Engine, device: DeviceCreds
) -> None:
    # Data stored before uploads checked the clock: sightings dated 2199 made a
    # cluster whose last_seen is 2199. By its date it would never age.
    uuids = sightings_with_crops(engine, device.device_id, 73, [0, 1])
    work(engine)
    now = utcnow()
    with new_session(engine) as s:
        cluster_id = s.scalar(select(Sighting.cluster_id).where(Sighting.uuid == uuids[0]))
        assert cluster_id is not None
        s.execute(
            update(UnknownCluster)
            .where(UnknownCluster.id == cluster_id)
            .values(last_seen=now.replace(year=2199))
        )
        s.execute(update(Sighting).where(Sighting.uuid.in_(uuids)).values(received_at=now))
        s.commit()
        [kept] = purge(session=s, now=now + timedelta(days=29))
        s.rollback()
        assert kept.clusters_wiped == 0
        [gone] = purge(session=s, now=now + timedelta(days=31))
        s.commit()
        assert gone.clusters_wiped == 1 and gone.embeddings == 2
        cluster = s.get(UnknownCluster, cluster_id)
        assert cluster is not None and cluster.total == b"" and cluster.exemplars == b""
