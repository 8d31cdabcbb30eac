"""EdgeDaemon in-process against the real server app (SQLite): gallery sync with
ETag and deletions, offline start from the cached gallery, the forwarder's
batch halving and dead table, sighting ids. No models: the daemon's engine is
a stub (these paths never run the pipeline)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import cv2
import httpx
import numpy as np
import pytest

from edge.client import LintelClient
from edge.daemon.config import CameraConfig, DeviceConfig, EdgeConfig, ServerConfig
from edge.daemon.run import DaemonEngine, EdgeDaemon
from edge.face.types import BBox
from edge.pipeline.results import TrackResult
from server.app import create_app
from server.db import make_engine, make_session_factory
from server.devices.service import create_device
from server.occupants.service import add_template, delete_templates, upsert_occupant
from server.settings import Settings
from server.sites.service import create_site
from tests.server.asgi import SyncASGITransport

MODEL = "buffalo_s/w600k_mbf"


@dataclass
class StubEngine:
    model_id: str = MODEL
    threshold: float = 0.4


class Recorder(httpx.BaseTransport):
    """Passes requests on and remembers (method, path, status) of each."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.calls.append((request.method, request.url.path, response.status_code))
        return response


class Server:
    def __init__(self, tmp: Path, *, max_body_bytes: int = 8 * 1024 * 1024) -> None:
        settings = Settings(
            env="test",
            secret_key="daemon-test-secret-0000000000",  # type: ignore[arg-type]
            data_dir=tmp,
            max_body_bytes=max_body_bytes,
        )
        self.engine = make_engine(settings.sqlalchemy_url)
        self.app = create_app(settings, engine=self.engine)
        self.transport = Recorder(SyncASGITransport(self.app))
        self.factory = make_session_factory(self.engine)
        with self.factory() as s:
            site = create_site(session=s, name="Daemon Court", model_id=MODEL)
            _dev, self.token = create_device(session=s, site_id=site.id, name="gate")
            self.site_id = site.id
            s.commit()

    def enrol(self, seed: int) -> tuple[int, np.ndarray]:
        vec = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
        vec /= np.linalg.norm(vec)
        with self.factory() as s:
            occ = upsert_occupant(session=s, site_id=self.site_id, name=f"p{seed}")
            add_template(session=s, occupant_id=occ.id, embedding=vec, model_id=MODEL)
            s.commit()
            return occ.id, vec

    def forget(self, occupant_id: int) -> None:
        with self.factory() as s:
            delete_templates(session=s, occupant_id=occupant_id)
            s.commit()

    def sightings(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT COUNT(*) FROM sightings").scalar_one())

    def client(self) -> LintelClient:
        return LintelClient(
            "http://testserver", self.token, transport=self.transport, model_id=MODEL
        )

    def close(self) -> None:
        self.transport.inner.close()
        self.engine.dispose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server")
    yield srv
    srv.close()


def config(data_dir: Path, **server: Any) -> EdgeConfig:
    return EdgeConfig(
        device=DeviceConfig(name="gate", data_dir=data_dir),
        server=ServerConfig(url="http://testserver", **server),
        cameras=[CameraConfig(name="door", source="rtsp://192.0.2.1/stream")],
    )


def daemon(data_dir: Path, client: LintelClient, **server: Any) -> EdgeDaemon:
    return EdgeDaemon(
        config(data_dir, **server), engine=cast(DaemonEngine, StubEngine()), client=client
    )


def test_gallery_sync_etag_deletion_and_offline_start(tmp_path: Path, server: Server) -> None:
    alice, alice_vec = server.enrol(1)
    bob, bob_vec = server.enrol(2)
    edge = daemon(tmp_path / "edge", server.client())
    cache = tmp_path / "edge" / "gallery.json"

    assert edge.gallery_sync.sync_once() is True
    assert server.transport.calls[-1] == ("GET", "/api/v1/device/gallery", 200)
    assert edge.gallery_sync.gallery is not None
    both = edge.gallery_sync.gallery.match(np.stack([alice_vec, bob_vec]))
    assert [m.identity for m in both] == [str(alice), str(bob)]
    assert {t["occupant_id"] for t in json.loads(cache.read_text())["templates"]} == {alice, bob}

    # Unchanged: the ETag gets a 304 and the gallery stays.
    assert edge.gallery_sync.sync_once() is False
    assert server.transport.calls[-1] == ("GET", "/api/v1/device/gallery", 304)
    assert edge.gallery_sync.gallery.match(bob_vec)[0].identity == str(bob)

    # Bob's templates are deleted on the server: they leave the box's cache too.
    bob_b64 = json.loads(cache.read_text())["templates"][1]["embedding_b64"]
    server.forget(bob)
    assert edge.gallery_sync.sync_once() is True
    cached = json.loads(cache.read_text())
    assert [t["occupant_id"] for t in cached["templates"]] == [alice]
    assert bob_b64 not in cache.read_text()
    assert edge.gallery_sync.gallery.match(bob_vec)[0].identity is None
    assert edge.gallery_sync.gallery.match(alice_vec)[0].identity == str(alice)
    version = edge.gallery_sync.version
    edge.outbox.close()

    # Reboot without network: the cached gallery still matches residents.
    offline = LintelClient("http://127.0.0.1:9", server.token, timeout=0.5, model_id=MODEL)
    edge2 = daemon(tmp_path / "edge", offline)
    assert edge2.gallery_sync.gallery is not None and edge2.gallery_sync.version == version
    assert edge2.gallery_sync.sync_once() is False  # unreachable: keep what we have
    assert edge2.gallery_sync.gallery.match(alice_vec)[0].identity == str(alice)
    assert edge2.gallery_sync.gallery.match(bob_vec)[0].identity is None
    edge2.outbox.close()
    offline.close()


def _track(track_id: int, started_at: float, *, crop: bytes | None) -> TrackResult:
    emb = np.random.default_rng(track_id).standard_normal(512).astype(np.float32)
    return TrackResult(
        track_id=track_id,
        start_frame=track_id * 10,
        end_frame=track_id * 10 + 8,
        started_at=started_at,
        ended_at=started_at + 1.5,
        identity=None,
        best_candidate=None,
        similarity=0.0,
        quality=0.8,
        embedding=emb / np.linalg.norm(emb),
        faces_used=3,
        hits=8,
        model_id=MODEL,
        bbox=BBox(10, 10, 90, 110),
        best_frame=track_id * 10 + 4,
        crop_jpeg=crop,
    )


def _noise_jpeg(seed: int, side: int = 96) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf)


def test_sighting_ids_are_stable_per_track_and_distinct_across_tracks(
    tmp_path: Path, server: Server
) -> None:
    edge = daemon(tmp_path / "edge", server.client())
    origin = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    a = edge.cameras.sighting("door", _track(1, 12.0, crop=None), origin)
    assert a.id == edge.cameras.sighting("door", _track(1, 12.0, crop=None), origin).id
    assert a.started_at == datetime(2026, 11, 20, 10, 0, 12, tzinfo=UTC)
    others = {
        # same time, other track
        edge.cameras.sighting("door", _track(2, 12.0, crop=None), origin).id,
        edge.cameras.sighting("door", _track(1, 12.0, crop=None), None).id,  # other time
        edge.cameras.sighting("garage", _track(1, 12.0, crop=None), origin).id,  # other camera
    }
    assert a.id not in others and len(others) == 3
    edge.outbox.close()


def test_forwarder_halves_oversized_batches_and_buries_only_the_bad_sighting(
    tmp_path: Path,
) -> None:
    srv = Server(tmp_path / "server", max_body_bytes=64 * 1024)
    try:
        edge = daemon(tmp_path / "edge", srv.client(), batch_size=16)
        now = time.time()
        for i in range(12):  # ~12 KiB crops: 12 of them exceed the 64 KiB body limit
            assert edge.cameras.record("door", _track(i, now + i, crop=_noise_jpeg(i)))
        bad = _track(99, now + 99, crop=None)
        edge.outbox.put(
            edge.cameras.sighting("door", bad, None).model_copy(update={"model_id": "other/model"})
        )
        assert edge.forwarder.drain(time.monotonic() + 30) is True
        statuses = [c[2] for c in srv.transport.calls if c[1].endswith("/sightings")]
        assert 413 in statuses and statuses[-1] == 200
        stats = edge.outbox.stats()
        assert (stats.depth, stats.delivered, stats.dead, stats.queued) == (0, 12, 1, 13)
        assert srv.sightings() == 12
        # Re-sending what the server has creates nothing twice.
        for i in range(3):
            edge.cameras.record("door", _track(i, now + i, crop=_noise_jpeg(i)))
        assert edge.forwarder.drain(time.monotonic() + 30) is True
        assert srv.sightings() == 12
        edge.outbox.close()
    finally:
        srv.close()


def test_a_box_with_its_clock_ahead_gets_its_sightings_buried_with_the_reason_not_retried(
    tmp_path: Path, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    edge = daemon(tmp_path / "edge", server.client())
    now = time.time()
    assert edge.cameras.record("door", _track(1, now, crop=None))
    assert edge.cameras.record("door", _track(2, now + 2 * 3600, crop=None))  # clock 2 h fast
    with caplog.at_level(logging.ERROR, logger="edge.daemon"):
        assert edge.forwarder.drain(time.monotonic() + 30) is True  # settled, not looping
    stats = edge.outbox.stats()
    assert (stats.depth, stats.delivered, stats.dead) == (0, 1, 1)
    assert server.sightings() == 1
    with sqlite3.connect(edge.outbox.path) as conn:
        [(reason,)] = conn.execute("SELECT error FROM dead").fetchall()
    assert "ahead of the server's clock" in reason
    assert any("ahead of the server's clock" in r.getMessage() for r in caplog.records)
    # Sent again (a restart, a re-queue): refused again, still nothing stored.
    assert edge.cameras.record("door", _track(2, now + 2 * 3600, crop=None))
    assert edge.forwarder.drain(time.monotonic() + 30) is True
    assert server.sightings() == 1
    edge.outbox.close()


def test_heartbeat_reports_cameras_outbox_and_model(tmp_path: Path, server: Server) -> None:
    edge = daemon(tmp_path / "edge", server.client())
    edge.cameras.record("door", _track(1, time.time(), crop=None))
    hb = edge.reporter.heartbeat_payload()
    assert hb.model_id == MODEL and hb.outbox_depth == 1 and hb.outbox_dropped == 0
    assert set(hb.cameras) == {"door"} and hb.cameras["door"].state == "starting"
    assert hb.cameras["door"].last_track_at is not None  # the devices page's "last sighting"
    ack = server.client().heartbeat(hb)
    assert ack.gallery_version >= 1
    status = edge.status()
    assert status["cameras"]["door"]["tracks"] == 1 and status["outbox"]["queued"] == 1
    edge.outbox.close()


class HangingCapture:
    """A camera that delivers ``frames`` frames, then hangs inside grab() (stream
    open, nothing arrives) until it is released: what FFmpeg's read timeout
    misses on some USB drivers and RTSP servers."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.grabbed = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:
        return True

    def grab(self) -> bool:
        if self.grabbed >= self.frames:
            self.released.wait(30)
            return False
        self.grabbed += 1
        time.sleep(0.02)
        return True

    def retrieve(self) -> tuple[bool, Any]:
        return True, np.zeros((48, 64, 3), np.uint8)

    def get(self, prop_id: int) -> float:
        return 25.0 if prop_id == cv2.CAP_PROP_FPS else 64.0

    def release(self) -> None:
        self.released.set()


@dataclass
class BlindEngine(StubEngine):
    """Sees no face (the watchdog test needs frames, not faces)."""

    def detect(self, image_bgr: Any, *, det_size: int | None = None) -> list[Any]:
        return []


def test_watchdog_reopens_a_stream_that_stays_open_but_stops_delivering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge.daemon.cameras.WATCHDOG_GRACE_S", 0.0)  # act at stall_timeout_s
    captures: list[HangingCapture] = []

    def opener(spec: Any) -> HangingCapture:
        captures.append(HangingCapture(frames=10))
        return captures[-1]

    cfg = EdgeConfig(
        device=DeviceConfig(name="gate", data_dir=tmp_path / "edge"),
        cameras=[
            CameraConfig(
                name="door",
                source="rtsp://192.0.2.1/stream",
                stall_timeout_s=1,
                reconnect={"initial_delay_s": 0.1, "max_attempts": None},  # type: ignore[arg-type]
            )
        ],
    )
    edge = EdgeDaemon(cfg, engine=cast(DaemonEngine, BlindEngine()), opener=opener)
    edge.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(captures) < 2:
            edge.cameras.tick()
            seen.add(edge.reporter.heartbeat_payload().cameras["door"].state)
            time.sleep(0.1)
    finally:
        edge.stop()
    rt = edge.cameras.runtimes["door"]
    assert len(captures) >= 2, "the hung stream was not reopened"
    assert captures[0].released.is_set()
    assert rt.stalls >= 1 and {"running", "stalled"} <= seen
    assert rt.totals()[0] >= 10


def test_outbox_counters_add_up_and_the_dead_table_is_bounded(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge.outbox.MAX_DEAD", 2)
    edge = daemon(tmp_path / "edge", server.client())
    now = time.time()
    ids = [edge.cameras.sighting("door", _track(i, now + i, crop=None), None) for i in range(6)]
    for s in ids:
        edge.outbox.put(s)
    edge.outbox.bury({str(s.id): "refused" for s in ids[:3]})  # 3 dead, only 2 kept
    edge.outbox.ack([str(ids[3].id), str(ids[3].id)])  # acked twice, delivered once
    stats = edge.outbox.stats()
    assert (stats.queued, stats.delivered, stats.dead, stats.depth) == (6, 1, 2, 2)
    edge.outbox.close()
