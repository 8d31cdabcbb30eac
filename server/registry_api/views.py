"""``POST /api/v1/sites/{site}/registry/import``: the registry import, from another machine.

``lintel-registry import --server URL --token T`` reads the file and enrols
the photos on the property office's PC (photos never travel) and sends the
rows and faces here in one JSON request. The server validates every row again
(and hashes ID numbers with its own key), matches rows to the register by
external id, else ID hash, and writes the plan in ONE transaction through
:mod:`registry.importer` and :class:`server.registry_api.store.SessionStore`: the very
code the local ``--db`` import runs, so both modes plan and report the same.

Query flags ``dry_run``, ``partial`` and ``sync`` mean what the CLI options
mean. ``GET /api/v1/sites/{site}/registry/photos`` lists the SHA-256 of the
photos the site's registry templates come from, so the client enrols only new
or changed photos (409 ``faces_needed`` when a skipped one is needed after all).
Admins may import into any site and create new ones; managers only into
their own sites; viewers never. Each call leaves exactly one audit event
(``registry.import``, actor ``user:<id>``), also a dry run or a refused file:
the import compares faces with the register, which is worth a trace.
A row with several photos (``a.jpg;b.jpg``) sends one ``templates`` (or
``known_photos``) entry per photo, each naming its file in ``photo``; a row of
one photo may leave ``photo`` out (the shape of older clients).
The body is bounded by ``max_import_body_bytes`` (64 MiB: about 3.1 KB a
face, ~20,000 rows of one photo) for a request with a manager's or admin's token,
checked before the body is read; anybody else gets ``max_body_bytes``.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.types import Scope

from edge.wire import decode_embedding
from registry.errors import FacesNeeded, InputError, StoreError
from registry.importer import (
    Enrolled,
    ImportOptions,
    KnownPhoto,
    PhotoFailure,
    PhotoOutcome,
    run_import,
)
from registry.reader import RawRow, Sheet
from registry.store import NewFace, Plan
from server.audit.service import record
from server.deps import Caller, ManagerDep, SessionDep
from server.embeddings import check_embedding, model_dimension
from server.errors import Conflict, InvalidInput, NotFound
from server.notify.service import emit_import_finished as notify_import_finished
from server.registry_api.errors import Misconfigured
from server.registry_api.schemas import ImportReportOut, RegistryImportIn, RegistryPhotosOut
from server.registry_api.store import SessionStore, read_snapshot
from server.sites.models import Site
from server.users.service import user_for_token

log = logging.getLogger(__name__)

router = APIRouter(tags=["registry"])

# The local CLI's default (registry.importer.ImportOptions): one photo under two people.
SAME_FACE_SIMILARITY = 0.8
# registry.idnumber's minimum key length for the ID-number HMAC.
MIN_SECRET_BYTES = 16


def _check_templates(session: Session, body: RegistryImportIn) -> None:
    """Every face against its model's size (the schema checked finite and unit length):
    one face of another size would break every later clustering pass (issue 18)."""
    dims: dict[str, int | None] = {}
    for i, t in enumerate(body.templates):
        if t.model_id not in dims:
            dims[t.model_id] = model_dimension(session, t.model_id)
        vec = check_embedding(
            decode_embedding(t.embedding_b64),
            dim=dims[t.model_id],
            what=f"templates[{i}] (row {t.row})",
        )
        # A model new to the server: its first face sets the size for the rest.
        dims[t.model_id] = vec.size


def _enrolled(body: RegistryImportIn) -> Enrolled:
    """Row -> one outcome per photo: a row with several photos has several entries."""
    out: dict[int, list[PhotoOutcome]] = defaultdict(list)
    for i in body.photo_issues:
        out[i.row].append(PhotoFailure(i.reason, i.message))
    for k in body.known_photos:
        out[k.row].append(KnownPhoto(k.photo_sha256, k.photo or ""))
    for t in body.templates:
        out[t.row].append(
            NewFace(
                embedding=decode_embedding(t.embedding_b64),
                model_id=t.model_id,
                quality=t.quality,
                photo_sha256=t.photo_sha256,
                photo=t.photo or "",
                chip=base64.b64decode(t.chip_b64) if t.chip_b64 else None,
            )
        )
    return out


class _Store(SessionStore):
    """Notes whether the plan was applied (which records the import's audit event)."""

    applied = False

    def apply(self, plan: Plan) -> int:
        self.applied = True
        return super().apply(plan)


def _check_access(session: Session, caller: Caller, site: str) -> None:
    """Managers import into their own sites; only admins may create a site by importing."""
    if not site.strip() or "\x00" in site or len(site) > 200:
        raise InvalidInput("the site name is empty, too long or holds NUL characters")
    site_id = session.scalar(select(Site.id).where(Site.name == site))
    if caller.role == "admin":
        return  # a missing site is created by the import
    if site_id is None or (caller.site_ids is not None and site_id not in caller.site_ids):
        # The same answer whether the site is missing or another tenant's: names
        # are not probed (issue 18, finding 9).
        raise NotFound(f"site {site!r} does not exist")


@router.get(
    "/sites/{site:path}/registry/photos",
    summary="The site's gallery model and the photos its registry templates come from",
    response_model=RegistryPhotosOut,
)
def registry_photos(site: str, session: SessionDep, caller: ManagerDep) -> RegistryPhotosOut:
    """What a client need not enrol again (SHA-256 of photos, never faces)."""
    _check_access(session, caller, site)
    snapshot = read_snapshot(session, site)
    # Registry templates of the site's model only (snapshot.occupants holds no other).
    shas = {sha for o in snapshot.occupants for sha in o.photo_sha256s}
    return RegistryPhotosOut(model_id=snapshot.model_id, photo_sha256=sorted(shas))


IMPORT_PATH = r"/api/v1/sites/.+/registry/import"
"""The import route's full path as a regex (its own, larger body limit: server/limits.py)."""


def importer_check(session_factory: Callable[[], Session]) -> Callable[[Scope], bool]:
    """Whether a request may send an import-sized body: it carries the API token of an
    enabled manager or admin (site access is checked by the route, after parsing)."""

    def allow(scope: Scope) -> bool:
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with session_factory() as session:
            user = user_for_token(session=session, token=token.strip())
            session.rollback()  # the route records the token's use
            return user is not None and user.role in ("manager", "admin")

    return allow


@router.post(
    "/sites/{site:path}/registry/import",
    summary="Import a property registry (rows + client-enrolled faces) into a site",
    response_model=ImportReportOut,
)
def import_registry(
    site: str,
    body: RegistryImportIn,
    request: Request,
    session: SessionDep,
    caller: ManagerDep,
    dry_run: Annotated[bool, Query(description="validate and plan; write nothing")] = False,
    partial: Annotated[bool, Query(description="write the good rows even if some fail")] = False,
    sync: Annotated[bool, Query(description="move out occupants missing from the file")] = False,
) -> ImportReportOut | JSONResponse:
    """Plan and (unless a row fails, or ``dry_run``) write the import in one transaction."""
    _check_access(session, caller, site)
    _check_templates(session, body)
    secret = request.app.state.settings.secret_key.get_secret_value().encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        # registry.idnumber refuses to hash with it; say so instead of a 500 per row.
        raise Misconfigured(
            f"LINTEL_SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes; ID numbers cannot "
            "be hashed (the server's administrator must set a longer key)"
        )
    sheet = Sheet(
        source=body.source,
        encoding=None,
        columns=dict(body.columns),
        rows=tuple(RawRow(r.number, dict(r.cells)) for r in body.rows),
        ignored_headers=(),
    )
    options = ImportOptions(
        site=site,
        dry_run=dry_run,
        partial=partial,
        sync=sync,
        actor=caller.actor,
        same_face_similarity=None if body.allow_same_face else SAME_FACE_SIMILARITY,
    )
    store = _Store(session)
    try:
        result = run_import(
            sheet,
            store=store,
            options=options,
            secret=secret,
            enrolled=_enrolled(body),
            model_id=body.model_id,
        )
    except FacesNeeded as exc:
        # Nothing written; the client enrols every photo and sends again.
        return JSONResponse(
            {"detail": str(exc), "code": "faces_needed", "rows": list(exc.rows)},
            status_code=409,
        )
    except InputError as exc:
        raise InvalidInput(str(exc)) from None
    except StoreError as exc:
        raise Conflict(str(exc)) from None
    except IntegrityError:
        # Two imports creating one site or unit at once; the session rolls back.
        raise Conflict(
            f"site {site!r} changed during the import (another import at the same time?); "
            "nothing written, try again"
        ) from None
    report = result.report
    if not store.applied:
        # Applying a plan records its audit event; a dry run, a refused file or a
        # re-import with nothing to change is recorded here.
        site_id = session.scalar(select(Site.id).where(Site.name == site))
        record(
            session=session,
            actor=caller.actor,
            action="registry.import",
            object_type="site",
            object_id=site_id,
            site_id=site_id,
            detail={
                "source": body.source,
                "dry_run": dry_run,
                "written": report.written,
                "rows": report.rows,
                # What the import would have written (nothing was).
                **dataclasses.asdict(report.summary),
            },
        )
    if report.written:
        # Issue 15: "import finished" goes to the site's channels with this commit (outbox).
        notify_import_finished(
            session=session,
            site_id=session.scalar(select(Site.id).where(Site.name == site)),
            counts={"rows": report.rows, **dataclasses.asdict(report.summary)},
        )
    session.commit()
    log.info(
        "registry import into site %r by %s: %d rows, written=%s",
        site,
        caller.actor,
        report.rows,
        report.written,
    )
    data = report.to_dict()
    return ImportReportOut.model_validate(
        {**data, "gallery_version": result.gallery_version if report.written else None}
    )
