"""edge.client.LintelClient against the real server app, in-process (SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

import edge.client
from edge.client import (
    AuthRefused,
    ClientError,
    GalleryModelMismatch,
    LintelClient,
    Rejected,
    ServerUnreachable,
)
from edge.face.errors import LintelEdgeError
from edge.wire import MAX_BATCH, Heartbeat, SightingIn, decode_embedding, encode_embedding
from server.app import create_app
from server.db import make_engine, make_session_factory
from server.devices.service import create_device
from server.occupants.service import add_template, upsert_occupant
from server.settings import Settings
from server.sites.service import create_site
from tests.server.asgi import SyncASGITransport

T0 = datetime(2026, 11, 28, 19, 0, tzinfo=UTC)


class Server:
    def __init__(self, tmp: Path) -> None:
        settings = Settings(
            env="test",
            secret_key="edge-client-test-secret-000000",  # type: ignore[arg-type]
            data_dir=tmp,
            max_body_bytes=64 * 1024,
        )
        self.engine = make_engine(settings.sqlalchemy_url)
        self.app = create_app(settings, engine=self.engine)
        self.transport = SyncASGITransport(self.app)
        with make_session_factory(self.engine)() as s:
            site = create_site(session=s, name="Sunny Court", model_id="buffalo_s")
            _dev, self.token = create_device(session=s, site_id=site.id, name="gate")
            self.site_id = site.id
            s.commit()

    def enrol(self, seed: int, model_id: str = "buffalo_s") -> tuple[int, np.ndarray]:
        vec = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
        vec /= np.linalg.norm(vec)
        with make_session_factory(self.engine)() as s:
            occ = upsert_occupant(session=s, site_id=self.site_id, name=f"p{seed}")
            add_template(session=s, occupant_id=occ.id, embedding=vec, model_id=model_id)
            s.commit()
            return occ.id, vec

    def client(self, token: str | None = None, model_id: str | None = "buffalo_s") -> LintelClient:
        return LintelClient(
            "http://lintel.test",
            token or self.token,
            transport=self.transport,
            model_id=model_id,
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.transport.close()
    srv.engine.dispose()


def _unknown(n: int) -> SightingIn:
    vec = np.random.default_rng(100 + n).standard_normal(512).astype(np.float32)
    return SightingIn(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"track-{n}"),
        camera="door",
        started_at=T0 + timedelta(minutes=n),
        ended_at=T0 + timedelta(minutes=n, seconds=5),
        quality=0.7,
        kind="unknown",
        model_id="buffalo_s",
        embedding_b64=encode_embedding(vec / np.linalg.norm(vec)),
    )


def test_exported_names_are_pinned() -> None:
    assert sorted(edge.client.__all__) == [
        "AuthRefused",
        "ClientError",
        "GalleryModelMismatch",
        "LintelClient",
        "Refusal",
        "Rejected",
        "ServerUnreachable",
        "enrol",
    ]
    for name in edge.client.__all__:
        obj = getattr(edge.client, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ClientError) and issubclass(obj, LintelEdgeError)


def test_gallery_sync_with_etag(server: Server) -> None:
    occ, vec = server.enrol(1)
    with server.client() as c:
        gallery = c.fetch_gallery(None)
        assert gallery is not None
        assert [t.occupant_id for t in gallery.templates] == [occ]
        np.testing.assert_allclose(decode_embedding(gallery.templates[0].embedding_b64), vec)
        assert c.fetch_gallery(gallery.etag) is None  # unchanged: 304
        server.enrol(2)
        newer = c.fetch_gallery(gallery.etag)
        assert newer is not None and len(newer.templates) == 2
        assert newer.version > gallery.version


def test_edge_refuses_gallery_of_another_model(server: Server) -> None:
    server.enrol(1)
    with server.client(model_id="antelopev2") as c, pytest.raises(GalleryModelMismatch) as info:
        c.fetch_gallery(None)
    assert "antelopev2" in str(info.value) and "buffalo_s" in str(info.value)


def test_upload_is_idempotent(server: Server) -> None:
    occ, _ = server.enrol(1)
    known = SightingIn(
        id=uuid.uuid4(),
        camera="door",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=3),
        quality=0.9,
        kind="known",
        occupant_id=occ,
        similarity=0.7,
    )
    batch = [_unknown(i) for i in range(3)] + [known]
    with server.client() as c:
        first = c.upload_sightings(batch)
        assert (first.created, first.duplicates, first.errors) == (4, 0, [])
        again = c.upload_sightings(batch)
        assert (again.created, again.duplicates) == (0, 4)


def test_heartbeat_ack(server: Server) -> None:
    server.enrol(1)
    with server.client() as c:
        gallery = c.fetch_gallery(None)
        assert gallery is not None
        ack = c.heartbeat(Heartbeat(version="0.1.0", model_id="buffalo_s", uptime_s=3.0))
        assert ack.gallery_version == gallery.version


def test_bad_token_is_auth_refused(server: Server) -> None:
    with server.client(token="ltd_wrong") as c:
        with pytest.raises(AuthRefused) as info:
            c.fetch_gallery(None)
        assert not info.value.retryable
        with pytest.raises(AuthRefused):
            c.upload_sightings([_unknown(1)])


def test_oversized_body_is_rejected_not_retryable(server: Server) -> None:
    # 64 KiB limit in this app; 30 unknowns with 4 KiB crops each exceed it.
    import base64

    crop = base64.b64encode(b"\xff\xd8\xff" + bytes(4000)).decode()
    batch = [_unknown(i).model_copy(update={"crop_jpeg_b64": crop}) for i in range(30)]
    with server.client() as c, pytest.raises(Rejected) as info:
        c.upload_sightings(batch)
    assert info.value.status_code == 413
    assert not info.value.retryable


def test_unreachable_server_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler in (refuse, slow):
        with LintelClient("http://x", "t", transport=httpx.MockTransport(handler)) as c:
            with pytest.raises(ServerUnreachable) as info:
                c.heartbeat(Heartbeat(version="1"))
            assert info.value.retryable


def test_server_errors_are_retryable_and_4xx_carry_detail() -> None:
    def five(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="maintenance")

    def four(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": "a batch holds 1 to 500 sightings"})

    with (
        LintelClient("http://x", "t", transport=httpx.MockTransport(five)) as c,
        pytest.raises(ServerUnreachable),
    ):
        c.fetch_gallery(None)
    with LintelClient("http://x", "t", transport=httpx.MockTransport(four)) as c:
        with pytest.raises(Rejected) as info:
            c.fetch_gallery(None)
        assert info.value.status_code == 422
        assert info.value.detail == "a batch holds 1 to 500 sightings"


def test_unparseable_success_body_is_rejected() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>captive portal</html>")

    with (
        LintelClient("http://x", "t", transport=httpx.MockTransport(html)) as c,
        pytest.raises(Rejected),
    ):
        c.heartbeat(Heartbeat(version="1"))


def test_batch_size_limits_are_checked_before_sending() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with LintelClient("http://x", "t", transport=httpx.MockTransport(fail)) as c:
        assert c.upload_sightings([]).created == 0
        with pytest.raises(ValueError, match="at most"):
            c.upload_sightings([_unknown(i) for i in range(MAX_BATCH + 1)])
