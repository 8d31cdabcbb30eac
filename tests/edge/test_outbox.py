"""The store-and-forward outbox: durable, idempotent, bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.outbox import Outbox
from edge.wire import SightingIn, encode_embedding


def _sighting(n: int, *, crop_bytes: int = 0) -> SightingIn:
    t = datetime(2026, 11, 1, 8, 0, tzinfo=UTC) + timedelta(minutes=n)
    vec = np.zeros(512, np.float32)
    vec[n % 512] = 1.0
    return SightingIn(
        id=uuid.uuid5(uuid.NAMESPACE_OID, f"test-{n}"),
        camera="gate-1",
        started_at=t,
        ended_at=t + timedelta(seconds=3),
        quality=0.8,
        kind="unknown",
        model_id="buffalo_s/w600k_mbf",
        embedding_b64=encode_embedding(vec),
        crop_jpeg_b64="A" * crop_bytes if crop_bytes else None,
    )


def test_fifo_ack_and_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    for n in range(5):
        assert box.put(_sighting(n))
    first = box.peek(3)
    assert [e.sighting for e in first] == [_sighting(n) for n in range(3)]
    box.ack([e.id for e in first])
    box.close()

    reopened = Outbox(tmp_path / "outbox.db")
    rest = reopened.peek(10)
    assert [e.sighting for e in rest] == [_sighting(3), _sighting(4)]
    stats = reopened.stats()
    assert (stats.depth, stats.delivered, stats.dropped) == (2, 3, 0)


def test_same_sighting_is_queued_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box.put(_sighting(1)) is True
    assert box.put(_sighting(1)) is False
    assert box.stats().depth == 1


def test_full_outbox_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_bytes=64 * 1024)
    for n in range(20):
        box.put(_sighting(n, crop_bytes=8000))
    stats = box.stats()
    assert stats.bytes <= 64 * 1024
    assert stats.dropped == 20 - stats.depth
    assert stats.dropped > 0
    kept = [e.sighting.id for e in box.peek(100)]
    # the newest survive, the oldest went first
    assert kept == [_sighting(n).id for n in range(20 - stats.depth, 20)]


def test_rejected_items_move_to_dead_table(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put(_sighting(1))
    box.put(_sighting(2))
    box.fail([str(_sighting(1).id)])
    assert box.peek(1)[0].attempts == 1
    box.bury({str(_sighting(1).id): "unknown camera"})
    stats = box.stats()
    assert (stats.depth, stats.dead) == (1, 1)
    assert box.peek(5)[0].sighting == _sighting(2)


def test_kill_9_loses_no_committed_sighting(tmp_path: Path) -> None:
    """A writer killed mid-stream keeps every sighting it reported as stored."""
    db = tmp_path / "o.db"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from edge.outbox import Outbox
        from test_outbox import _sighting
        box = Outbox(Path({str(db)!r}))
        n = 0
        while True:
            box.put(_sighting(n))
            sys.stdout.write(f"{{n}}\\n")
            sys.stdout.flush()
            n += 1
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert proc.stdout is not None
    reported = []
    deadline = time.monotonic() + 60
    while len(reported) < 50 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert len(reported) >= 50, "the writer did not get going"

    box = Outbox(db)
    stored = {e.sighting.id for e in box.peek(100_000)}
    box.close()
    missing = [n for n in reported if _sighting(n).id not in stored]
    assert missing == []


def test_tiny_limit_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 KiB"):
        Outbox(tmp_path / "o.db", max_bytes=1000)
