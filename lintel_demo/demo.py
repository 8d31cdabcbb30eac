"""``lintel-demo``: the whole system on one machine, from nothing, in about a minute.

1. writes a sample registry (CSV + photos from the installed packages) and
   imports it with ``lintel-registry import`` into a fresh SQLite server;
2. registers an edge device and a manager login with ``lintel-server``;
3. generates five evenings of entrance video (:mod:`lintel_demo.demo_site`):
   registered residents, two unregistered residents, a guest and a courier;
4. starts ``lintel-server run`` and runs the edge daemon (the same
   :class:`~edge.daemon.run.EdgeDaemon` as ``lintel-edge run``, one run per
   evening, each clip stamped with its evening's time) against it over HTTP;
5. runs the clustering worker once, checks the cases, and leaves the server
   (web queue at ``/web``) and a worker running until Ctrl-C, printing the URL
   and the login.

It serves when run from a terminal (or with ``--serve``); ``--no-serve``, or a
stdin that is not a terminal (CI, tests), stops after the check: exit 0 when
the expected cases opened. Every generated file lives in ``--workdir`` (its
subfolders are wiped at the start). ``--offline`` runs the first, server-less
demo instead: replay a generated video against a folder gallery.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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

from edge.client import LintelClient
from edge.daemon.config import EdgeConfig
from edge.daemon.run import EdgeDaemon
from edge.face.engine import FaceEngine
from edge.face.errors import LintelEdgeError
from edge.face.models import ModelConfig
from edge.gallery import Gallery
from edge.pipeline.results import TrackResult
from edge.pipeline.stream import Pipeline
from lintel_demo.demo_receiver import DemoReceiver
from lintel_demo.demo_site import (
    SITE_NAME,
    expected_cases,
    expected_likely,
    write_clips,
    write_registry,
)
from lintel_demo.videogen import GeneratedVideo, WalkIn, make_video, write_gallery

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
    """``wanted`` if free on 127.0.0.1, else any free port, and says which it took."""
    for port in (wanted, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            got = int(s.getsockname()[1])
        if got != wanted:
            # Never silently: the manager would open the wrong (busy) port's page.
            _say(
                f"port {wanted} is busy on 127.0.0.1: the demo server takes port {got} "
                "instead (--port N to choose)"
            )
        return got
    raise DemoError("no free TCP port on 127.0.0.1")


SERVER_MARK = "server.pid"
"""In ``--workdir`` while the demo's server runs: its pid and port (JSON)."""


def running_server(workdir: Path) -> tuple[int, int | None] | None:
    """(pid, port) of a demo server still running on ``workdir``'s files, else None.

    Read from :data:`SERVER_MARK`; a mark whose process is gone, or is no longer a
    Lintel server (its pid reused), is stale and ignored.
    """
    try:
        data = json.loads((workdir / SERVER_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and b"server.cli" not in cmdline.read_bytes():
        return None
    port = data.get("port")
    return pid, port if isinstance(port, int) else None


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

    def mark_server(self, proc: subprocess.Popen[bytes]) -> None:
        """Record the running server in the workdir, so a second demo will not wipe it."""
        (self.workdir / SERVER_MARK).write_text(
            json.dumps({"pid": proc.pid, "port": self.port}), encoding="utf-8"
        )

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
        (self.workdir / SERVER_MARK).unlink(missing_ok=True)


def run_edge(demo: Demo, token: str, clips: Sequence[Any], *, model: str, threads: int) -> int:
    """One daemon run per simulated evening (engine loaded once); sightings queued."""
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
    """``lintel-demo [--workdir DIR] [--port N] [--no-serve]``."""
    if getattr(args, "offline", False):
        return cli_demo_offline(args)
    # Serve (block until Ctrl-C) when asked, or by default when run from a
    # terminal; a CI job or a test must not hang on a server it cannot stop.
    serve = not args.no_serve and (getattr(args, "serve", False) or sys.stdin.isatty())
    t_start = time.perf_counter()
    workdir: Path = args.workdir
    running = running_server(workdir)
    if running is not None:
        pid, port = running
        where = f" on port {port}" if port else ""
        raise DemoError(
            f"a Lintel server (pid {pid}{where}) still runs on the files in {workdir}: "
            f"not wiping them. Stop it first (Ctrl-C in its terminal, or `kill {pid}`), "
            "or give another --workdir"
        )
    for sub in ("server", "edge", "registry", "video"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    for log in ("server.log", "worker.log"):
        (workdir / log).unlink(missing_ok=True)
    demo = Demo(workdir, port=getattr(args, "port", 8000))
    threads = args.threads or 1
    receiver: DemoReceiver | None = None
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

        # What a manager would be told: case-opened messages to a local webhook (issue 15).
        receiver = DemoReceiver(secrets.token_urlsafe(24)).start()
        add = receiver.notify_add_args(site=SITE_NAME, link_base=demo.url)
        demo.cli("server.cli", *add, stdin=receiver.secret + "\n")

        _say("[3/5] entrance video: five evenings")
        clips = write_clips(demo.workdir / "video")

        _say(f"[4/5] server on {demo.url}; the edge daemon replays each evening")
        server = demo.start("server.cli", "run", "--port", str(demo.port), log="server.log")
        demo.mark_server(server)
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
        likely = httpx.get(
            f"{demo.url}/api/v1/likely-occupants",
            params={"site": SITE_NAME},
            headers={"Authorization": f"Bearer {user['api_token']}"},
            timeout=10,
        )
        likely.raise_for_status()
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
                + (
                    f"; desk check: names registered occupant {case['desk_check_occupant_id']}"
                    if case.get("desk_check_occupant_id")
                    else ""
                )
            )
        for note in receiver.received:
            _say(f"      notification (webhook, signature verified): {note['title']}")
            _say("        " + note["text"].replace("\n\n", "\n").replace("\n", "\n        "))
        _say(
            f"      {len(likely.json())} likely resident(s) for the manager to confirm "
            f"(expected {expected_likely()}): /web/likely"
        )
        ok = len(cases) == expected_cases() and len(likely.json()) == expected_likely()
        _say(f"\nseeded in {time.perf_counter() - t_start:.0f} s")
        _say(f"web queue:  {demo.url}/web/queue   (login: {MANAGER} / {PASSWORD})")
        _say(
            f"cases API:  {demo.url}/api/v1/cases?site={stats['site_id']}  "
            f"(Authorization: Bearer {user['api_token']})"
        )
        if not serve:
            if not args.no_serve:
                _say("not serving: stdin is not a terminal (--serve keeps the server up)")
            return 0 if ok else 1
        demo.start("server.cli", "worker", log="worker.log")
        _say("serving; Ctrl-C (or SIGTERM) stops the server and the worker")

        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # one way out, through the finally below

        signal.signal(signal.SIGTERM, on_term)
        try:
            server.wait()
        except KeyboardInterrupt:
            _say("\nstopping")
        return 0 if ok else 1
    finally:
        demo.close()
        if receiver is not None:
            receiver.close()


# -- the offline replay demo (no server) -----------------------------------------------
OFFLINE_OCCUPANTS = ("t1_p3", "yao_ming")
DISTRACTOR = "t1_p6"  # enrolled, never walks in
STRANGERS = ("t1_p1", "t1_p4")


def demo_walkins(fps: float) -> list[WalkIn]:
    """Occupant, stranger, then an occupant and a stranger side by side."""
    walk, gap = round(1.8 * fps), round(1.2 * fps)
    t = round(1.0 * fps)
    left = ((0.25, 0.35), (0.3, 0.5))
    right = ((0.75, 0.35), (0.7, 0.5))
    out = [WalkIn(OFFLINE_OCCUPANTS[0], t, t + walk - 1, *left)]
    t += walk + gap
    out.append(WalkIn(STRANGERS[0], t, t + walk - 1, *right))
    t += walk + gap
    out.append(WalkIn(OFFLINE_OCCUPANTS[1], t, t + walk - 1, *left, mirror=False))
    out.append(WalkIn(STRANGERS[1], t, t + walk - 1, *right, mirror=False))
    return out


def assign(
    video: GeneratedVideo, results: Sequence[TrackResult]
) -> list[tuple[WalkIn, list[TrackResult]]]:
    """For each walk-in, the tracks that overlap it in time and sit on its side."""
    out = []
    for wi in video.walkins:
        mine = []
        for r in results:
            if r.start_frame > wi.end_frame or wi.start_frame > r.end_frame:
                continue
            cx = (r.bbox.x1 + r.bbox.x2) / 2 / video.width
            if abs(cx - wi.to_xy[0]) < 0.25:
                mine.append(r)
        out.append((wi, mine))
    return out


def cli_demo_offline(args: argparse.Namespace) -> int:
    """``--offline``: build the sample gallery and video in ``--workdir``, replay, print a
    summary (engineer A2's first demo: no server, exit 0 when every walk-in is right)."""
    out = sys.stdout
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    gallery_dir = write_gallery(workdir / "gallery", [*OFFLINE_OCCUPANTS, DISTRACTOR])
    video = make_video(workdir / "entrance.mp4", demo_walkins(25.0), fps=25.0)
    out.write(
        f"gallery: {gallery_dir} ({len(OFFLINE_OCCUPANTS) + 1} people)\n"
        f"video:   {video.path} ({video.frames} frames, {video.frames / video.fps:.1f} s, "
        f"{len(video.walkins)} walk-ins)\n"
    )
    config: dict[str, object] = {"pack": args.model}
    if args.threads:
        config["threads"] = args.threads
    t0 = time.perf_counter()
    engine = FaceEngine.load(ModelConfig.model_validate(config))
    gallery = Gallery.from_folder(gallery_dir, engine)
    pipeline = Pipeline(engine, gallery)
    results = list(pipeline.run(video.path))
    stats = pipeline.stats

    ok = 0
    out.write("\nwalk-in (truth)            frames     -> pipeline\n")
    for wi, tracks in assign(video, results):
        truth = wi.identity if wi.identity in OFFLINE_OCCUPANTS else f"stranger ({wi.identity})"
        if len(tracks) != 1:
            verdict = f"{len(tracks)} tracks  WRONG"
        else:
            r = tracks[0]
            said = r.identity or "unknown"
            right = r.identity == (wi.identity if wi.identity in OFFLINE_OCCUPANTS else None)
            ok += right
            verdict = (
                f"{said:<10} similarity {r.similarity:.2f}  quality {r.quality:.2f}  "
                f"{'ok' if right else 'WRONG'}"
            )
        out.write(f"{truth:<26} {wi.start_frame:>4}-{wi.end_frame:<4}  -> {verdict}\n")
    extra = len(results) - sum(len(t) for _, t in assign(video, results))
    out.write(
        f"\n{ok}/{len(video.walkins)} walk-ins right, {len(results)} tracks"
        f"{f' ({extra} spurious)' if extra else ''}; "
        f"{stats.frames_analysed}/{stats.frames_read} frames analysed, "
        f"{stats.detector_calls} detector calls, {stats.faces_embedded} faces embedded; "
        f"{stats.cpu_s:.2f} CPU s for {stats.video_s:.1f} s of video "
        f"(total {time.perf_counter() - t0:.1f} s with model loading)\n"
    )
    return 0 if ok == len(video.walkins) and extra == 0 else 1
