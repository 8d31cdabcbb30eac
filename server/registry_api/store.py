"""The registry importer's store on the server's database: SQL behind :class:`RegistryStore`.

The importer (:mod:`registry.importer`) is a pure library; this is where its
:class:`~registry.store.Plan` is written. It writes through the server's own
services (``server.sites.service``, ``server.occupants.service``), so an import
obeys the same rules as the API: units keyed by the standard address,
templates stored with their model id, the site's gallery version bumped so
edges re-sync. It lives on the server side because it needs the server's
models; ``lintel-registry import --db`` (an entry point, top floor) imports it.

:class:`SqlStore` opens its own database (the local ``--db`` mode);
:class:`SessionStore` works inside the caller's session (the import route).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import delete, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from registry.errors import InputError, StoreError
from registry.store import SOURCE_PREFIX, Plan, SiteSnapshot, StoredOccupant
from server.audit import service as audit
from server.db import current_revision, make_engine, make_session_factory, session_scope, upgrade
from server.errors import LintelError
from server.occupants import service as occupants
from server.occupants.models import FaceTemplate, Occupant
from server.settings import Settings
from server.sites import service as sites
from server.sites.models import Site, Unit


class SqlStore:
    """A :class:`~registry.store.RegistryStore` over the server's SQLAlchemy models and services."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:

        self.url = url
        self._empty = False
        try:
            parsed = make_url(url)
        except Exception:  # SQLAlchemy raises ArgumentError and ValueError variants
            raise StoreError(f"--db {_safe_url(url)}: not a database URL") from None
        if not migrate and parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            # A dry run must not create the database file as a side effect.
            if database and database != ":memory:" and not Path(database).exists():
                self._empty = True
                url = "sqlite://"
        try:
            self.engine = make_engine(url)
            if migrate:
                upgrade(self.engine)
            elif current_revision(self.engine) is None:
                self._empty = True
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database {_safe_url(url)}: {_brief(exc)}") from None
        self._factory = make_session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def snapshot(self, site: str) -> SiteSnapshot:
        try:
            return self._snapshot(site)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"site {site!r}: cannot read the register: {_brief(exc)} "
                "(is the database migrated to this version of Lintel?)"
            ) from None

    def _snapshot(self, site: str) -> SiteSnapshot:
        if self._empty:
            return SiteSnapshot(site, None, None, 0)
        with session_scope(self._factory) as session:
            return read_snapshot(session, site)

    def apply(self, plan: Plan) -> int:
        try:
            with session_scope(self._factory) as session:
                return _apply(session, plan)
        except LintelError as exc:
            raise StoreError(
                f"site {plan.site!r}: the database refused the import: {exc}"
            ) from None
        except SQLAlchemyError as exc:
            raise StoreError(
                f"site {plan.site!r}: database error, nothing written: {_brief(exc)}"
            ) from None


class SessionStore:
    """A :class:`~registry.store.RegistryStore` in a caller's session (the import route).

    Reads and writes in the caller's transaction and only flushes: the caller
    commits (or rolls back), so the snapshot the plan was made from and the
    write are one transaction. Errors propagate unchanged (the route maps them).
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    def snapshot(self, site: str) -> SiteSnapshot:
        return read_snapshot(self.session, site)

    def apply(self, plan: Plan) -> int:
        return _apply(self.session, plan)


def read_snapshot(session: Session, site: str) -> SiteSnapshot:
    """A site's register as the importer needs it (``site_id`` None: no such site)."""
    row = session.scalar(select(Site).where(Site.name == site))
    if row is None:
        return SiteSnapshot(site, None, None, 0)
    photos: dict[int, set[str]] = {}
    templates: list[tuple[int, bytes]] = []
    registry: list[tuple[int, str, bytes]] = []
    for occupant_id, source, model_id, embedding in session.execute(
        select(
            FaceTemplate.occupant_id,
            FaceTemplate.source,
            FaceTemplate.model_id,
            FaceTemplate.embedding,
        )
        .where(FaceTemplate.site_id == row.id)
        .order_by(FaceTemplate.id)
    ):
        if model_id != row.model_id:
            continue  # another model's template: re-enrolled and replaced on import
        templates.append((occupant_id, embedding))
        if source.startswith(SOURCE_PREFIX):
            sha = source[len(SOURCE_PREFIX) :]
            photos.setdefault(occupant_id, set()).add(sha)
            registry.append((occupant_id, sha, embedding))
    occupants: list[StoredOccupant] = []
    query = (
        select(Occupant, Unit.address_key)
        .outerjoin(Unit, Unit.id == Occupant.unit_id)
        .where(Occupant.site_id == row.id)
        .order_by(Occupant.id)
    )
    for occ, unit_key in session.execute(query):
        occupants.append(
            StoredOccupant(
                id=occ.id,
                name=occ.name,
                unit_key=unit_key,
                role=occ.role,
                phone=occ.phone,
                external_id=occ.external_id,
                id_hash=occ.id_hash,
                id_last4=occ.id_last4,
                move_in=occ.move_in,
                status=occ.status,
                photo_sha256s=frozenset(photos.get(occ.id, ())),
            )
        )
    return SiteSnapshot(
        site,
        row.id,
        row.model_id,
        row.gallery_version,
        tuple(occupants),
        tuple(templates),
        tuple(registry),
    )


def _apply(session: Session, plan: Plan) -> int:
    """Write a plan through the server's services (flush only; the caller commits)."""
    site = session.scalar(select(Site).where(Site.name == plan.site))
    if site is None:
        site = sites.create_site(session=session, name=plan.site, model_id=plan.model_id)
    units: dict[str, int] = {}
    touched_gallery = False
    for change in plan.changes:
        record = change.record
        key = record.unit.key
        if key not in units:
            building = sites.get_or_create_building(
                session=session, site_id=site.id, name=f"{record.unit.building}幢"
            )
            units[key] = sites.get_or_create_unit(
                session=session,
                site_id=site.id,
                address_key=key,
                address=record.unit.display,
                building_id=building.id,
            ).id
        existing = session.get(Occupant, change.occupant_id) if change.occupant_id else None
        occupant = occupants.upsert_occupant(
            session=session,
            site_id=site.id,
            name=record.name,
            unit_id=units[key],
            role=record.role.value,
            phone=record.phone,
            external_id=record.external_id,
            id_hash=record.protected_id.id_hash if record.protected_id else None,
            id_last4=record.protected_id.last4 if record.protected_id else None,
            move_in=record.move_in,
            move_out=None,
            status="active",
            # upsert_occupant writes every field: keep the consent record.
            consent_at=existing.consent_at if existing else None,
            consent_ref=existing.consent_ref if existing else None,
            notice_given_at=existing.notice_given_at if existing else None,
        )
        if change.occupant_id is not None and occupant.id != change.occupant_id:
            raise StoreError(
                f"row {record.row}: matched occupant {change.occupant_id} at planning but "
                f"{occupant.id} when writing (changed concurrently?)"
            )
        if (
            change.photos is not None
            and change.action == "update"
            and _delete_registry_templates(session, occupant.id, change.photos, site.model_id)
        ):
            touched_gallery = True
        for face in change.faces:
            occupants.add_template(
                session=session,
                occupant_id=occupant.id,
                embedding=face.embedding,
                model_id=face.model_id,
                quality=face.quality,
                source=SOURCE_PREFIX + face.photo_sha256,
                bump=False,  # one bump for the whole import, below
                chip=face.chip,
            )
            touched_gallery = True
    for occupant_id in plan.move_out:
        occ = session.get(Occupant, occupant_id)
        if occ is None or occ.site_id != site.id:
            raise StoreError(f"occupant {occupant_id} is not on site {plan.site!r}")
        occ.status = "moved_out"
        occ.move_out = plan.move_out_date
        # Their face leaves the gallery and the database (deletion on move-out).
        occupants.delete_templates(session=session, occupant_id=occupant_id)
        touched_gallery = True
    audit.record(
        session=session,
        actor=plan.actor,
        action="registry.import",
        object_type="site",
        object_id=site.id,
        site_id=site.id,
        detail={
            "source": plan.source,
            "created": sum(c.action == "create" for c in plan.changes),
            "updated": sum(c.action == "update" for c in plan.changes),
            "templates": sum(len(c.faces) for c in plan.changes),
            "moved_out": len(plan.move_out),
        },
    )
    session.flush()
    if touched_gallery:
        # Added templates did not bump (bump=False): one bump for the whole import.
        sites.bump_gallery_version(session=session, site_id=site.id)
    session.refresh(site)
    return site.gallery_version


def _delete_registry_templates(
    session: Session, occupant_id: int, keep: frozenset[str], model_id: str
) -> int:
    """Drop the registry templates an earlier import made of photos not in ``keep`` (and
    any of another model); templates from cases or whitelists stay. Returns how many."""
    result = session.execute(
        delete(FaceTemplate).where(
            FaceTemplate.occupant_id == occupant_id,
            FaceTemplate.source.startswith(SOURCE_PREFIX),
            or_(
                FaceTemplate.source.not_in(sorted(SOURCE_PREFIX + sha for sha in keep)),
                FaceTemplate.model_id != model_id,
            ),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _brief(exc: BaseException) -> str:
    """The first line of a database error (SQLAlchemy appends the SQL and a help link)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL: show only its scheme
        return url.split(":", 1)[0] + ":..."


def local_secret_and_url(db: str | None) -> tuple[bytes, str]:
    """``lintel-registry import --db``: the ID-hash key and the database URL.

    Both come from the server's own settings (LINTEL_*), so ID numbers hash the
    same as through the server's API; ``db`` overrides the URL.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        raise InputError(f"server settings (LINTEL_*) are invalid: {exc}") from None
    secret = settings.secret_key.get_secret_value().encode("utf-8")
    if len(secret) < 16:
        raise InputError("LINTEL_SECRET_KEY is shorter than 16 bytes; ID hashes need a real key")
    return secret, db or settings.sqlalchemy_url


def open_local_store(db: str | None, *, migrate: bool) -> tuple[bytes, SqlStore]:
    """``lintel-registry import --db``'s store (registered as the entry point
    ``lintel.registry.local_store`` in pyproject.toml, so the registry library finds
    it without importing the server)."""
    secret, url = local_secret_and_url(db)
    return secret, SqlStore(url, migrate=migrate)
