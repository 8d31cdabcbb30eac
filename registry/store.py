"""Where an import is written: the :class:`RegistryStore` seam and the plan it writes.

The importer computes a :class:`Plan` against a :class:`SiteSnapshot` (pure,
testable) and hands it to :meth:`RegistryStore.apply`, which writes it in ONE
transaction: all or nothing, even when the database fails half-way.

Only the data and the seam live here (pure: no SQLAlchemy, no server). The SQL
implementation, which writes through the server's own services, is the
server's: :mod:`server.registry_api.store` (``SqlStore``, ``SessionStore``).

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
from importlib.metadata import entry_points
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from registry.errors import InputError
from registry.validate import OccupantRecord

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


class LocalStore(RegistryStore, Protocol):
    """A store over a database this process opens itself (``lintel-registry import --db``)."""

    def close(self) -> None:
        """Release the database connections."""
        ...


LOCAL_STORE_GROUP = "lintel.registry.local_store"
"""The entry-point group naming the opener of the ``--db`` store: the server package
registers it (pyproject.toml), so this library names no server module and an office
install without the server simply finds it unloadable."""


class LocalStoreOpener(Protocol):
    def __call__(self, db: str | None, *, migrate: bool) -> tuple[bytes, LocalStore]:
        """The ID-hash key and an open store for ``db`` (None: the configured database)."""
        ...


def local_store_opener() -> LocalStoreOpener:
    """The opener of the ``--db`` store the server registered; :class:`InputError` in
    one line where the server is not installed."""
    found = entry_points(group=LOCAL_STORE_GROUP)
    hint = "pip install 'lintel[server,registry]', or import through --server URL"
    if not found:
        raise InputError(f"the local --db mode needs the server: {hint}")
    (entry,) = found
    try:
        opener: LocalStoreOpener = entry.load()
    except ModuleNotFoundError as exc:  # the registry extra alone: no SQLAlchemy
        raise InputError(
            f"the local --db mode needs the server (no module {exc.name!r}): {hint}"
        ) from None
    return opener


def occupants_by_identity(
    occupants: Sequence[StoredOccupant],
) -> tuple[dict[str, StoredOccupant], dict[str, StoredOccupant]]:
    """Index occupants by external id and by ID hash."""
    by_ext = {o.external_id: o for o in occupants if o.external_id}
    by_hash = {o.id_hash: o for o in occupants if o.id_hash}
    return by_ext, by_hash
