"""Opt-in: run a web test module on SQLite AND PostgreSQL.

tests/web/conftest.py gives every module one SQLite database (the web layer is
database-agnostic and stays fast). A module that exercises new tables or
queries imports this fixture, which overrides ``_web_engine`` for that module
with one migrated database per backend::

    from tests.web.backends import pg_factory, web_engine_on_both_backends  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from server.db import make_engine, upgrade
from tests.server.conftest import pg_factory as pg_factory  # the PostgreSQL half needs it


@pytest.fixture(
    scope="module",
    name="_web_engine",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def web_engine_on_both_backends(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """This module's migrated database, one per backend (overrides conftest's)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('webdb2') / 'lintel.sqlite3'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("pg_factory")
        url = make()
    eng = make_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()
