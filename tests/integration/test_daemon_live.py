"""The daemon on a live stream: the camera drops and comes back, hangs and comes
back, the server goes away and comes back, SIGTERM ends it; the server ends up
with every track exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lintel_demo.videogen import GeneratedVideo
from tests.integration.harness import DaemonProcess, LiveStream, ServerProcess, wait_for

pytestmark = pytest.mark.models


def test_live_stream_and_server_outages_lose_and_double_nothing(
    tmp_path: Path,
    ffmpeg: str,
    entrance_video: GeneratedVideo,
    server: ServerProcess,
    processes: list[Any],
) -> None:
    stream = LiveStream(entrance_video.path, tmp_path / "ffmpeg.log")
    processes.append(stream)
    stream.start()
    daemon = DaemonProcess(
        tmp_path / "edge",
        server=server,
        cameras=[
            {
                "name": "door",
                "source": stream.url,
                "stall_timeout_s": 3,
                "open_timeout_s": 3,
                "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0, "max_attempts": None},
            }
        ],
    )
    processes.append(daemon)
    daemon.start()

    # 1. Running: tracks are recorded and delivered.
    daemon.wait(
        lambda s: s["cameras"]["door"]["state"] == "running" and s["outbox"]["delivered"] >= 1,
        timeout=40,
        what="a first delivered sighting",
    )

    # 2. The camera drops: the daemon notices and reconnects when it is back.
    stream.stop()
    daemon.wait(
        lambda s: s["cameras"]["door"]["state"] == "reconnecting",
        timeout=15,
        what="the camera to be reported reconnecting",
    )
    tracks_before = daemon.camera()["tracks"]
    stream.start()
    daemon.wait(
        lambda s: (
            s["cameras"]["door"]["state"] == "running"
            and s["cameras"]["door"]["tracks"] > tracks_before
        ),
        timeout=30,
        what="the camera running again with a new track",
    )
    assert daemon.camera()["reconnects"] + daemon.camera()["opens"] >= 2

    # 2b. The camera hangs with the connection open: no frame for stall_timeout_s
    # is noticed (stalled, then reopened) and the daemon recovers on a new stream.
    stream.freeze()
    daemon.wait(
        lambda s: s["cameras"]["door"]["state"] in ("stalled", "reconnecting"),
        timeout=20,
        what="the frozen stream to be noticed",
    )
    stream.stop()
    tracks_before = daemon.camera()["tracks"]
    stream.start()
    daemon.wait(
        lambda s: (
            s["cameras"]["door"]["state"] == "running"
            and s["cameras"]["door"]["tracks"] > tracks_before
        ),
        timeout=30,
        what="the camera running again after the freeze",
    )

    # 3. The server goes away: the outbox holds what is seen meanwhile.
    server.kill()
    queued_at_outage = daemon.status()["outbox"]["queued"]
    daemon.wait(
        lambda s: (
            s["outbox"]["queued"] > queued_at_outage
            and s["outbox"]["depth"] > 0
            and s["server"]["last_error"]
        ),  # the failed upload is reported
        timeout=30,
        what="sightings held in the outbox during the outage",
    )
    st = daemon.status()

    server.start()
    delivered_before = st["outbox"]["delivered"]
    daemon.wait(
        lambda s: s["outbox"]["depth"] == 0 and s["outbox"]["delivered"] > delivered_before,
        timeout=30,
        what="the outbox to drain after the server came back",
    )

    # The server hears how the box is doing (heartbeat every 2 s here).
    hb = wait_for(
        lambda: (
            (h := server.heartbeat()).get("cameras", {}).get("door", {}).get("fps", 0) > 0 and h
        ),
        timeout=15,
        what="a heartbeat with the camera's frame rate",
        log=daemon.log_path,
    )
    assert hb["model_id"] == server.model_id and hb["version"]
    assert hb["cameras"]["door"]["reconnects"] >= 1 and "dropped_frames" in hb["cameras"]["door"]
    assert {"outbox_depth", "outbox_dropped", "outbox_dead"} <= hb.keys()

    # 4. SIGTERM: a clean, quick exit with everything delivered.
    code, took = daemon.terminate()
    assert code == 0, daemon.log_tail()
    assert took < 15, f"SIGTERM took {took:.1f} s"
    final = daemon.status()
    assert final["stopping"] is True
    ob = final["outbox"]
    assert ob["depth"] == 0 and ob["dropped"] == 0 and ob["dead"] == 0, ob
    total, distinct = server.counts()
    assert total == distinct, "a sighting was stored twice"
    assert total == ob["queued"] == ob["delivered"] == final["cameras"]["door"]["tracks"]
    assert total >= 3
