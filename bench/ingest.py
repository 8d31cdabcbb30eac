"""Sighting ingest throughput through the real HTTP API.

Starts ``lintel-server run`` (uvicorn, 127.0.0.1 only) on a fresh database,
registers a device, then posts pre-built batches of sightings from a few
client threads and reports sightings per second. A second pass re-sends
every batch (all duplicates), which is the edge's retry path.

    .venv/bin/python bench/ingest.py                   # SQLite and PostgreSQL
    .venv/bin/python bench/ingest.py --backends sqlite --batches 100

PostgreSQL: a database ``lintel_bench_<hex>`` is created through
``--pg-admin-url`` and dropped afterwards. The client runs on the same
machine as the server, so on a small box it takes CPU from the server.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.wire import API_PREFIX, encode_embedding  # noqa: E402
from server.db import make_engine, make_session_factory, upgrade  # noqa: E402
from server.devices.service import create_device  # noqa: E402
from server.occupants.service import upsert_occupant  # noqa: E402
from server.sites.service import create_site  # noqa: E402

MODEL = "buffalo_s/w600k_mbf"  # the edge's bundled pack id


@dataclass(frozen=True)
class Result:
    backend: str
    workers: int
    phase: str
    sightings: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.sightings / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_batches(
    n_batches: int, size: int, unknown_share: float, occupants: list[int]
) -> list[bytes]:
    """Pre-serialised request bodies, so the client spends little CPU while timing."""
    rng = np.random.default_rng(0)
    crop_img = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", crop_img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    crop_b64 = base64.b64encode(buf.tobytes()).decode()
    t0 = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    bodies = []
    for b in range(n_batches):
        items = []
        for i in range(size):
            start = t0 + timedelta(seconds=b * size + i)
            item: dict[str, object] = {
                "id": str(uuid.uuid4()),
                "camera": f"cam-{i % 4}",
                "started_at": start.isoformat(),
                "ended_at": (start + timedelta(seconds=3)).isoformat(),
                "quality": 0.8,
            }
            if rng.random() < unknown_share:
                vec = rng.standard_normal(512).astype(np.float32)
                item.update(
                    kind="unknown",
                    model_id=MODEL,
                    embedding_b64=encode_embedding(vec / np.linalg.norm(vec)),
                    crop_jpeg_b64=crop_b64,
                )
            else:
                item.update(
                    kind="known",
                    occupant_id=int(rng.choice(occupants)),
                    similarity=0.6,
                )
            items.append(item)
        bodies.append(json.dumps({"sightings": items}).encode())
    return bodies


def prepare_db(url: str) -> tuple[str, list[int]]:
    """Migrate, create a site with occupants and a device; return (token, occupant ids)."""
    engine = make_engine(url)
    upgrade(engine)
    with make_session_factory(engine)() as s:
        site = create_site(session=s, name="Bench Court", model_id=MODEL)
        occ = [upsert_occupant(session=s, site_id=site.id, name=f"o{i}").id for i in range(50)]
        _dev, token = create_device(session=s, site_id=site.id, name="bench")
        s.commit()
    engine.dispose()
    return token, occ


def start_server(url: str, workers: int, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "LINTEL_DATABASE_URL": url,
        "LINTEL_DATA_DIR": str(data_dir),
        "LINTEL_ENV": "dev",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("server did not become healthy within 60 s")


def post_all(
    base: str, token: str, bodies: list[bytes], concurrency: int, expect: str
) -> tuple[float, list[float]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    clients = [httpx.Client(base_url=base, headers=headers, timeout=60) for _ in range(concurrency)]
    latencies: list[float] = []

    def send(i: int) -> None:
        t = time.perf_counter()
        r = clients[i % concurrency].post(f"{API_PREFIX}/device/sightings", content=bodies[i])
        latencies.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"batch {i}: HTTP {r.status_code}: {r.text[:300]}")
        result = r.json()
        n = len(json.loads(bodies[i])["sightings"]) if expect else 0
        if result["errors"] or result[expect] != n:
            raise RuntimeError(f"batch {i}: unexpected result {result}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(len(bodies))))
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    return elapsed, latencies


def run_backend(backend: str, url: str, args: argparse.Namespace, workers: int) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        token, occupants = prepare_db(url)
        warm = build_batches(args.warmup, args.batch_size, args.unknown_share, occupants)
        bodies = build_batches(args.batches, args.batch_size, args.unknown_share, occupants)
        proc, base = start_server(url, workers, Path(tmp))
        try:
            post_all(base, token, warm, args.concurrency, "created")
            results = []
            for phase, expect in (("new", "created"), ("re-sent", "duplicates")):
                elapsed, lat = post_all(base, token, bodies, args.concurrency, expect)
                results.append(
                    Result(backend, workers, phase, len(bodies) * args.batch_size, elapsed, lat)
                )
            return results
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def pg_database(admin_url: str) -> tuple[str, str]:
    """Create a fresh database; return (its SQLAlchemy URL, its name)."""
    import psycopg

    name = f"lintel_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _db = admin_url.rpartition("/")
    return f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}", name


def pg_drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="libpq URL of an existing database used to create/drop the bench DB",
    )
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=4, help="client threads")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    p.add_argument(
        "--unknown-share",
        type=float,
        default=0.2,
        help="share of unknown sightings (512-d embedding + 9 KB JPEG crop)",
    )
    args = p.parse_args()

    results: list[Result] = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            results += run_backend("sqlite", "", args, args.workers)
        elif backend == "postgresql":
            url, name = pg_database(args.pg_admin_url)
            try:
                results += run_backend("postgresql", url, args, args.workers)
            finally:
                pg_drop(args.pg_admin_url, name)
        else:
            p.error(f"unknown backend {backend!r}")

    print(
        f"\nbatches of {args.batch_size}, {args.concurrency} client threads, "
        f"{args.unknown_share:.0%} unknown (with embedding and crop), {os.cpu_count()} CPUs"
    )
    print(
        f"{'backend':<11} {'workers':>7} {'phase':<8} {'sightings':>9} {'seconds':>8} "
        f"{'sightings/s':>11} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for r in results:
        q = statistics.quantiles(r.latencies_ms, n=20)
        print(
            f"{r.backend:<11} {r.workers:>7} {r.phase:<8} {r.sightings:>9} {r.seconds:>8.2f} "
            f"{r.rate:>11.0f} {statistics.median(r.latencies_ms):>7.1f} {q[18]:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
