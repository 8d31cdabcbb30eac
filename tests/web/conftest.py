"""Web UI fixtures: one migrated SQLite database per test session, emptied after each test.

The web layer is database-agnostic (every change goes through the cases
services, which run on both databases in tests/server), so these tests use
SQLite by default and stay fast.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from server.app import create_app
from server.db import make_engine, upgrade
from server.settings import Settings
from tests.server.asgi import SyncASGITransport
from tests.server.conftest import MODEL, TEST_SECRET, _empty_all_tables
from tests.web.browser import CHROMIUM, LAUNCH_ARGS
from tests.web.world import World, build_world


@pytest.fixture(scope="session")
def _web_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # LINTEL_TEST_WEB_DB_URL runs them on another (empty, disposable) database,
    # e.g. a PostgreSQL one, by hand.
    url = os.environ.get("LINTEL_TEST_WEB_DB_URL") or (
        f"sqlite:///{tmp_path_factory.mktemp('webdb') / 'lintel.sqlite3'}"
    )
    eng = make_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def engine(_web_engine: Engine) -> Iterator[Engine]:
    """The migrated engine; every table is emptied after the test."""
    yield _web_engine
    _empty_all_tables(_web_engine)


@pytest.fixture
def settings(_web_engine: Engine, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        database_url=str(_web_engine.url),
        data_dir=tmp_path,
        migrate_on_start=False,
        default_model_id=MODEL,
    )


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    return create_app(settings, engine=engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[httpx.Client]:
    """An httpx client on the in-process app that keeps cookies and does not follow redirects."""
    transport = SyncASGITransport(app)
    with httpx.Client(transport=transport, base_url="http://lintel.test") as c:
        yield c
    transport.close()


@pytest.fixture
def world(engine: Engine) -> World:
    return build_world(engine)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless chromium for the whole test session (tests/web/browser.py)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on loopback for the length of one test."""
    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http="h11", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
