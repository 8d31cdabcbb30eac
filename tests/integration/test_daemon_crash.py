"""kill -9 of the daemon with a batch in flight, and SIGTERM with sightings queued."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lintel_demo.videogen import GeneratedVideo
from tests.integration.harness import DaemonProcess, ServerProcess, wait_for

pytestmark = pytest.mark.models

START_AT = "2026-11-20T18:00:00+08:00"


def test_kill9_mid_batch_then_restart_delivers_each_sighting_once(
    tmp_path: Path, entrance_video: GeneratedVideo, server: ServerProcess, processes: list[Any]
) -> None:
    # A recorded file with a fixed start time: processing it again after the
    # crash yields the same sighting ids, so a re-sent one must not double.
    camera = {"name": "door", "source": str(entrance_video.path), "start_at": START_AT}
    daemon = DaemonProcess(
        tmp_path / "edge",
        server=server,
        cameras=[camera],
        server_overrides={"timeout_s": 60, "batch_size": 2},
    )
    processes.append(daemon)
    daemon.start()
    # Paused as soon as the daemon is up (first status written after the first
    # gallery sync, before any track ended): its first upload then hangs with
    # the request sent and no answer: a batch in flight.
    daemon.wait(lambda s: True, timeout=40, what="the daemon to start")
    server.pause()
    st = daemon.wait(
        lambda s: s["cameras"]["door"]["ended"] and s["outbox"]["queued"] >= 3,
        timeout=40,
        what="the file to be processed into the outbox",
    )
    time.sleep(0.5)  # let the forwarder's request go out
    st = daemon.status()
    recorded = st["outbox"]["queued"]
    assert st["outbox"]["depth"] == recorded and st["outbox"]["delivered"] == 0
    daemon.kill9()
    server.resume()
    # Usually the server now stores the batch whose answer nobody will read;
    # noted for the failure message, not required.
    time.sleep(1.0)
    stored_unacked = server.counts()[0]

    # The server may or may not have stored the in-flight batch: either way
    # the restarted daemon must end with each sighting stored exactly once.
    restarted = DaemonProcess(
        tmp_path / "edge", server=server, cameras=[camera], server_overrides={"batch_size": 2}
    )
    processes.append(restarted)
    restarted.start()
    assert restarted.proc is not None
    code = wait_for(
        lambda: restarted.proc is not None and restarted.proc.poll() is not None,
        timeout=60,
        what="the restarted daemon to finish the file, drain and exit",
        log=restarted.log_path,
    )
    assert code and restarted.proc.returncode == 0, restarted.log_tail()
    final = restarted.status()
    assert final["outbox"]["depth"] == 0 and final["outbox"]["dead"] == 0, final["outbox"]
    assert final["cameras"]["door"]["tracks"] == recorded, "the file gave other tracks"
    total, distinct = server.counts()
    assert (total, distinct) == (recorded, recorded), f"{stored_unacked} stored before restart"


def test_sigterm_flushes_the_outbox_and_exits_promptly(
    tmp_path: Path, entrance_video: GeneratedVideo, server: ServerProcess, processes: list[Any]
) -> None:
    # upload_interval_s is long, so once the forwarder found the outbox empty
    # at start, what the camera records stays queued until the SIGTERM flush.
    daemon = DaemonProcess(
        tmp_path / "edge",
        server=server,
        cameras=[{"name": "door", "source": str(entrance_video.path), "loop": True}],
        server_overrides={"upload_interval_s": 600},
    )
    processes.append(daemon)
    daemon.start()
    daemon.wait(lambda s: s["outbox"]["depth"] >= 2, timeout=40, what="two queued sightings")
    assert server.counts() == (0, 0)
    code, took = daemon.terminate()
    assert code == 0, daemon.log_tail()
    assert took < 10, f"SIGTERM took {took:.1f} s"
    final = daemon.status()
    ob = final["outbox"]
    assert ob["depth"] == 0 and ob["dead"] == 0 and ob["queued"] == ob["delivered"], ob
    assert server.counts() == (ob["queued"], ob["queued"])
    assert ob["queued"] == final["cameras"]["door"]["tracks"]
