"""Issue 17 T in-process: the daemon's forwarder and heartbeat threads against the real
server app (SQLite), no models or ffmpeg needed. The token is rotated, or the device
disabled, with the server's own services; a new token arrives through the real
enrolment endpoint and ``edge.enrol.write_token`` (what ``lintel-edge enrol`` does); the
same daemon object delivers what queued, each sighting once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from edge.client import LintelClient, enrol
from edge.daemon.config import CameraConfig, DeviceConfig, EdgeConfig, ServerConfig
from edge.daemon.run import DaemonEngine, EdgeDaemon
from edge.enrol import write_token
from server.devices.enrolment import create_enrolment_code
from server.devices.models import Device
from server.devices.service import rotate_device_token, set_device_disabled
from tests.edge.test_daemon import MODEL, Server, StubEngine, _track

ENV = "LINTEL_TEST_TOKEN_RECOVERY"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server")
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


class Box:
    """An EdgeDaemon whose token is in its token file, with its forwarder and heartbeat
    threads running and the main loop's token look driven by :meth:`until`."""

    def __init__(self, tmp: Path, server: Server) -> None:
        self.config = EdgeConfig(
            device=DeviceConfig(name="gate", data_dir=tmp / "edge"),
            server=ServerConfig(
                url="http://testserver",
                token_env=ENV,
                retry_max_s=60,  # recovery within seconds can only be the watch's doing
                upload_interval_s=0.05,
                heartbeat_s=1,
                batch_size=3,
            ),
            cameras=[CameraConfig(name="door", source="rtsp://192.0.2.1/stream")],
        )
        write_token(self.config.token_path(), server.token)
        client = LintelClient(
            "http://testserver", self.config.token(), transport=server.transport, model_id=MODEL
        )
        self.daemon = EdgeDaemon(
            self.config, engine=cast(DaemonEngine, StubEngine()), client=client
        )
        assert self.daemon.tokens is not None
        self.tokens = self.daemon.tokens
        self.threads = [
            threading.Thread(target=self.daemon.forwarder.run, args=(self.daemon.stop_event,)),
            threading.Thread(
                target=self.daemon.reporter.run_heartbeat,
                args=(client, self.config.server.heartbeat_s),  # type: ignore[union-attr]
            ),
        ]
        for t in self.threads:
            t.start()
        self.tracks = 0

    def record(self, n: int) -> None:
        now = time.time()
        for _ in range(n):
            self.tracks += 1
            assert self.daemon.cameras.record(
                "door", _track(self.tracks, now + self.tracks, crop=None)
            )

    def until(self, what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.tokens.tick()  # as the main loop does at each status write
            if predicate():
                return time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.daemon.status()['server']}")

    def close(self) -> None:
        self.daemon.request_stop()
        for t in self.threads:
            t.join(timeout=10)
        assert self.daemon.client is not None
        self.daemon.client.close()
        self.daemon.outbox.close()


@pytest.fixture
def box(tmp_path: Path, server: Server) -> Iterator[Box]:
    b = Box(tmp_path, server)
    yield b
    b.close()


def _device(server: Server, change: Callable[..., object]) -> object:
    with server.factory() as s:
        device = s.get(Device, 1)
        assert device is not None
        out = change(session=s, device=device, actor="test")
        s.commit()
        return out


def _refused_and_queued(box: Box, server: Server, delivered: int) -> None:
    box.record(4)
    box.until("a refusal", lambda: box.daemon.status()["server"]["token_refused_status"] == 401)
    status = box.daemon.status()
    assert status["outbox"]["depth"] == 4 and status["outbox"]["dead"] == 0
    assert "Devices -> gate" in status["server"]["problem"]
    assert server.sightings() == delivered


def _all_delivered_once(box: Box, server: Server) -> None:
    stats = box.daemon.outbox.stats()
    assert (stats.depth, stats.dead, stats.dropped) == (0, 0, 0)
    assert stats.delivered == stats.queued == box.tracks == server.sightings()
    assert box.daemon.status()["server"]["problem"] is None


def test_rotated_then_enrolled_the_same_daemon_delivers_the_queue(box: Box, server: Server) -> None:
    box.record(2)
    box.until("the first delivery", lambda: server.sightings() == 2)
    _device(server, rotate_device_token)
    _refused_and_queued(box, server, delivered=2)

    code = cast(str, _device(server, create_enrolment_code))
    result = enrol("http://testserver", code, transport=server.transport)
    write_token(box.config.token_path(), result.token)
    took = box.until("the queue delivered", lambda: box.daemon.outbox.stats().depth == 0)
    assert took < 5, took
    assert box.daemon.client is not None and box.daemon.client.token_generation == 1
    _all_delivered_once(box, server)


def test_disabled_then_enabled_the_same_token_resumes(box: Box, server: Server) -> None:
    box.record(2)
    box.until("the first delivery", lambda: server.sightings() == 2)
    _device(server, lambda **kw: set_device_disabled(disabled=True, **kw))
    _refused_and_queued(box, server, delivered=2)

    _device(server, lambda **kw: set_device_disabled(disabled=False, **kw))
    # The heartbeat (every 1 s) gets through; the forwarder, waiting up to 60 s, is woken.
    took = box.until("the queue delivered", lambda: box.daemon.outbox.stats().depth == 0)
    assert took < 5, took
    assert box.daemon.client is not None and box.daemon.client.token_generation == 0
    _all_delivered_once(box, server)
