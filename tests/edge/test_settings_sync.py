"""Camera settings from the server applied by a running daemon (issue 17 D), in-process
against the real server app: fps and region retuned without reopening the stream,
on/off, values pinned in edge.yaml, the settings cache, snapshots, enrolment by code.
No models: a stub engine that sees no face (these paths need frames, not faces)."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import select

from edge.client import LintelClient, Rejected, enrol
from edge.daemon.config import CameraConfig, DeviceConfig, EdgeConfig, ServerConfig
from edge.daemon.run import DaemonEngine, EdgeDaemon
from edge.enrol import write_token
from edge.pipeline.capture import Frame
from edge.pipeline.config import PipelineConfig
from edge.pipeline.regions import mask_outside
from edge.pipeline.stream import Pipeline
from edge.wire import CameraStats, Heartbeat
from server.devices.enrolment import create_enrolment_code
from server.devices.models import Camera, CameraSnapshot, Device
from server.devices.settings import set_site_snapshots, update_camera
from server.sites.models import Site
from tests.edge.test_daemon import MODEL, Server, StubEngine


@dataclass
class BlindEngine(StubEngine):
    def detect(self, image_bgr: Any, *, det_size: int | None = None) -> list[Any]:
        return []


class EndlessCapture:
    """A live camera at 25 fps that never ends (until released)."""

    def __init__(self) -> None:
        self.grabbed = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:
        return True

    def grab(self) -> bool:
        if self.released.is_set():
            return False
        self.grabbed += 1
        time.sleep(0.01)
        return True

    def retrieve(self) -> tuple[bool, Any]:
        img = np.full((90, 160, 3), 120, np.uint8)
        img[:, : self.grabbed % 160] = 60
        return True, img

    def get(self, prop_id: int) -> float:
        return 25.0 if prop_id == cv2.CAP_PROP_FPS else 160.0

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server")
    yield srv
    srv.close()


def _daemon(tmp: Path, server: Server, captures: list[EndlessCapture], **cam: Any) -> EdgeDaemon:
    def opener(spec: Any) -> EndlessCapture:
        captures.append(EndlessCapture())
        return captures[-1]

    cfg = EdgeConfig(
        device=DeviceConfig(name="gate", data_dir=tmp / "edge"),
        server=ServerConfig(url="http://testserver"),
        cameras=[CameraConfig(name="door", source="rtsp://192.0.2.1/s", **cam)],
    )
    return EdgeDaemon(
        cfg, engine=cast(DaemonEngine, BlindEngine()), client=server.client(), opener=opener
    )


def _set(server: Server, **values: Any) -> None:
    with server.factory() as s:
        cam = s.scalars(select(Camera).where(Camera.name == "door")).one()
        current = {
            "entrance_id": cam.entrance_id,
            "analyse_fps": cam.analyse_fps,
            "roi": None if cam.roi is None else tuple(cam.roi),
            "enabled": cam.enabled,
        }
        update_camera(session=s, camera=cam, actor="user:1", **{**current, **values})
        s.commit()


def _until(what: str, predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_mask_keeps_only_the_region() -> None:
    img = np.full((100, 200, 3), 255, np.uint8)
    out = mask_outside(img, (0.25, 0.5, 0.75, 1.0))
    assert out[:50].max() == 0 and out[50:, :50].max() == 0 and out[50:, 150:].max() == 0
    assert out[50:, 50:150].min() == 255 and img.min() == 255  # the original is untouched


def test_retune_changes_sampling_from_the_next_frame_without_a_new_pipeline() -> None:
    pipe = Pipeline(cast(Any, BlindEngine()), None, PipelineConfig(analyse_fps=5))
    pipe.set_fps(25.0)
    assert pipe.stats.sample_every == 5
    pipe.retune(analyse_fps=1.0, roi=(0.0, 0.0, 0.5, 0.5))
    assert pipe.stats.sample_every == 5  # not yet: the analysing thread applies it
    pipe.process(Frame(0, 0.0, np.full((40, 40, 3), 200, np.uint8)))
    assert pipe.stats.sample_every == 25 and pipe.config.analyse_fps == 1.0
    assert pipe.roi == (0.0, 0.0, 0.5, 0.5)
    assert pipe.last_frame is not None and pipe.last_frame.image.min() == 200  # unmasked


def test_running_daemon_applies_server_settings_without_reopening(
    tmp_path: Path, server: Server
) -> None:
    captures: list[EndlessCapture] = []
    edge = _daemon(tmp_path, server, captures)
    edge.start()
    try:
        rt = edge.cameras.runtimes["door"]
        _until("the camera to run", lambda: rt.pipeline is not None and rt.totals()[0] > 20)
        ack = edge.client.heartbeat(edge.reporter.heartbeat_payload())  # type: ignore[union-attr]
        assert ack.config_version == 1
        _until("the first settings", lambda: edge.settings.version == 1)

        _set(server, analyse_fps=1.0, roi=(0.1, 0.1, 0.6, 0.9))
        ack = edge.client.heartbeat(edge.reporter.heartbeat_payload())  # type: ignore[union-attr]
        assert ack.config_version == 2 and ack.config_version != edge.settings.version
        edge.settings.sync_once()  # what the ack's wakeup makes the settings thread do
        pipeline = rt.pipeline
        assert pipeline is not None
        _until("the pipeline to apply them", lambda: pipeline.config.analyse_fps == 1.0)
        assert pipeline.roi == (0.1, 0.1, 0.6, 0.9) and pipeline.stats.sample_every == 25
        assert len(captures) == 1 and not captures[0].released.is_set()  # never reopened
        status = edge.status()
        assert status["config"]["version"] == 2
        assert status["config"]["cameras"]["door"] == {
            "enabled": True,
            "analyse_fps": 1.0,
            "roi": [0.1, 0.1, 0.6, 0.9],
            "sample_every": 25,
        }
        hb = edge.reporter.heartbeat_payload()
        assert hb.config_version == 2 and hb.config_pinned == {}

        # Off: the stream is closed (tracks flushed); on again: a new stream.
        _set(server, enabled=False)
        edge.settings.sync_once()
        _until("the camera to stop", lambda: captures[0].released.is_set() and rt.source is None)
        assert edge.reporter.heartbeat_payload().cameras["door"].enabled is False
        _set(server, enabled=True)
        edge.settings.sync_once()
        _until("the camera to run again", lambda: len(captures) == 2 and rt.pipeline is not None)
        assert rt.pipeline is not None and rt.pipeline.config.analyse_fps == 1.0
    finally:
        edge.stop()
    # A restart without the server opens the cameras with the cached settings.
    offline = EdgeDaemon(
        EdgeConfig(
            device=DeviceConfig(name="gate", data_dir=tmp_path / "edge"),
            cameras=[CameraConfig(name="door", source="rtsp://192.0.2.1/s")],
        ),
        engine=cast(DaemonEngine, BlindEngine()),
    )
    assert offline.settings.version == 4
    assert offline.cameras.runtimes["door"].analyse_fps == 1.0
    offline.outbox.close()


def test_values_pinned_in_edge_yaml_win_and_are_reported(tmp_path: Path, server: Server) -> None:
    captures: list[EndlessCapture] = []
    edge = _daemon(
        tmp_path,
        server,
        captures,
        roi=(0.0, 0.0, 1.0, 0.5),
        pipeline=PipelineConfig(analyse_fps=4.0),
    )
    edge.client.heartbeat(edge.reporter.heartbeat_payload())  # type: ignore[union-attr]
    _set(server, analyse_fps=1.0, roi=(0.5, 0.5, 1.0, 1.0), enabled=False)
    edge.settings.sync_once()
    rt = edge.cameras.runtimes["door"]
    assert (rt.enabled, rt.analyse_fps, rt.roi) == (False, None, (0.0, 0.0, 1.0, 0.5))
    hb = edge.reporter.heartbeat_payload()
    assert hb.config_pinned == {"door": ["analyse_fps", "roi"]}
    server.client().heartbeat(hb)
    with server.factory() as s:
        stats = s.scalars(select(Device.stats)).one()
    assert stats is not None and stats["config_pinned"] == {"door": ["analyse_fps", "roi"]}
    assert edge.status()["config"]["cameras"]["door"]["analyse_fps"] == 4.0
    edge.outbox.close()


def test_snapshots_are_sent_only_while_the_site_opts_in(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    captures: list[EndlessCapture] = []
    edge = _daemon(tmp_path, server, captures)
    edge.start()
    try:
        rt = edge.cameras.runtimes["door"]
        _until("the camera to run", lambda: rt.pipeline is not None and rt.analysed() > 3)
        edge.settings.sync_once()
        time.sleep(1.5)  # the snapshot thread looks every second: the site has not opted in
        with server.factory() as s:
            assert s.scalars(select(CameraSnapshot)).all() == []
            site = s.get(Site, server.site_id)
            assert site is not None
            set_site_snapshots(session=s, site=site, enabled=True, retention_hours=24, actor="u")
            s.commit()
        edge.settings.sync_once()
        assert edge.settings.settings is not None and edge.settings.settings.snapshots

        def stored() -> bool:
            with server.factory() as s:
                return s.scalars(select(CameraSnapshot)).first() is not None

        _until("a snapshot on the server", stored)
    finally:
        edge.stop()


def test_enrol_writes_a_private_token_file_that_run_reads(tmp_path: Path, server: Server) -> None:
    with server.factory() as s:
        device = s.scalars(select(Device)).one()
        code = create_enrolment_code(session=s, device=device, actor="user:1")
        s.commit()
    result = enrol("http://testserver", code, transport=server.transport)
    cfg = EdgeConfig(
        device=DeviceConfig(name="gate", data_dir=tmp_path / "edge"),
        server=ServerConfig(url="http://testserver", token_env="LINTEL_NO_SUCH_TOKEN_VAR"),
        cameras=[CameraConfig(name="door", source="0")],
    )
    write_token(cfg.token_path(), result.token)
    assert stat.S_IMODE(cfg.token_path().stat().st_mode) == 0o600
    assert cfg.token() == result.token
    gallery = LintelClient(
        "http://testserver", cfg.token(), transport=server.transport, model_id=MODEL
    ).fetch_gallery()
    assert gallery is not None
    with pytest.raises(Rejected, match="used or expired"):
        enrol("http://testserver", code, transport=server.transport)


def test_a_server_without_settings_gets_heartbeats_it_understands() -> None:
    """A new box and an older server: the first heartbeat's new fields are refused (422),
    so the box drops them from then on instead of losing its heartbeat."""
    bodies: list[dict[str, Any]] = []

    def old_server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        unknown = {"config_version", "config_pinned", "gallery_version"} & body.keys()
        if unknown or any("analysed_fps" in c for c in body["cameras"].values()):
            return httpx.Response(422, json={"detail": "extra fields not permitted"})
        return httpx.Response(
            200, json={"server_time": "2026-12-06T00:00:00Z", "gallery_version": 3}
        )

    client = LintelClient("http://old", "t", transport=httpx.MockTransport(old_server))
    beat = Heartbeat(
        version="2",
        cameras={"door": CameraStats(fps=25.0, analysed_fps=5.0, enabled=True)},
        config_version=0,
        config_pinned={},
        gallery_version=3,
    )
    assert client.heartbeat(beat).gallery_version == 3
    assert client.heartbeat(beat).config_version is None
    assert len(bodies) == 3 and not client.server_takes_config
    assert "config_version" not in bodies[2] and "analysed_fps" not in bodies[2]["cameras"]["door"]
