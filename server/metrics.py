"""Prometheus metrics, one registry per app (so tests can build many apps).

``lintel-server run --workers N`` (N > 1) runs prometheus-client's
multiprocess mode: it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
under the data dir before the workers start, every worker's counters write
their samples there, and ``/metrics`` (whichever worker answers) renders the
sum over all of them. With one worker the app's own registry is rendered.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def fresh_multiproc_dir(data_dir: Path) -> Path:
    """An empty folder for the workers' samples (the last run's are removed: counters
    restart with the server, as they do with one worker)."""
    path = Path(data_dir) / "prometheus-multiproc"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


WORKER_REGISTRY = CollectorRegistry()
"""The clustering worker's counters, one per process (the worker is not an app).

``/metrics`` renders them beside the app's when the worker runs in the same
process; a separate ``lintel-server worker`` serves them with
``--metrics-port``, or adds them to the server's ``/metrics`` when both run
with the same ``PROMETHEUS_MULTIPROC_DIR``."""

WORKER_SITE_FAILURES = Counter(
    "lintel_worker_site_failures",
    "Clustering passes that failed on a site, by site id (the site is retried after a "
    "back-off; the other sites go on).",
    ["site"],
    registry=WORKER_REGISTRY,
)


def render(metrics: Metrics) -> bytes:
    """The text exposition of ``/metrics``: all workers' sum in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return bytes(generate_latest(registry))
    return bytes(generate_latest(metrics.registry)) + bytes(generate_latest(WORKER_REGISTRY))


@dataclass(frozen=True)
class Metrics:
    """The app's counters; ``registry`` is what ``/metrics`` renders."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    sightings: Counter
    future_refused: Counter
    gallery: Counter
    heartbeats: Counter


def make_metrics() -> Metrics:
    """A fresh registry with Lintel's metrics."""
    reg = CollectorRegistry()
    return Metrics(
        registry=reg,
        requests=Counter(
            "lintel_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=reg,
        ),
        latency=Histogram(
            "lintel_http_request_seconds",
            "Request latency by route template.",
            ["route"],
            registry=reg,
        ),
        sightings=Counter(
            "lintel_sightings",
            "Uploaded sightings by outcome (created_known, created_unknown, duplicate, rejected).",
            ["outcome"],
            registry=reg,
        ),
        future_refused=Counter(
            "lintel_sightings_future_refused",
            "Sightings refused for times in the future (a wrong edge clock), by device id.",
            ["device"],
            registry=reg,
        ),
        gallery=Counter(
            "lintel_gallery_fetches",
            "Gallery fetches by result (full, not_modified).",
            ["result"],
            registry=reg,
        ),
        heartbeats=Counter("lintel_heartbeats", "Device heartbeats received.", registry=reg),
    )


class MetricsMiddleware:
    """Counts requests and their latency per route template (not per raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            name = _route_template(scope)
            self.metrics.requests.labels(scope.get("method", ""), name, str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    """The matched route's path template, e.g. ``/api/v1/cases/{case_id}``.

    Raw paths would give unbounded label values; templates do not. FastAPI
    puts the route *without* its router prefix in the scope, so the prefix
    is taken from the raw path (as many leading segments as are extra).
    """
    route: Any = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    raw = [p for p in str(scope.get("path", "")).split("/") if p]
    own = [p for p in template.split("/") if p]
    extra = len(raw) - len(own)
    if extra <= 0:
        return template
    return "/" + "/".join(raw[:extra] + own)
