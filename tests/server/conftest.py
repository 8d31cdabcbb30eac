"""Server test fixtures: every DB-backed test runs on SQLite and on PostgreSQL.

Each test session creates its own PostgreSQL database (``lintel_test_<hex>``)
and drops it at the end, so parallel runs (other developers, CI) never share
state. Databases are migrated once per session; tests are isolated by
emptying every table afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import Session

from server.app import create_app
from server.clusters import worker as cluster_worker
from server.db import make_engine, make_session_factory, upgrade
from server.devices.service import create_device
from server.settings import Settings
from server.sites.service import create_site
from tests.server.asgi import SyncASGITransport

PG_HOST = os.environ.get("LINTEL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LINTEL_TEST_PG_PORT", "5432"))
TEST_SECRET = "test-secret-" + "x" * 20
MODEL = "buffalo_s"


def _pg_admin() -> tuple[object, str]:
    """An autocommit connection to a maintenance database, and the user it used."""
    import psycopg

    last: Exception | None = None
    for user in ("postgres", "root"):
        for dbname in ("test", "postgres"):
            try:
                conn = psycopg.connect(
                    host=PG_HOST,
                    port=PG_PORT,
                    dbname=dbname,
                    user=user,
                    autocommit=True,
                    connect_timeout=3,
                )
                return conn, user
            except psycopg.OperationalError as exc:
                last = exc
    raise RuntimeError(str(last))


@pytest.fixture(autouse=True)
def fresh_site_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no site in back-off: a site that failed in one test's
    database must not be skipped in the next test's (site ids repeat across tests)."""
    monkeypatch.setattr(cluster_worker, "DEFAULT_BACKOFF", cluster_worker.SiteBackoff())


@pytest.fixture(scope="session")
def pg_factory() -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases for this session; drops them all at the end."""
    try:
        conn, user = _pg_admin()
    except Exception as exc:  # any failure means: no PostgreSQL here
        if os.environ.get("LINTEL_REQUIRE_POSTGRES"):
            # CI sets this: there a missing PostgreSQL is a broken setup, not a skip.
            pytest.fail(f"LINTEL_REQUIRE_POSTGRES is set but PostgreSQL is unreachable: {exc}")
        pytest.skip(
            f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT} ({exc}); "
            "skipping the PostgreSQL half of the server tests"
        )
    made: list[str] = []

    def make() -> str:
        name = f"lintel_test_{secrets.token_hex(6)}"
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
        made.append(name)
        return f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    for name in made:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
    conn.close()  # type: ignore[attr-defined]


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a migrated database of this session, one per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'lintel.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_factory")()
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    return url


@pytest.fixture(scope="session")
def _session_engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


_REFLECTED: dict[str, MetaData] = {}


def _empty_all_tables(eng: Engine) -> None:
    # Children before parents, so plain DELETEs satisfy the foreign keys;
    # on small tables that is much cheaper than TRUNCATE on PostgreSQL.
    # Reflected (not Base.metadata) so tables of every package are emptied.
    meta = _REFLECTED.get(str(eng.url))
    if meta is None:
        meta = _REFLECTED[str(eng.url)] = MetaData()
        meta.reflect(eng)
    with eng.begin() as conn:
        for table in reversed(meta.sorted_tables):
            if table.name != "alembic_version":
                conn.execute(table.delete())


@pytest.fixture
def engine(_session_engine: Engine) -> Iterator[Engine]:
    """The session's migrated engine; every table is emptied after the test."""
    yield _session_engine
    _empty_all_tables(_session_engine)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session for service-level tests (the test commits when it wants to)."""
    s = make_session_factory(engine)()
    yield s
    s.rollback()
    s.close()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        database_url=db_url,
        data_dir=tmp_path,
        migrate_on_start=False,
        max_body_bytes=256 * 1024,
        default_model_id=MODEL,
    )


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    return create_app(settings, engine=engine)


@pytest.fixture
def transport(app: FastAPI) -> Iterator[SyncASGITransport]:
    t = SyncASGITransport(app)
    yield t
    t.close()


@pytest.fixture
def client(transport: SyncASGITransport) -> Iterator[httpx.Client]:
    """Plain httpx client on the in-process app (no auth header)."""
    with httpx.Client(transport=transport, base_url="http://lintel.test") as c:
        yield c


@dataclass(frozen=True)
class DeviceCreds:
    site_id: int
    device_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_device(engine: Engine) -> Callable[..., DeviceCreds]:
    """Creates (and commits) a site and a device in it; returns the credentials."""
    factory = make_session_factory(engine)

    def make(site: str = "Sunny Court", name: str = "gate-1", model_id: str = MODEL) -> DeviceCreds:
        with factory() as s:
            from sqlalchemy import select

            from server.sites.models import Site

            existing = s.scalar(select(Site).where(Site.name == site))
            site_row = existing or create_site(session=s, name=site, model_id=model_id)
            device, token = create_device(session=s, site_id=site_row.id, name=name)
            s.commit()
            return DeviceCreds(site_id=site_row.id, device_id=device.id, token=token)

    return make


@pytest.fixture
def device(make_device: Callable[..., DeviceCreds]) -> DeviceCreds:
    return make_device()
