"""Issue 17 T: the running daemon picks up a new device token after a refusal.

A fake server (``httpx.MockTransport``) accepts one token at a time; the client,
the :class:`~edge.daemon.token_watch.TokenWatch` and the forwarder are the real
ones. The live version (real server and daemon processes) is
``tests/integration/test_daemon_token_live.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge.client import AuthRefused, LintelClient
from edge.daemon.config import CameraConfig, DeviceConfig, EdgeConfig, ServerConfig
from edge.daemon.forwarder import Forwarder
from edge.daemon.token_watch import TokenSource, TokenWatch
from edge.enrol import write_token
from edge.outbox import Outbox
from edge.wire import SightingIn, encode_embedding

ENV = "LINTEL_TEST_TOKEN_WATCH"
T0 = datetime(2026, 12, 6, 10, 42, tzinfo=UTC)


class FakeServer:
    """Accepts ``Bearer <accepted>`` only (401 otherwise); stores sightings by id."""

    def __init__(self, accepted: str, refusal: int = 401) -> None:
        self.accepted = accepted
        self.refusal = refusal  # this server answers 401; a proxy or a future one, 403
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, int]] = []  # (path, token, status)
        self.sightings: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.lock:
            if token != self.accepted:
                self.calls.append((request.url.path, token, self.refusal))
                return httpx.Response(
                    self.refusal, json={"detail": "unknown or disabled device token"}
                )
            self.calls.append((request.url.path, token, 200))
            if request.url.path.endswith("/device/sightings"):
                ids = [s["id"] for s in json.loads(request.content)["sightings"]]
                fresh = [i for i in ids if i not in self.sightings]
                self.sightings.extend(fresh)
                return httpx.Response(
                    200, json={"created": len(fresh), "duplicates": len(ids) - len(fresh)}
                )
            return httpx.Response(404, json={"detail": "not in this fake"})

    def uploads(self) -> list[tuple[str, str, int]]:
        with self.lock:
            return [c for c in self.calls if c[0].endswith("/device/sightings")]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def _config(data_dir: Path, **server: object) -> EdgeConfig:
    return EdgeConfig(
        device=DeviceConfig(name="gate-7", data_dir=data_dir),
        server=ServerConfig(url="http://fake", token_env=ENV, **server),  # type: ignore[arg-type]
        cameras=[CameraConfig(name="door", source="rtsp://192.0.2.1/stream")],
    )


def _sighting(n: int) -> SightingIn:
    vec = np.random.default_rng(n).standard_normal(512).astype(np.float32)
    return SightingIn(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"token-watch-{n}"),
        camera="door",
        started_at=T0 + timedelta(minutes=n),
        ended_at=T0 + timedelta(minutes=n, seconds=4),
        quality=0.7,
        kind="unknown",
        model_id="buffalo_s",
        embedding_b64=encode_embedding(vec / np.linalg.norm(vec)),
    )


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer("tok-old")


@pytest.fixture
def client(fake: FakeServer) -> Iterator[LintelClient]:
    with LintelClient("http://fake", "tok-old", transport=httpx.MockTransport(fake.handle)) as c:
        yield c


def _bump_mtime(path: Path) -> None:
    # Two writes within one mtime tick are possible on coarse file systems; the
    # watch also compares inode and size, but make the change unmistakable.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("status", [401, 403])
def test_client_records_a_refusal_once_and_clears_it_when_a_request_passes(
    fake: FakeServer, client: LintelClient, status: int
) -> None:
    fake.refusal = status
    client.upload_sightings([_sighting(1)])
    assert client.refused is None
    fake.accepted = "tok-new"  # rotated in the web
    with pytest.raises(AuthRefused) as first:
        client.upload_sightings([_sighting(2)])
    assert first.value.status_code == status and first.value.generation == 0
    refusal = client.refused
    assert refusal is not None and refusal.status_code == status
    assert refusal.detail == "unknown or disabled device token"
    with pytest.raises(AuthRefused):
        client.upload_sightings([_sighting(2)])
    assert client.refused == refusal, "the first refusal's time is kept"

    assert client.set_token("tok-new") and client.token_generation == 1
    assert not client.set_token("tok-new"), "the same token is no swap"
    client.upload_sightings([_sighting(2)])
    assert client.refused is None
    assert [c[1] for c in fake.uploads()] == ["tok-old", "tok-old", "tok-old", "tok-new"]


def test_a_changed_token_file_is_swapped_in_an_unchanged_one_is_not(
    tmp_path: Path, fake: FakeServer, client: LintelClient
) -> None:
    config = _config(tmp_path)
    write_token(config.token_path(), "tok-old")
    woken = threading.Event()
    watch = TokenWatch(config, client, wakeups=[woken])
    fake.accepted = "tok-new"
    with pytest.raises(AuthRefused) as refused:
        client.upload_sightings([_sighting(1)])

    # Nothing changed on disk: no swap, the caller backs off.
    assert not watch.recovered(refused.value)
    assert client.token_generation == 0 and not woken.is_set()

    # `lintel-edge enrol` rewrites the file: the next look swaps the token.
    write_token(config.token_path(), "tok-new")
    _bump_mtime(config.token_path())
    assert watch.recovered(refused.value)
    assert client.token_generation == 1 and woken.is_set()
    client.upload_sightings([_sighting(1)])
    assert fake.uploads()[-1] == ("/api/v1/device/sightings", "tok-new", 200)
    assert client.refused is None

    # Another thread refused with the old token meanwhile: it retries at once too.
    assert watch.recovered(refused.value)
    # A file rewritten with the same token is looked at but is no swap.
    write_token(config.token_path(), "tok-new")
    _bump_mtime(config.token_path())
    assert not watch.reload() and client.token_generation == 1


def test_an_emptied_token_file_keeps_the_old_token(
    tmp_path: Path, fake: FakeServer, client: LintelClient
) -> None:
    config = _config(tmp_path)
    write_token(config.token_path(), "tok-old")
    watch = TokenWatch(config, client)
    config.token_path().write_text("\n")
    _bump_mtime(config.token_path())
    assert not watch.reload()
    assert client.token_generation == 0
    client.upload_sightings([_sighting(1)])  # still the old, accepted token


def test_the_environment_variable_wins_over_the_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeServer, client: LintelClient
) -> None:
    monkeypatch.setenv(ENV, "tok-old")
    config = _config(tmp_path)
    watch = TokenWatch(config, client)
    assert watch.source is TokenSource.ENV
    fake.accepted = "tok-new"
    with pytest.raises(AuthRefused) as refused:
        client.upload_sightings([_sighting(1)])
    write_token(config.token_path(), "tok-new")  # enrolled, but the variable wins
    assert not watch.recovered(refused.value)
    assert client.token_generation == 0
    problem = watch.problem()
    assert problem is not None and f"${ENV}" in problem and "unset it" in problem
    assert watch.status()["token_source"] == "env"

    monkeypatch.setenv(ENV, "tok-new")  # as a restarted process would see it
    assert watch.recovered(refused.value)
    client.upload_sightings([_sighting(1)])


def test_the_refusal_is_worded_for_a_technician(
    tmp_path: Path, fake: FakeServer, client: LintelClient
) -> None:
    config = _config(tmp_path)
    watch = TokenWatch(config, client)
    assert watch.problem() is None
    assert watch.status() == {
        "token_source": "file",
        "token_refused_since": None,
        "token_refused_status": None,
        "problem": None,
    }
    fake.accepted = "tok-new"
    before = datetime.now(UTC)
    with pytest.raises(AuthRefused):
        client.upload_sightings([_sighting(1)])
    status = watch.status()
    since = datetime.fromisoformat(str(status["token_refused_since"]))
    assert before <= since <= datetime.now(UTC)
    assert status["token_refused_status"] == 401
    problem = str(status["problem"])
    assert problem.startswith(
        "the server refused this box's token since "
        f"{since.astimezone().strftime('%Y-%m-%d %H:%M')} (401: unknown or disabled device token)"
    )
    assert "Devices -> gate-7" in problem and "lintel-edge enrol" in problem
    assert "no restart" in problem and "$" not in problem  # no env-var note for a file


def test_the_forwarder_retries_at_once_with_a_new_token_and_waits_without_one(
    tmp_path: Path, fake: FakeServer, client: LintelClient
) -> None:
    # retry_max_s is long: a delivery within a second can only come from the swap.
    config = _config(tmp_path, retry_max_s=60, upload_interval_s=0.05, batch_size=2)
    write_token(config.token_path(), "tok-old")
    outbox = Outbox(tmp_path / "outbox.db")
    forwarder = Forwarder(outbox, client, config.server)
    watch = TokenWatch(config, client, wakeups=[forwarder.wakeup])
    forwarder.tokens = watch
    fake.accepted = "tok-new"  # rotated before the box uploads
    for n in range(5):
        outbox.put(_sighting(n))
    stop = threading.Event()
    thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not fake.uploads() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        # Unchanged token: one refused attempt, then it waits (no hammering).
        assert [c[2] for c in fake.uploads()] == [401]
        assert outbox.stats().depth == 5 and outbox.stats().dead == 0

        write_token(config.token_path(), "tok-new")
        _bump_mtime(config.token_path())
        t0 = time.monotonic()
        watch.tick()  # the main loop's periodic look
        while outbox.stats().depth and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        took = time.monotonic() - t0
    finally:
        stop.set()
        forwarder.wakeup.set()
        thread.join(timeout=5)
    stats = outbox.stats()
    assert stats.depth == 0 and stats.dead == 0 and stats.dropped == 0
    assert took < 2.0, f"delivery took {took:.1f} s after the new token"
    assert sorted(fake.sightings) == sorted(str(_sighting(n).id) for n in range(5))
    assert len(fake.sightings) == 5, "a sighting was delivered twice"
    assert client.refused is None and watch.problem() is None
    outbox.close()


def test_tick_logs_each_change_once_and_wakes_the_threads_when_the_token_passes_again(
    tmp_path: Path,
    fake: FakeServer,
    client: LintelClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A disabled device enabled again: the same token, accepted by some other request
    # (a heartbeat); the forwarder waiting out its back-off must hear of it.
    config = _config(tmp_path)
    woken = threading.Event()
    watch = TokenWatch(config, client, wakeups=[woken])
    fake.accepted = "nobody"  # disabled
    for _ in range(3):
        with pytest.raises(AuthRefused):
            client.upload_sightings([_sighting(1)])
        watch.tick()
    refusals = [r for r in caplog.records if "refused this box's token" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "ERROR"
    assert refusals[0].getMessage() == watch.problem()
    assert not woken.is_set()

    fake.accepted = "tok-old"  # enabled
    client.upload_sightings([_sighting(1)])
    watch.tick()
    assert woken.is_set()
    assert sum("accepts this box's token again" in r.getMessage() for r in caplog.records) == 1
    woken.clear()
    watch.tick()
    assert not woken.is_set(), "woken once per recovery, not at every tick"
