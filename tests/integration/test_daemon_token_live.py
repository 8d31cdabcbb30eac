"""Issue 17 T, live: the token of a running ``lintel-edge run`` is rotated (or its device
disabled) with ``lintel-server device ...``; its uploads are refused, sightings queue and
``status.json`` says what to do in words; ``lintel-edge enrol`` with a new code (or
``device enable``) makes the *same* daemon process deliver them, each exactly once.

``retry_max_s`` is 30 s here, far above how long recovery may take: delivery within a
few seconds shows the daemon picked the change up, not that its back-off ran out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lintel_demo.videogen import GeneratedVideo
from tests.integration.harness import DaemonProcess, LiveStream, ServerProcess

pytestmark = pytest.mark.models

HEARTBEAT_S = 2
RETRY_MAX_S = 30
RECOVERY_S = 8  # a status interval (0.2 s) or a heartbeat (2 s), plus an upload, with slack


def _refused(status: dict[str, Any]) -> bool:
    srv = status.get("server") or {}
    return srv.get("token_refused_status") == 401 and status["outbox"]["depth"] >= 2


def _start(
    tmp_path: Path, server: ServerProcess, stream_video: Path, processes: list[Any]
) -> DaemonProcess:
    stream = LiveStream(stream_video, tmp_path / "ffmpeg.log")
    processes.append(stream)
    stream.start()
    daemon = DaemonProcess(
        tmp_path / "edge",
        server=server,
        cameras=[{"name": "door", "source": stream.url, "stall_timeout_s": 5}],
        server_overrides={
            "heartbeat_s": HEARTBEAT_S,
            "retry_max_s": RETRY_MAX_S,
            "gallery_sync_s": 300,
        },
        token_in_file=True,
    )
    processes.append(daemon)
    daemon.start()
    daemon.wait(
        lambda s: s["cameras"]["door"]["state"] == "running" and s["outbox"]["delivered"] >= 1,
        timeout=60,
        what="a delivered sighting",
    )
    return daemon


def _wait_refused(daemon: DaemonProcess) -> dict[str, Any]:
    """Refused, queued (not buried), and status.json says what to do."""
    refused: dict[str, Any] = daemon.wait(
        lambda s: _refused(s) and s, timeout=40, what="refused uploads and a queue"
    )
    srv, ob = refused["server"], refused["outbox"]
    problem = srv["problem"]
    assert problem.startswith("the server refused this box's token since "), problem
    assert "(401: unknown or disabled device token)" in problem
    assert "Devices -> edge-it" in problem and "lintel-edge enrol" in problem
    assert srv["token_source"] == "file" and srv["token_refused_since"]
    assert ob["dead"] == 0 and ob["dropped"] == 0, ob
    assert problem in daemon.log_path.read_text(), "the log says it too"
    return refused


def _wait_recovered(daemon: DaemonProcess, pid: int, queued: int) -> None:
    t0 = time.monotonic()
    done = daemon.wait(
        lambda s: (
            s["server"]["token_refused_status"] is None
            and s["outbox"]["delivered"] >= queued
            and s["outbox"]["depth"] == 0
            and s
        ),
        timeout=RECOVERY_S,
        what="the same daemon delivering the queued sightings",
    )
    took = time.monotonic() - t0
    assert done["pid"] == pid, "the daemon restarted"
    assert done["server"]["problem"] is None
    assert took < RETRY_MAX_S / 2, took


def _finish(daemon: DaemonProcess, server: ServerProcess) -> None:
    code, _took = daemon.terminate()
    assert code == 0, daemon.log_tail()
    final = daemon.status()
    ob = final["outbox"]
    assert ob["depth"] == 0 and ob["dropped"] == 0 and ob["dead"] == 0, ob
    total, distinct = server.counts()
    assert total == distinct, "a sighting was stored twice"
    assert total == ob["queued"] == ob["delivered"] == final["cameras"]["door"]["tracks"]


def test_a_rotated_token_is_picked_up_from_lintel_edge_enrol_without_a_restart(
    tmp_path: Path,
    ffmpeg: str,
    entrance_video: GeneratedVideo,
    server: ServerProcess,
    processes: list[Any],
) -> None:
    daemon = _start(tmp_path, server, entrance_video.path, processes)
    pid = daemon.status()["pid"]

    rotated = json.loads(server.cli("device", "rotate-token", "edge-it", "--json"))
    assert rotated["token"] != server.token
    refused = _wait_refused(daemon)
    assert refused["pid"] == pid

    code = json.loads(server.cli("device", "enrol-code", "edge-it", "--json"))["code"]
    enrol = ["enrol", "--config", str(daemon.config_path), "--code", code]
    enrolled = subprocess.run(
        [sys.executable, "-m", "edge.cli", *enrol],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert "token written to" in enrolled.stdout
    _wait_recovered(daemon, pid, daemon.status()["outbox"]["queued"])
    assert "the device token changed" in daemon.log_path.read_text()
    _finish(daemon, server)


def test_a_disabled_device_queues_and_resumes_when_enabled_without_a_restart(
    tmp_path: Path,
    ffmpeg: str,
    entrance_video: GeneratedVideo,
    server: ServerProcess,
    processes: list[Any],
) -> None:
    daemon = _start(tmp_path, server, entrance_video.path, processes)
    pid = daemon.status()["pid"]

    server.cli("device", "disable", "edge-it")
    _wait_refused(daemon)
    server.cli("device", "enable", "edge-it")
    # The same token again: a heartbeat gets through and wakes the forwarder.
    _wait_recovered(daemon, pid, daemon.status()["outbox"]["queued"])
    assert "the server accepts this box's token again" in daemon.log_path.read_text()
    _finish(daemon, server)
