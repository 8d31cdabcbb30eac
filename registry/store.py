"""Where an import is written: the :class:`RegistryStore` seam and its SQL implementation.

The importer computes a :class:`Plan` against a :class:`SiteSnapshot` (pure,
testable) and hands it to :meth:`RegistryStore.apply`, which writes it in ONE
transaction: all or nothing, even when the database fails half-way.

:class:`SqlStore` writes through the server's own services
(``server.sites.service``, ``server.occupants.service``), so an import obeys the
same rules as the API: units keyed by the standard address, templates stored
with their model id, the site's gallery version bumped so edges re-sync.

A template made by the importer carries ``source = "registry:<sha256 of the
photo>"``, one per photo (a row may name several; matching takes the best
template, so each photo is its own template, never fused). That is how a
re-import knows a photo is unchanged without running the face engine: the
occupant's registry state is the SET of those SHA-256s, and a changed set adds
the new photos' templates and deletes those whose photo is gone. Only
registry-made templates are ever deleted here (a template enrolled from a case
stays).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from registry.errors import StoreError
from registry.validate import OccupantRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

SOURCE_PREFIX = "registry:"


@dataclass(frozen=True, slots=True)
class StoredOccupant:
    """What the importer needs to know of an occupant already on the register."""

    id: int
    name: str
    unit_key: str | None
    role: str
    phone: str | None
    external_id: str | None
    id_hash: str | None
    id_last4: str | None
    move_in: date | None
    status: str
    photo_sha256s: frozenset[str] = frozenset()
    """SHA-256s of the photos its registry templates of the site's model come from."""


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """A site's register before the import; ``site_id`` None means it does not exist yet."""

    site: str
    site_id: int | None
    model_id: str | None
    gallery_version: int
    occupants: tuple[StoredOccupant, ...] = ()
    templates: tuple[tuple[int, bytes], ...] = ()
    """(occupant id, little-endian float32 embedding) of the site's templates of its model."""
    registry_templates: tuple[tuple[int, str, bytes], ...] = ()
    """(occupant id, photo SHA-256, embedding) of its registry templates of its model."""


@dataclass(frozen=True, slots=True)
class NewFace:
    """A template to store, made from one photo."""

    embedding: npt.NDArray[np.float32]
    model_id: str
    quality: float
    photo_sha256: str
    photo: str = ""
    """The file name as the row gives it (for messages; empty if unknown)."""
    chip: bytes | None = None
    """The aligned face as a JPEG, kept sealed on the server for the desk check."""


@dataclass(frozen=True, slots=True)
class Change:
    action: Literal["create", "update"]
    record: OccupantRecord
    occupant_id: int | None
    faces: tuple[NewFace, ...] = ()
    """Templates to add (the row's photos the occupant has no template of yet)."""
    photos: frozenset[str] | None = None
    """SHA-256s of all the row's photos: registry templates of any other photo are
    deleted. None: the row names no photo, the registry templates stay as they are."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one import writes."""

    site: str
    model_id: str
    changes: tuple[Change, ...] = ()
    move_out: tuple[int, ...] = ()
    move_out_date: date = field(default_factory=date.today)
    source: str = ""
    """The registry file, for the audit log."""
    actor: str = "lintel-registry"


class RegistryStore(Protocol):
    """Read a site's register; apply a plan in one transaction."""

    def snapshot(self, site: str) -> SiteSnapshot:
        """The site's occupants (a snapshot with ``site_id=None`` if the site is new)."""
        ...

    def apply(self, plan: Plan) -> int:
        """Write the plan atomically; returns the site's gallery version afterwards."""
        ...


class SqlStore:
    """A :class:`RegistryStore` over the server's SQLAlchemy models and services."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import SQLAlchemyError

        from server.db import current_revision, make_engine, make_session_factory, upgrade

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
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return self._snapshot(site)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"site {site!r}: cannot read the register: {_brief(exc)} "
                "(is the database migrated to this version of Lintel?)"
            ) from None

    def _snapshot(self, site: str) -> SiteSnapshot:
        from server.db import session_scope

        if self._empty:
            return SiteSnapshot(site, None, None, 0)
        with session_scope(self._factory) as session:
            return read_snapshot(session, site)

    def apply(self, plan: Plan) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        from server.db import session_scope
        from server.errors import LintelError

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
    """A :class:`RegistryStore` inside a caller's session (the server's import route).

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
    from sqlalchemy import select

    from server.occupants.models import FaceTemplate, Occupant
    from server.sites.models import Site, Unit

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
    from sqlalchemy import select

    from server.audit import service as audit
    from server.occupants import service as occupants
    from server.occupants.models import Occupant
    from server.sites import service as sites
    from server.sites.models import Site

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
    from sqlalchemy import delete, or_

    from server.occupants.models import FaceTemplate

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
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL: show only its scheme
        return url.split(":", 1)[0] + ":..."


def occupants_by_identity(
    occupants: Sequence[StoredOccupant],
) -> tuple[dict[str, StoredOccupant], dict[str, StoredOccupant]]:
    """Index occupants by external id and by ID hash."""
    by_ext = {o.external_id: o for o in occupants if o.external_id}
    by_hash = {o.id_hash: o for o in occupants if o.id_hash}
    return by_ext, by_hash
