"""Database plumbing: declarative base, engine, sessions and migrations.

House rule: services only ``flush()``; whoever opened the session (a request
via :func:`server.deps.get_session`'s caller, or :func:`session_scope`)
commits or rolls back, so one action with several effects is one transaction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Stable constraint names so Alembic migrations can drop/alter them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every server model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases.

    SQLite has no time zones; without this, values written aware come back
    naive and comparisons between the two raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """Aware current time in UTC."""
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers do not block the writer; busy_timeout: a second writer
    # (another worker) waits instead of failing at once with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # Deleted rows (an erased person, purged embeddings) are overwritten with
    # zeros, not left in free pages for anyone who reads the file.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file's folder 0700 and the file 0600 before SQLite opens it.

    SQLite creates files with the process umask (usually 0644) and gives the
    -wal and -shm files the main file's mode, so setting it here covers all three.
    An existing file is narrowed to 0600 too (it holds faces and names).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            try:
                path.chmod(0o600)
            except PermissionError:  # another user's file: SQLite decides what we may do
                log.warning("%s is readable by others and not ours to chmod 0600", path)


def checkpoint_sqlite(engine: Engine) -> None:
    """Fold the WAL into the database file and truncate it to zero bytes (SQLite only).

    Run after a commit that erased or purged personal data: until a
    checkpoint the deleted rows' old pages stay readable in ``-wal``. A
    no-op on PostgreSQL. A checkpoint that readers hold up is logged, not
    raised (the next one finishes the job).
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        conn.commit()
    if busy:
        log.warning("WAL checkpoint held up by a reader: erased data stays in -wal until the next")


_CHECKPOINT_KEY = "lintel.checkpoint_after_commit"


def checkpoint_after_commit(session: Session) -> None:
    """Run :func:`checkpoint_sqlite` once this session's transaction commits.

    For services that erase personal data: they only flush (the caller owns
    the commit), and a checkpoint inside the transaction would fold nothing.
    """
    session.info[_CHECKPOINT_KEY] = True


@event.listens_for(Session, "after_commit")
def _checkpoint_if_asked(session: Session) -> None:
    if session.info.pop(_CHECKPOINT_KEY, False):
        bind = session.get_bind()
        checkpoint_sqlite(bind if isinstance(bind, Engine) else bind.engine)


@event.listens_for(Session, "after_rollback")
def _forget_checkpoint(session: Session) -> None:
    session.info.pop(_CHECKPOINT_KEY, None)


def make_engine(
    url: str, *, pool_size: int = 5, max_overflow: int | None = None, pool_timeout_s: float = 30.0
) -> Engine:
    """An engine for ``url`` with Lintel's per-database settings.

    The pool (``pool_size`` kept, ``max_overflow`` more under load, default as
    many again; ``pool_timeout_s`` the wait for a free one) applies to
    PostgreSQL and to a SQLite file alike: both are served from a queue pool.
    """
    parsed = make_url(url)
    overflow = pool_size if max_overflow is None else max_overflow
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False},
                pool_size=pool_size,
                max_overflow=overflow,
                pool_timeout=pool_timeout_s,
            )
        else:  # one in-memory database per connection: no pool to size
            engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=overflow,
        pool_timeout=pool_timeout_s,
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(engine: Engine) -> Any:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (idempotent; safe with concurrent starters)."""
    from alembic import command

    cfg = alembic_config(engine)
    with _migration_connection(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Several workers starting at once: one migrates, the others wait
            # (transaction-scoped lock, released at commit).
            conn.execute(text("SELECT pg_advisory_xact_lock(7411093)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.info("database at %s", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` empties it)."""
    from alembic import command

    cfg = alembic_config(engine)
    with _migration_connection(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction for migrations; foreign keys off on SQLite.

    SQLite rebuilds a table to change it (batch mode: copy, DROP, rename), and
    with foreign keys on, that DROP deletes the children through every ON
    DELETE CASCADE (a rebuilt ``sightings`` would take every crop with it).
    The pragma only works outside a transaction, so it is set before BEGIN,
    the keys are checked before commit, and it is set back on the pooled
    connection afterwards. The BEGIN is explicit: Python's sqlite3 opens a
    transaction only before INSERT/UPDATE/DELETE, so a failed migration would
    leave its CREATE TABLEs behind (and a half-rebuilt table).
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        raw: Any = conn.connection.dbapi_connection
        implicit = raw.isolation_level
        raw.isolation_level = None  # no implicit BEGINs: ours covers the DDL too
        try:
            with conn.begin():
                conn.exec_driver_sql("BEGIN")
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                if broken is not None:
                    raise RuntimeError(f"migration left a broken foreign key: {tuple(broken)}")
        finally:
            raw.isolation_level = implicit
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None when unmigrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
