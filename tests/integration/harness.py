"""Real processes on 127.0.0.1 for the daemon's integration tests.

- :class:`ServerProcess`: ``lintel-server run`` (uvicorn) on a SQLite file,
  seeded in-process with a site and a device; it can be killed and restarted
  on the same port and database.
- :class:`LiveStream`: ffmpeg looping a video in real time as MPEG-TS over
  TCP (``listen=1``: the daemon's capture is the client), stoppable mid-way.
- :class:`DaemonProcess`: ``lintel-edge run`` with a generated config; its
  ``status.json`` is how the tests watch it.

Every process is killed at teardown even when a test fails (the fixtures own
them); each wait is bounded and fails with the daemon's log tail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from edge.enrol import write_token
from edge.face.models import resolve_pack
from server.db import make_engine, make_session_factory, upgrade
from server.devices.service import create_device
from server.sites.service import create_site

FFMPEG = "/usr/bin/ffmpeg"
SECRET = "integration-test-secret-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, what: str, log: Path | None = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with context otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- daemon log (tail) ---\n" + "\n".join(log.read_text().splitlines()[-40:])
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


class ServerProcess:
    """The Lintel server as a subprocess on a SQLite database in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = folder / "lintel.sqlite3"
        self.model_id = resolve_pack("buffalo_s").model_id
        engine = make_engine(f"sqlite:///{self.db_path}")
        try:
            upgrade(engine)
            with make_session_factory(engine)() as s:
                site = create_site(session=s, name="Integration Court", model_id=self.model_id)
                _device, self.token = create_device(session=s, site_id=site.id, name="edge-it")
                s.commit()
        finally:
            engine.dispose()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "server.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "LINTEL_DATA_DIR": str(self.folder),
            "LINTEL_ENV": "test",
            "LINTEL_SECRET_KEY": SECRET,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "run", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=30, what="the server to answer /healthz")

    def kill(self) -> None:
        """An outage: SIGKILL, no goodbye."""
        _stop(self.proc, signal.SIGKILL)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot stop
        _stop(self.proc)
        self.proc = None

    def cli(self, *args: str) -> str:
        """``lintel-server ARGS`` on this server's database; its stdout (fails on exit != 0)."""
        env = {
            **os.environ,
            "LINTEL_DATA_DIR": str(self.folder),
            "LINTEL_ENV": "test",
            "LINTEL_SECRET_KEY": SECRET,
        }
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"lintel-server {' '.join(args)}: {done.stderr}"
        return done.stdout

    def heartbeat(self) -> dict[str, Any]:
        """The device's last heartbeat as the server stored it ({} before the first)."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT stats FROM devices ORDER BY id LIMIT 1").fetchone()
        data: dict[str, Any] = json.loads(row[0]) if row and row[0] else {}
        return data

    def counts(self) -> tuple[int, int]:
        """(sightings stored, distinct sighting ids) read straight from the database."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5) as conn:
            total, distinct = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT uuid) FROM sightings"
            ).fetchone()
        return int(total), int(distinct)


class LiveStream:
    """ffmpeg serving ``video`` in a loop, in real time, as MPEG-TS on a TCP port."""

    def __init__(self, video: Path, log_path: Path) -> None:
        self.video = video
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Re-encoded (cheap at 640x360) rather than copied: MPEG-4 in an .mp4
        # keeps its headers out of band, and a key frame every second lets a
        # reconnecting reader start decoding at once.
        cmd = [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(self.video),
            "-c:v",
            "mpeg4",
            "-q:v",
            "5",
            "-g",
            "25",
            "-f",
            "mpegts",
            f"{self.url}?listen=1",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def freeze(self) -> None:
        """SIGSTOP: the connection stays open, no frame arrives (a hung camera)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        _stop(self.proc, signal.SIGKILL)  # SIGKILL ends a frozen process too
        self.proc = None


class DaemonProcess:
    """``lintel-edge run`` with a config written from ``settings`` (merged over defaults)."""

    def __init__(
        self,
        folder: Path,
        *,
        server: ServerProcess,
        cameras: list[dict[str, Any]],
        server_overrides: dict[str, Any] | None = None,
        token_in_file: bool = False,
    ) -> None:
        """``token_in_file``: the token in ``<data_dir>/device.token`` (as ``lintel-edge
        enrol`` leaves it), not in the environment variable."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.data_dir = folder / "data"
        self.token = server.token
        self.token_in_file = token_in_file
        if token_in_file:
            write_token(self.data_dir / "device.token", server.token)
        config: dict[str, Any] = {
            "device": {"name": "edge-it", "data_dir": str(self.data_dir), "status_interval_s": 0.2},
            "server": {
                "url": server.url,
                "timeout_s": 3,
                "batch_size": 5,
                "upload_interval_s": 0.2,
                "retry_max_s": 1,
                "gallery_sync_s": 30,
                "heartbeat_s": 2,
                "drain_on_stop_s": 10,
                **(server_overrides or {}),
            },
            "model": {"threads": 1},
            "cameras": cameras,
        }
        self.config_path = folder / "edge.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = folder / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "LINTEL_DEVICE_TOKEN"}
        if not self.token_in_file:
            env["LINTEL_DEVICE_TOKEN"] = self.token
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(self.config_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any]:
        """The daemon's last ``status.json`` ({} before the first one)."""
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def camera(self, name: str = "door") -> dict[str, Any]:
        cam: dict[str, Any] = self.status().get("cameras", {}).get(name, {})
        return cam

    def wait(self, predicate: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        """Wait until ``predicate(status)`` holds; the daemon must stay alive meanwhile."""

        def check() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.log_path.read_text()[-3000:]
                )
            st = self.status()
            return st and predicate(st)

        return wait_for(check, timeout=timeout, what=what, log=self.log_path)

    def terminate(self, timeout: float = 20) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - t0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        _stop(self.proc, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])
