"""``lintel-edge run``: the composition root of the edge daemon (see :mod:`edge.daemon`).

:class:`EdgeDaemon` builds the outbox, the engine and the client, hands each
thread its own state (:class:`~edge.daemon.cameras.Cameras`,
:class:`~edge.daemon.forwarder.Forwarder`,
:class:`~edge.daemon.gallery_sync.GallerySync`,
:class:`~edge.daemon.status.StatusReporter`), starts and stops the threads, and
runs the watchdog on the main thread.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from edge.adaptive import FILE_NAME as ADAPTIVE_FILE
from edge.adaptive import AdaptiveGallery
from edge.client import LintelClient
from edge.daemon.cameras import Cameras
from edge.daemon.config import EdgeConfig, load_config
from edge.daemon.forwarder import Forwarder
from edge.daemon.gallery_sync import GalleryCache, GallerySync
from edge.daemon.settings_sync import SettingsSync
from edge.daemon.status import StatusReporter, software_version
from edge.daemon.token_watch import TokenWatch
from edge.face.engine import FaceEngine
from edge.face.errors import LintelEdgeError
from edge.outbox import Outbox
from edge.pipeline.capture import Opener
from edge.pipeline.seams import EngineLike

log = logging.getLogger(__name__)

TICK_S = 0.2


class DaemonEngine(EngineLike, Protocol):
    """What the daemon needs of :class:`edge.face.engine.FaceEngine` (a seam for tests)."""

    @property
    def threshold(self) -> float: ...


class EdgeDaemon:
    """Runs cameras, forwarder, gallery sync and heartbeat until stopped."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        engine: DaemonEngine | None = None,
        client: LintelClient | None = None,
        opener: Opener | None = None,
    ) -> None:
        """``engine``/``client``: injected in tests; built from the config otherwise.
        ``opener``: how captures are opened (tests fake a camera); OpenCV otherwise."""
        self.config = config
        self.stop_event = threading.Event()
        data = config.device.data_dir
        try:
            data.mkdir(parents=True, exist_ok=True)
            self.outbox = Outbox(data / "outbox.db", max_bytes=config.outbox.max_mb * 1024 * 1024)
        except (OSError, sqlite3.Error) as exc:
            raise LintelEdgeError(f"device.data_dir {data} is not usable: {exc}") from exc
        if engine is None:
            engine = FaceEngine.load(config.model)
        self.engine: DaemonEngine = engine
        self.model_id: str = engine.model_id
        self.threshold: float = engine.threshold
        self.client = client
        if self.client is None and config.server is not None:
            self.client = LintelClient(
                config.server.url,
                config.token(),
                timeout=config.server.timeout_s,
                model_id=self.model_id,
            )
        self.adaptive = AdaptiveGallery(
            config.adapt, path=data / ADAPTIVE_FILE, model_id=self.model_id
        )
        self.gallery_sync = GallerySync(
            cache=GalleryCache(data / "gallery.json"),
            adaptive=self.adaptive,
            client=self.client,
            model_id=self.model_id,
            threshold=self.threshold,
        )
        self.gallery_sync.load_cached()
        self.cameras = Cameras(
            config.cameras,
            device=config.device.name,
            engine=engine,
            gallery=self.gallery_sync,
            adaptive=self.adaptive,
            outbox=self.outbox,
            pipeline=config.pipeline,
            stop_event=self.stop_event,
            opener=opener,
        )
        self.settings = SettingsSync(
            cameras=self.cameras,
            camera_configs=config.cameras,
            pipeline=config.pipeline,
            client=self.client,
            cache_path=data / "settings.json",
        )
        self.settings.load_cached()  # before the cameras start: they open with them
        self.forwarder = Forwarder(self.outbox, self.client, config.server)
        self.tokens: TokenWatch | None = None
        if self.client is not None and config.server is not None:
            self.tokens = TokenWatch(
                config,
                self.client,
                wakeups=[self.forwarder.wakeup, self.gallery_sync.wakeup, self.settings.wakeup],
            )
            self.forwarder.tokens = self.tokens
        self.reporter = StatusReporter(
            device=config.device.name,
            server_url=None if config.server is None else config.server.url,
            status_path=data / "status.json",
            model_id=self.model_id,
            cameras=self.cameras,
            outbox=self.outbox,
            forwarder=self.forwarder,
            gallery=self.gallery_sync,
            stop_event=self.stop_event,
            settings=self.settings if self.client is not None else None,
            tokens=self.tokens,
        )
        self.status_path = self.reporter.status_path
        self._threads: list[threading.Thread] = []
        self._signalled: int | None = None
        self._stopped = False

    # -- status (what `status.json` and the tests read) ---------------------
    def status(self) -> dict[str, Any]:
        """Everything an operator (or a test) wants to know, as JSON-able data."""
        return self.reporter.status()

    def write_status(self) -> None:
        """Rewrite ``<data_dir>/status.json`` atomically (never fatal)."""
        self.reporter.write_status()

    # -- life cycle ----------------------------------------------------------
    def request_stop(self) -> None:
        """Ask every thread to finish (cameras end their streams, flushing live tracks)."""
        self.stop_event.set()
        self.forwarder.wakeup.set()
        self.gallery_sync.wakeup.set()
        self.settings.wakeup.set()
        self.cameras.request_stop()

    def start(self) -> None:
        """Start every thread (the first gallery sync runs before the cameras)."""

        def spawn(name: str, target: Callable[..., None], *args: object) -> None:
            t = threading.Thread(target=target, args=args, name=name, daemon=True)
            t.start()
            self._threads.append(t)

        server = self.config.server
        if self.client is not None and server is not None:
            if self.gallery_sync.gallery is None:
                # First start: wait (up to the HTTP timeout) for a gallery so
                # residents match from the first track. With a cached one the
                # cameras start at once and the sync thread refreshes it.
                self.gallery_sync.sync_once()
            else:
                self.gallery_sync.wakeup.set()
            spawn("forwarder", self.forwarder.run, self.stop_event)
            spawn("gallery-sync", self.gallery_sync.run, self.stop_event, server.gallery_sync_s)
            spawn("heartbeat", self.reporter.run_heartbeat, self.client, server.heartbeat_s)
            # Settings also arrive when a heartbeat ack names another version.
            spawn("settings-sync", self.settings.run, self.stop_event, server.gallery_sync_s)
            spawn("snapshots", self.settings.run_snapshots, self.stop_event)
        for cam in self.config.cameras:
            spawn(f"camera-{cam.name}", self.cameras.worker, cam)
        self.write_status()

    def _camera_threads(self) -> list[threading.Thread]:
        return [t for t in self._threads if t.name.startswith("camera-")]

    def stop(self, *, drain_s: float | None = None) -> int:
        """Stop everything, then upload what is queued for up to ``drain_s``.

        Returns the number of sightings left in the outbox (kept for next time).
        """
        if self._stopped:
            return 0
        self._stopped = True
        self.request_stop()
        # Cameras first: their last tracks are flushed into the outbox.
        for t in self._camera_threads():
            t.join(timeout=20.0)
            if t.is_alive():
                log.error("%s did not stop in time; its live tracks are lost", t.name)
        # The others only wait or talk to the server; one stuck in a request to
        # a dead server is not worth waiting its full timeout for.
        deadline = time.monotonic() + 2.0
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if drain_s is None:
            drain_s = self.config.server.drain_on_stop_s if self.config.server else 0.0
        forwarder_busy = any(t.name == "forwarder" and t.is_alive() for t in self._threads)
        if forwarder_busy:
            log.warning("an upload is still waiting for the server; not draining further")
        elif self.client is not None:
            self.forwarder.drain(time.monotonic() + drain_s)
        self.write_status()
        if self.client is not None:
            self.client.close()
        left = self.outbox.stats().depth
        log.info("stopped; %d sighting(s) left in the outbox for next time", left)
        self.outbox.close()
        return left

    def run_forever(self) -> int:
        """Start, run the watchdog until SIGTERM/SIGINT (or every camera ended), stop."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._signalled is not None:
                # Second signal: leave now. The outbox is durable; only live
                # tracks and the final upload are skipped.
                os._exit(128 + signum)
            self._signalled = signum  # the main loop sees it within one tick

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():  # an embedding program (the demo) goes on
                signal.signal(sig, handler)

    def _run(self) -> int:
        self.start()
        log.info(
            "edge daemon %s running: %d camera(s), model %s, version %s",
            self.config.device.name,
            len(self.config.cameras),
            self.model_id,
            software_version(),
        )
        next_status = 0.0
        all_ended_logged = False
        while self._signalled is None:
            self.cameras.tick()
            now = time.monotonic()
            if now >= next_status:
                if self.tokens is not None:
                    self.tokens.tick()  # while refused: has `lintel-edge enrol` run?
                self.write_status()
                next_status = now + self.config.device.status_interval_s
            if not any(t.is_alive() for t in self._camera_threads()):
                if not all_ended_logged:
                    log.info("every camera has ended; forwarding what is queued, then exiting")
                    all_ended_logged = True
                if self.client is None or self.outbox.stats().depth == 0:
                    break
            time.sleep(TICK_S)
        if self._signalled is not None:
            log.info("signal %d: stopping", self._signalled)
        self.stop()
        return 0


def cli_run(args: argparse.Namespace) -> int:
    """``lintel-edge run --config FILE [--validate-config]``."""
    config = load_config(args.config)
    if config.server is not None:
        config.token()  # a missing token fails here, not later in a thread
    if args.validate_config:
        sys.stdout.write(
            f"{args.config}: OK ({len(config.cameras)} camera(s), "
            f"server {'none (offline)' if config.server is None else config.server.url})\n"
        )
        return 0
    verbose = getattr(args, "verbose", 0)
    if verbose == 0:
        # A daemon's log is its operator's only window: INFO by default.
        logging.getLogger().setLevel(logging.INFO)
    if verbose < 2:
        # One line per upload, heartbeat and gallery poll drowns the rest.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    return EdgeDaemon(config).run_forever()
