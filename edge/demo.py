"""``lintel-edge demo``: the whole system on one machine, from nothing, in about a minute.

1. writes a sample registry (CSV + photos from the installed packages) and
   imports it with ``lintel-registry import`` into a fresh SQLite server;
2. registers an edge device and a manager login with ``lintel-server``;
3. generates five evenings of entrance video (:mod:`edge.demo_site`):
   registered residents, two unregistered residents, a guest and a courier;
4. starts ``lintel-server run`` and runs the edge daemon (the same
   :class:`~edge.daemon.EdgeDaemon` as ``lintel-edge run``, one run per
   evening, each clip stamped with its evening's time) against it over HTTP;
5. runs the clustering worker once, checks the cases, and leaves the server
   (web queue at ``/web``) and a worker running until Ctrl-C, printing the URL
   and the login.

``--no-serve`` stops after the check (exit 0 when the expected cases opened).
Every generated file lives in ``--workdir`` (wiped at the start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from edge.errors import LintelEdgeError

DEVICE = "demo-edge"
CAMERA = "main-gate"
MANAGER = "manager"
PASSWORD = "lintel-demo-2026"


class DemoError(LintelEdgeError):
    """A demo step failed (names the step and shows its output)."""


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _port(wanted: int) -> int:
    """``wanted`` if free on 127.0.0.1, else any free port."""
    for port in (wanted, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DemoError("no free TCP port on 127.0.0.1")


class Demo:
    """The demo's processes and paths (one instance per run)."""

    def __init__(self, workdir: Path, *, port: int) -> None:
        self.workdir = workdir.resolve()
        self.server_dir = self.workdir / "server"
        self.edge_dir = self.workdir / "edge"
        self.port = _port(port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LINTEL_DATA_DIR": str(self.server_dir),
            "LINTEL_ENV": "dev",  # the built-in secret key is acceptable for a demo only
        }
        self.env.pop("LINTEL_DATABASE_URL", None)
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- commands ------------------------------------------------------------
    def cli(self, module: str, *args: str, stdin: str | None = None) -> str:
        """Run ``python -m module args``; its stdout, or :class:`DemoError` with its output."""
        cmd = [sys.executable, "-m", module, *args]
        res = subprocess.run(
            cmd, env=self.env, input=stdin, capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise DemoError(
                f"`{' '.join(cmd[2:])}` failed ({res.returncode}):\n{res.stdout}{res.stderr}"
            )
        return res.stdout

    def start(self, module: str, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.workdir / log).open("ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def wait_healthy(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"the server exited ({proc.returncode}):\n{log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DemoError(f"the server did not answer {self.url}/healthz in {timeout:.0f} s")

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


def run_edge(demo: Demo, token: str, clips: Sequence[Any], *, model: str, threads: int) -> int:
    """One daemon run per simulated evening (engine loaded once); sightings queued."""
    from edge.client import LintelClient
    from edge.config import ModelConfig
    from edge.daemon import EdgeDaemon
    from edge.daemon_config import EdgeConfig
    from edge.engine import FaceEngine

    engine = FaceEngine.load(ModelConfig(pack=model, threads=threads))
    total = 0
    for clip in clips:
        config = EdgeConfig.model_validate(
            {
                "device": {"name": DEVICE, "data_dir": demo.edge_dir, "status_interval_s": 1},
                "server": {"url": demo.url, "upload_interval_s": 0.5, "retry_max_s": 2},
                "cameras": [
                    {"name": CAMERA, "source": str(clip.video.path), "start_at": clip.start_at}
                ],
            }
        )
        client = LintelClient(demo.url, token, model_id=engine.model_id)
        daemon = EdgeDaemon(config, engine=engine, client=client)
        t0 = time.perf_counter()
        daemon.run_forever()  # ends when the clip has ended and the outbox is empty
        status = json.loads(daemon.status_path.read_text())
        tracks = status["cameras"][CAMERA]["tracks"]
        total += tracks
        _say(
            f"  {clip.start_at:%a %Y-%m-%d %H:%M}  {len(clip.people)} walk-ins -> {tracks} "
            f"sightings, outbox {status['outbox']['depth']} left  "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        if status["outbox"]["depth"]:
            raise DemoError(f"the edge could not deliver to {demo.url}; see the log above")
    return total


def cli_demo(args: argparse.Namespace) -> int:
    """``lintel-edge demo [--workdir DIR] [--port N] [--no-serve]``."""
    from edge.demo_site import SITE_NAME, expected_cases, write_clips, write_registry

    t_start = time.perf_counter()
    workdir: Path = args.workdir
    for sub in ("server", "edge", "registry", "video"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    for log in ("server.log", "worker.log"):
        (workdir / log).unlink(missing_ok=True)
    demo = Demo(workdir, port=getattr(args, "port", 8000))
    threads = args.threads or 1
    try:
        _say(f"[1/5] registry: importing the sample register of {SITE_NAME}")
        csv_path, photos = write_registry(demo.workdir / "registry")
        out = demo.cli(
            "registry.cli",
            "import",
            str(csv_path),
            "--site",
            SITE_NAME,
            "--photos",
            str(photos),
            "--threads",
            str(threads),
        )
        _say("      " + "\n      ".join(line for line in out.splitlines() if line.strip())[:800])

        _say("[2/5] device and manager login")
        device = json.loads(
            demo.cli("server.cli", "device", "add", "--site", SITE_NAME, "--name", DEVICE, "--json")
        )
        user = json.loads(
            demo.cli(
                "server.cli",
                "user",
                "add",
                MANAGER,
                "--role",
                "manager",
                "--site",
                SITE_NAME,
                "--password-stdin",
                "--json",
                stdin=PASSWORD + "\n",
            )
        )

        _say("[3/5] entrance video: five evenings")
        clips = write_clips(demo.workdir / "video")

        _say(f"[4/5] server on {demo.url}; the edge daemon replays each evening")
        server = demo.start("server.cli", "run", "--port", str(demo.port), log="server.log")
        demo.wait_healthy(server)
        total = run_edge(demo, device["token"], clips, model=args.model, threads=threads)

        _say("[5/5] clustering worker: unknown faces -> clusters -> cases")
        demo.cli("server.cli", "worker", "--once")
        response = httpx.get(
            f"{demo.url}/api/v1/cases",
            params={"site": SITE_NAME},
            headers={"Authorization": f"Bearer {user['api_token']}"},
            timeout=10,
        )
        response.raise_for_status()
        cases = response.json()
        stats = json.loads(demo.cli("server.cli", "stats", "--site", SITE_NAME, "--json"))
        _say(
            f"      {total} sightings sent; server: {stats['sightings_known']} known, "
            f"{stats['sightings_unknown']} unknown; {len(cases)} open case(s) "
            f"(expected {expected_cases()})"
        )
        for case in cases:
            _say(
                f"      case {case['id']}: seen on {case['days_seen']} days "
                f"({', '.join(case['days'])}), {case['night_entries']} night entries, "
                f"{case['sightings']} sightings, priority {case['priority']:.2f}"
            )
        ok = len(cases) == expected_cases()
        _say(f"\nseeded in {time.perf_counter() - t_start:.0f} s")
        _say(f"web queue:  {demo.url}/web/queue   (login: {MANAGER} / {PASSWORD})")
        _say(
            f"cases API:  {demo.url}/api/v1/cases?site=<site id>  "
            f"(Authorization: Bearer {user['api_token']})"
        )
        if args.no_serve:
            return 0 if ok else 1
        demo.start("server.cli", "worker", log="worker.log")
        _say("serving; Ctrl-C stops the server and the worker")
        try:
            server.wait()
        except KeyboardInterrupt:
            _say("\nstopping")
        return 0 if ok else 1
    finally:
        demo.close()
