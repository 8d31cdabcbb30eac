"""A register import from the web: a dry run, then exactly that plan applied.

The same importer as ``lintel-registry`` and the JSON import API, one code
path: the photos are enrolled by :func:`registry.importer.enrol_for_upload`
(as the CLI's ``--server`` mode does on the office PC) and the rows, matched
and planned against the site's register, go through
:func:`registry.importer.run_import` with :class:`registry.store.SessionStore`,
first as a dry run (the report the page shows), then for real. Enrolment is
the slow part (minutes for thousands of photos), so the apply reuses the dry
run's faces instead of enrolling again, and takes seconds.

"Apply is what the dry run showed": the dry run hashes the register it
planned against (occupants, templates, gallery version) with the uploaded
files and options; the apply hashes the register again inside its own
transaction, from the very snapshot the plan is made from, holding the lock
every audited change takes (PostgreSQL; on SQLite the write lock), and
refuses (:class:`RegisterChanged`, nothing written)
when anything differs: another import, a case enrolment, an edit.

Each dry run leaves one ``registry.import`` audit event (``dry_run: true``) as
the API's does; an apply leaves the one the store writes with the plan, and
``import.finished`` goes to the site's channels in the same transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from registry.enrol import EnrolBackend, Enroller
from registry.errors import FacesNeeded, InputError, StoreError
from registry.importer import Enrolled, ImportOptions, ImportResult, enrol_for_upload, run_import
from registry.photos import PhotoSource, ZipSource
from registry.reader import MAX_FILE_BYTES, Sheet, read_registry
from registry.report import ImportReport, Summary
from registry.store import Plan, SiteSnapshot
from registry.validate import validate_sheet
from server.audit.service import AUDIT_LOCK_KEY, record
from server.db import utcnow
from server.errors import Conflict, InvalidInput, NotFound
from server.imports.enums import RUNNING, ImportStatus
from server.imports.models import ImportJob
from server.notify.service import emit_import_finished
from server.registry_api.store import SessionStore, read_snapshot
from server.sites.models import Site

log = logging.getLogger(__name__)

MAX_LISTED = 2000
"""Occupants named per kind of change on the dry run's page (the counts are complete)."""
HOLD = timedelta(hours=1)
"""How long a dry run's rows and faces wait to be applied (then they are dropped)."""
SILENT = timedelta(minutes=30)
"""A running job not updated for this long has died with its process: enrolment writes
progress every half second; planning and writing (no progress ticks) must fit in it."""
SAME_FACE_SIMILARITY = 0.8
"""The CLI's and the API's default: one photo filed under two people is refused."""
MIN_SECRET_BYTES = 16
"""registry.idnumber's minimum key length for the ID-number HMAC."""
REGISTER_SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".xlsm")
ENGINE_MISSING = "importing photos needs the face engine on this server"


class RegisterChanged(Conflict):
    """The register is no longer the one the dry run planned against: run a new dry run."""


@dataclass(frozen=True, slots=True)
class Upload:
    """The files of one web import, as received (kept in memory only)."""

    registry_name: str
    registry: bytes
    photos_name: str | None = None
    photos: bytes | None = None

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.registry, self.photos or b""):
            h.update(hashlib.sha256(part).digest())
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Checked:
    """What a dry run leaves for the apply: the rows, the faces, and what it saw."""

    job_id: int
    sheet: Sheet
    enrolled: Enrolled
    model_id: str | None
    options: ImportOptions
    files_digest: str
    fingerprint: str
    summary: Summary
    expires_at: datetime


Tick = Callable[[], None]
EngineFactory = Callable[[], Enroller | EnrolBackend]


def clean_filename(name: str | None) -> str:
    """The base name of an uploaded file (browsers may send a path), bounded in length."""
    base = PurePath((name or "").replace("\\", "/")).name.strip()
    return base[-200:]


def create_job(
    *,
    session: Session,
    site_id: int,
    user_id: int | None,
    actor: str,
    upload: Upload,
    partial: bool = False,
    sync: bool = False,
    allow_same_face: bool = False,
    engine_available: bool = True,
) -> ImportJob:
    """A new job in ``checking`` (the dry run is started by the runner); refuses unusable
    uploads before anything runs."""
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"site {site_id} does not exist")
    name = clean_filename(upload.registry_name)
    if not name or not upload.registry:
        raise InvalidInput("choose the register file (.csv or .xlsx)")
    if Path(name).suffix.lower() not in REGISTER_SUFFIXES:
        raise InvalidInput(f"{name}: the register must be a .csv or .xlsx file")
    if len(upload.registry) > MAX_FILE_BYTES:
        raise InvalidInput(f"{name}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if upload.photos is not None and not engine_available:
        raise InvalidInput(ENGINE_MISSING)
    now = utcnow()
    job = ImportJob(
        site_id=site.id,
        user_id=user_id,
        actor=actor,
        source=name,
        photos_name=clean_filename(upload.photos_name) if upload.photos is not None else None,
        status=ImportStatus.CHECKING,
        partial=partial,
        sync=sync,
        allow_same_face=allow_same_face,
        created_at=now,
        updated_at=now,
        expires_at=now + HOLD,
    )
    session.add(job)
    session.flush()
    return job


def read_upload(upload: Upload) -> tuple[Sheet, PhotoSource | None]:
    """The register read as the CLI reads a file, and the photos zip, in memory."""
    name = clean_filename(upload.registry_name) or "register.csv"
    # read_registry reads a path (by extension, with its XLSX bomb checks): the register
    # touches the disk for the length of the read, in a private folder. The photos never do.
    with tempfile.TemporaryDirectory(prefix="lintel-import-") as folder:
        path = Path(folder) / f"register{Path(name).suffix.lower()}"
        path.write_bytes(upload.registry)
        try:
            sheet = read_registry(path)
        except InputError as exc:
            # The reader names the file it read: the user's name, not our temporary path.
            raise InputError(str(exc).replace(str(path), name)) from None
    sheet = dataclasses.replace(sheet, source=name)
    photos: PhotoSource | None = None
    if upload.photos is not None:
        label = clean_filename(upload.photos_name) or "photos.zip"
        photos = ZipSource(io.BytesIO(upload.photos), label=label)
    return sheet, photos


class _Counted:
    """A photo source that ticks once per photo read (the dry run's progress)."""

    def __init__(self, inner: PhotoSource, tick: Tick) -> None:
        self.inner = inner
        self.tick = tick
        self.description = inner.description

    def read(self, name: str) -> bytes:
        try:
            return self.inner.read(name)
        finally:
            self.tick()

    def close(self) -> None:
        self.inner.close()


def register_hash(snapshot: SiteSnapshot) -> str:
    """SHA-256 of everything of a site's register an import plans against."""
    h = hashlib.sha256()
    head = [snapshot.site, snapshot.site_id, snapshot.model_id, snapshot.gallery_version]
    h.update(json.dumps(head).encode())
    for o in snapshot.occupants:
        fields = dataclasses.asdict(o)
        fields["photo_sha256s"] = sorted(o.photo_sha256s)
        h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for occupant_id, blob in snapshot.templates:
        h.update(f"t{occupant_id}:".encode() + hashlib.sha256(blob).digest())
    return h.hexdigest()


def fingerprint(snapshot: SiteSnapshot, files_digest: str, options: ImportOptions) -> str:
    """The register, the files and the options that decide the plan, in one hash."""
    chosen = [options.site, options.partial, options.sync, options.same_face_similarity]
    text = json.dumps([register_hash(snapshot), files_digest, chosen])
    return hashlib.sha256(text.encode()).hexdigest()


class _PinnedStore(SessionStore):
    """The caller's session as the import's store; ``expected`` pins the register.

    Its snapshot is the one :func:`run_import` plans from, so comparing its hash
    here compares exactly what the plan depends on. ``seen`` keeps the hash.
    """

    def __init__(
        self, session: Session, *, files_digest: str, options: ImportOptions, expected: str | None
    ) -> None:
        super().__init__(session)
        self.files_digest = files_digest
        self.options = options
        self.expected = expected
        self.seen: str | None = None
        self.last: SiteSnapshot | None = None
        self.applied = False

    def snapshot(self, site: str) -> SiteSnapshot:
        snapshot = super().snapshot(site)
        self.last = snapshot
        self.seen = fingerprint(snapshot, self.files_digest, self.options)
        if self.expected is not None and self.seen != self.expected:
            raise RegisterChanged(
                f"the register of site {site!r} changed after the dry run (another import "
                "or an edit); nothing written: run a new dry run"
            )
        return snapshot

    def apply(self, plan: Plan) -> int:
        self.applied = True
        return super().apply(plan)


def _options(job: ImportJob, site: str, *, dry_run: bool) -> ImportOptions:
    return ImportOptions(
        site=site,
        dry_run=dry_run,
        partial=job.partial,
        sync=job.sync,
        actor=job.actor,
        same_face_similarity=None if job.allow_same_face else SAME_FACE_SIMILARITY,
    )


def _site_name(session: Session, job: ImportJob) -> str:
    name = session.scalar(select(Site.name).where(Site.id == job.site_id))
    if name is None:
        raise NotFound(f"site {job.site_id} does not exist")
    return name


def photos_to_read(sheet: Sheet, secret: bytes) -> int:
    """How many photos the rows that will be looked at name (the progress bar's end)."""
    return sum(len(r.photos) for r in validate_sheet(sheet, secret).records)


def dry_run(
    *,
    session: Session,
    job: ImportJob,
    sheet: Sheet,
    photos: PhotoSource | None,
    files_digest: str,
    secret: bytes,
    enroller: EngineFactory | None,
    tick: Tick = lambda: None,
) -> Checked:
    """Enrol the photos, plan the import, write nothing; the job becomes ``checked``.

    ``session`` is only used at the start (which photos the site already has) and the
    end (the plan and the job's report): nothing is held open while photos enrol.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise InputError(
            f"LINTEL_SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes; ID numbers cannot "
            "be hashed (the server's administrator must set a longer key)"
        )
    site = _site_name(session, job)
    snapshot = read_snapshot(session, site)
    session.rollback()  # no transaction stays open while the photos enrol
    known = frozenset(sha for o in snapshot.occupants for sha in o.photo_sha256s)
    counted = _Counted(photos, tick) if photos is not None else None
    options = _options(job, site, dry_run=True)

    def plan(skip: frozenset[str]) -> tuple[ImportResult, Enrolled, str | None, _PinnedStore]:
        faces, model_id = enrol_for_upload(
            sheet, photos=counted, enroller=enroller, known_sha256=skip
        )
        store = _PinnedStore(session, files_digest=files_digest, options=options, expected=None)
        result = run_import(
            sheet,
            store=store,
            options=options,
            secret=secret,
            enrolled=faces,
            model_id=model_id or snapshot.model_id,
        )
        return result, faces, model_id, store

    try:
        result, faces, model_id, store = plan(known)
    except FacesNeeded as exc:
        # A photo the site knows is now another occupant's: enrol every photo (as the CLI).
        log.info("web import %d: rows %s need their faces; enrolling every photo", job.id, exc.rows)
        session.rollback()
        result, faces, model_id, store = plan(frozenset())
    report = result.report
    assert store.seen is not None  # run_import always takes the snapshot first
    record(
        session=session,
        actor=job.actor,
        action="registry.import",
        object_type="site",
        object_id=job.site_id,
        site_id=job.site_id,
        detail={
            "source": job.source,
            "dry_run": True,
            "web_job": job.id,
            "written": False,
            "rows": report.rows,
            **dataclasses.asdict(report.summary),
        },
    )
    now = utcnow()
    job.status = ImportStatus.CHECKED
    job.dry_report = report.to_dict()
    job.changes = changes_of(result.plan, store.last)
    job.fingerprint = store.seen
    job.updated_at = now
    job.expires_at = now + HOLD
    job.done = job.total
    session.flush()
    return Checked(
        job_id=job.id,
        sheet=sheet,
        enrolled=faces,
        model_id=model_id or snapshot.model_id,
        options=options,
        files_digest=files_digest,
        fingerprint=store.seen,
        summary=report.summary,
        expires_at=job.expires_at,
    )


def changes_of(plan: Plan | None, snapshot: SiteSnapshot | None) -> dict[str, Any]:
    """Who a plan adds, changes and moves out, by name and unit, for the dry run's page."""
    changes = plan.changes if plan is not None else ()
    units: dict[str, str] = {}
    people = {o.id: o for o in snapshot.occupants} if snapshot is not None else {}
    out: dict[str, Any] = {}
    for kind, action in (("add", "create"), ("change", "update")):
        rows = [c.record for c in changes if c.action == action]
        out[kind] = [[r.row, r.name, r.unit.display] for r in rows[:MAX_LISTED]]
        out[f"n_{kind}"] = len(rows)
        units.update({r.unit.key: r.unit.display for r in rows})
    moved = [people[i] for i in (plan.move_out if plan is not None else ()) if i in people]
    out["move_out"] = [[o.name, units.get(o.unit_key or "", o.unit_key or "")] for o in moved]
    out["move_out"] = out["move_out"][:MAX_LISTED]
    out["n_move_out"] = len(moved)
    return out


def can_apply(report: ImportReport) -> bool:
    """A dry run worth applying: no failed row, or the user chose partial."""
    return not report.issues or report.partial


def claim_apply(*, session: Session, job: ImportJob) -> None:
    """``checked`` -> ``applying``, once (a second click, another tab: 409)."""
    if job.status != ImportStatus.CHECKED or job.dry_report is None:
        raise Conflict(f"import {job.id} is {job.status}, not waiting to be applied")
    if not can_apply(ImportReport.from_dict(job.dry_report)):
        raise Conflict(
            "the dry run found bad rows: fix them and upload again, or tick 'partial' "
            "to import the good rows"
        )
    claimed = session.execute(
        update(ImportJob)
        .where(ImportJob.id == job.id, ImportJob.status == ImportStatus.CHECKED)
        .values(status=ImportStatus.APPLYING, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"import {job.id} is already being applied")
    session.refresh(job)


def _hold_writers(session: Session, job: ImportJob) -> None:
    """Nobody else changes a register until this transaction ends.

    Every change to a register is audited, and an audit event holds the audit lock
    (PostgreSQL, server.audit.service) until its transaction ends: holding it before
    the register is read means a change either committed before (and the hash sees
    it) or waits for this apply. On SQLite a first write takes the one write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    job.updated_at = utcnow()
    session.flush()


def apply(*, session: Session, job: ImportJob, checked: Checked, secret: bytes) -> ImportResult:
    """Write the dry run's plan in the caller's transaction, or refuse if anything changed."""
    _hold_writers(session, job)
    options = dataclasses.replace(checked.options, dry_run=False)
    store = _PinnedStore(
        session,
        files_digest=checked.files_digest,
        options=checked.options,
        expected=checked.fingerprint,
    )
    try:
        result = run_import(
            checked.sheet,
            store=store,
            options=options,
            secret=secret,
            enrolled=checked.enrolled,
            model_id=checked.model_id,
        )
    except (FacesNeeded, StoreError) as exc:
        raise RegisterChanged(
            f"the register changed after the dry run ({exc}); nothing written: run a new dry run"
        ) from None
    report = result.report
    if report.summary != checked.summary:
        # Same register, same files: cannot happen unless the importer is not
        # deterministic; refuse rather than write something nobody saw.
        raise RegisterChanged("the plan differs from the dry run's; nothing written")
    if not store.applied:
        # Nothing to change (a re-import of the same file): the apply still leaves a trace.
        record(
            session=session,
            actor=job.actor,
            action="registry.import",
            object_type="site",
            object_id=job.site_id,
            site_id=job.site_id,
            detail={
                "source": job.source,
                "dry_run": False,
                "web_job": job.id,
                "written": report.written,
                "rows": report.rows,
                **dataclasses.asdict(report.summary),
            },
        )
    if report.written:
        emit_import_finished(
            session=session,
            site_id=job.site_id,
            counts={"rows": report.rows, **dataclasses.asdict(report.summary)},
        )
    job.status = ImportStatus.APPLIED
    job.report = report.to_dict()
    job.gallery_version = result.gallery_version if report.written else None
    job.updated_at = utcnow()
    session.flush()
    return result


def finish_failed(*, session: Session, job_id: int, status: ImportStatus, error: str) -> None:
    """Mark a job failed (or stale) after its transaction rolled back."""
    job = session.get(ImportJob, job_id)
    if job is None:
        return
    job.status = status
    job.error = error[:2000]
    job.updated_at = utcnow()
    session.flush()


def set_progress(*, session: Session, job_id: int, done: int, total: int | None = None) -> None:
    """The dry run's progress, for the page's poll."""
    values: dict[str, object] = {"done": done, "updated_at": utcnow()}
    if total is not None:
        values["total"] = total
    session.execute(update(ImportJob).where(ImportJob.id == job_id).values(**values))


def expire(*, session: Session, now: datetime | None = None) -> int:
    """Jobs whose dry run was not applied in time become ``expired``, and jobs that stopped
    running without a word (the server process ended) ``failed``; returns how many."""
    now = now or utcnow()
    result = session.execute(
        update(ImportJob)
        .where(ImportJob.status == ImportStatus.CHECKED, ImportJob.expires_at < now)
        .values(status=ImportStatus.EXPIRED, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    stuck = session.execute(
        update(ImportJob)
        .where(ImportJob.status.in_(RUNNING), ImportJob.updated_at < now - SILENT)
        .values(
            status=ImportStatus.FAILED,
            # The apply writes the job's state in its own transaction: a job still
            # "applying" was never committed.
            error="the import stopped (the server restarted?); nothing was written: "
            "upload the files again",
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount) + int(stuck.rowcount)  # type: ignore[attr-defined]


def discard(*, session: Session, job: ImportJob) -> None:
    """The user drops a dry run they will not apply."""
    if job.status != ImportStatus.CHECKED:
        raise Conflict(f"import {job.id} is {job.status}; only a dry run can be discarded")
    job.status = ImportStatus.DISCARDED
    job.updated_at = utcnow()
    session.flush()


def lost(*, session: Session, job: ImportJob) -> None:
    """A ``checked`` job whose rows and faces this process does not hold (restarted)."""
    job.status = ImportStatus.EXPIRED
    job.error = "the server no longer holds this dry run (restarted?); upload the files again"
    job.updated_at = utcnow()
    session.flush()
