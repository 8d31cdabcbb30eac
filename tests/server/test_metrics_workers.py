"""``lintel-server run --workers 2``: /metrics counts every worker's requests, whichever answers.

A real server in a subprocess (two uvicorn worker processes on SQLite); each
request and each scrape is a new connection, so the kernel spreads them over
both workers.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REQUESTS = 40
LINE = re.compile(
    r'^lintel_http_requests_total\{method="GET",route="/healthz",status="200"\} ([0-9.e+]+)$',
    re.M,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=10) as c:  # a new connection every time
        return c.get(url)


def test_metrics_sum_over_workers(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "LINTEL_DATA_DIR": str(tmp_path),
        "LINTEL_DATABASE_URL": f"sqlite:///{tmp_path / 'lintel.sqlite3'}",
        "LINTEL_ENV": "dev",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "run", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if _get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        # Both workers must be up before counting (the first answer may come from one).
        time.sleep(2)
        before = _healthz_count(base)
        for _ in range(REQUESTS):
            assert _get(f"{base}/healthz").status_code == 200
        counts = {_healthz_count(base) for _ in range(6)}
        assert counts == {before + REQUESTS}, counts
        samples = list((tmp_path / "prometheus-multiproc").glob("*.db"))
        assert len({p.name.rsplit("_", 1)[-1] for p in samples}) >= 2, samples  # 2 worker pids
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _healthz_count(base: str) -> int:
    text = _get(f"{base}/metrics").text
    m = LINE.search(text)
    return int(float(m.group(1))) if m else 0
