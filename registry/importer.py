"""The import flow: validate -> match -> enrol -> plan -> (one transaction) write.

Nothing is written until every row has been validated and every new photo
enrolled; then the whole plan goes to :meth:`RegistryStore.apply` in one
transaction. By default any bad row means nothing is written (all or
nothing); ``partial`` writes the good rows. Re-importing the same file plans
no change at all: rows are matched by external id, else by ID hash, and a
photo whose SHA-256 equals the one the stored template came from is not
enrolled again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.errors import EnrolmentError, LintelEdgeError
from registry.enrol import EnrolBackend, Enroller, Job, as_backend
from registry.errors import FacesNeeded, InputError, PhotoError
from registry.idnumber import ProtectedId
from registry.photos import PhotoSource
from registry.reader import Sheet
from registry.report import ImportReport, RowIssue, Summary
from registry.store import (
    Change,
    NewFace,
    Plan,
    RegistryStore,
    SiteSnapshot,
    StoredOccupant,
    occupants_by_identity,
)
from registry.validate import OccupantRecord, validate_sheet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    site: str
    dry_run: bool = False
    partial: bool = False
    sync: bool = False
    progress: bool = False
    same_face_similarity: float | None = 0.8
    """Refuse a photo whose face is this similar (cosine) to another occupant's; None: off.

    Augmented copies of one photo measured >= 0.86 and different people <= 0.63
    (buffalo_s), so 0.8 catches one photo filed under two people, not look-alikes."""
    actor: str = "lintel-registry"
    """Who runs the import, for the audit log."""


@dataclass(frozen=True, slots=True)
class PhotoFailure:
    """A photo the client could not enrol (remote import): the row issue to report."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class KnownPhoto:
    """A photo the client did not enrol: the server already holds a template of it."""

    photo_sha256: str


Enrolled = Mapping[int, NewFace | PhotoFailure | KnownPhoto]
"""Row -> the face a client enrolled from that row's photo, or why it could not, or
that it skipped the photo because the site already had it (see :func:`enrol_for_upload`)."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    report: ImportReport
    plan: Plan | None
    gallery_version: int | None


# Optional columns: when a file lacks the column altogether (another export
# format), the stored value is kept; an empty cell in a present column clears it.
_KEEP_IF_ABSENT = ("phone", "move_in", "external_id", "id_number")


def _keep_absent(
    record: OccupantRecord, stored: StoredOccupant | None, absent: frozenset[str]
) -> OccupantRecord:
    if stored is None or not absent:
        return record
    protected = record.protected_id
    if "id_number" in absent and stored.id_hash is not None and stored.id_last4 is not None:
        protected = ProtectedId(stored.id_hash, stored.id_last4)
    return dataclasses.replace(
        record,
        phone=stored.phone if "phone" in absent else record.phone,
        move_in=stored.move_in if "move_in" in absent else record.move_in,
        external_id=stored.external_id if "external_id" in absent else record.external_id,
        protected_id=protected,
    )


def _differs(record: OccupantRecord, stored: StoredOccupant) -> bool:
    protected = record.protected_id
    return (
        stored.status != "active"
        or stored.name != record.name
        or stored.unit_key != record.unit.key
        or stored.role != record.role.value
        or stored.phone != record.phone
        or stored.move_in != record.move_in
        or stored.external_id != record.external_id
        or stored.id_hash != (protected.id_hash if protected else None)
        or stored.id_last4 != (protected.last4 if protected else None)
    )


class _Run:
    def __init__(
        self,
        sheet: Sheet,
        snapshot: SiteSnapshot,
        options: ImportOptions,
        secret: bytes,
    ) -> None:
        self.sheet = sheet
        self.snapshot = snapshot
        self.options = options
        validated = validate_sheet(sheet, secret)
        self.validated = validated
        self.issues: list[RowIssue] = list(validated.issues)
        self.by_ext, self.by_hash = occupants_by_identity(snapshot.occupants)

    def issue(self, record: OccupantRecord, column: str, reason: str, message: str) -> None:
        header = self.sheet.columns.get(column, column)
        self.issues.append(RowIssue(record.row, header, reason, message, record.name))

    def match(self) -> dict[int, StoredOccupant | None]:
        """Row -> the stored occupant it updates (external id first, then ID hash)."""
        matched: dict[int, StoredOccupant | None] = {}
        claimed: dict[int, int] = {}
        for record in self.validated.records:
            stored = self.by_ext.get(record.external_id or "")
            if stored is None and record.protected_id is not None:
                stored = self.by_hash.get(record.protected_id.id_hash)
            other = self.by_hash.get(record.protected_id.id_hash) if record.protected_id else None
            if stored is not None and other is not None and other.id != stored.id:
                # Writing it would give two occupants one ID number.
                self.issue(
                    record,
                    "id_number",
                    "conflict",
                    f"external id {record.external_id!r} is one registered person but this "
                    f"ID number (***{other.id_last4}) is another's "
                    f"(external id {other.external_id!r}); fix one of them",
                )
                continue
            if stored is not None and stored.id in claimed:
                self.issue(
                    record,
                    "external_id" if record.external_id else "id_number",
                    "duplicate",
                    f"is the same registered person as row {claimed[stored.id]} "
                    "(external id and ID number point at one occupant)",
                )
                continue
            if stored is not None:
                claimed[stored.id] = record.row
            matched[record.row] = stored
        return matched


def run_import(
    sheet: Sheet,
    *,
    store: RegistryStore,
    options: ImportOptions,
    secret: bytes,
    photos: PhotoSource | None = None,
    enroller: Callable[[], Enroller | EnrolBackend] | None = None,
    enrolled: Enrolled | None = None,
    model_id: str | None = None,
) -> ImportResult:
    """Import a read sheet into ``options.site``; see the module docstring.

    ``enroller`` is a factory of an engine or an :class:`~registry.enrol.EnrolBackend`,
    called only if some photo needs enrolling (loading the face engine costs a
    second). Raises InputError for problems with the input as a whole; row
    problems end up in the report.

    ``enrolled`` replaces ``photos``/``enroller`` when the photos were enrolled
    elsewhere (the server's remote import: photos stay on the client, see
    :func:`enrol_for_upload`); ``model_id`` then names the client's model for a
    site created without any photo.
    """
    snapshot = store.snapshot(options.site)
    run = _Run(sheet, snapshot, options, secret)
    matched = run.match()
    absent = frozenset(k for k in _KEEP_IF_ABSENT if k not in sheet.columns)
    records = [
        _keep_absent(r, matched[r.row], absent) for r in run.validated.records if r.row in matched
    ]
    if enrolled is not None:
        faces, model_id = _replay_enrolled(run, records, matched, enrolled, model_id)
    else:
        faces, model_id = _enrol_photos(run, records, matched, photos, enroller)

    if options.same_face_similarity is not None and faces:
        _check_same_faces(run, records, matched, faces, options.same_face_similarity)
    failed_rows = {i.row for i in run.issues}
    changes: list[Change] = []
    unchanged = 0
    for record in records:
        if record.row in failed_rows:
            continue
        stored = matched[record.row]
        face = faces.get(record.row)
        if stored is None:
            changes.append(Change("create", record, None, face))
        elif face is not None or _differs(record, stored):
            changes.append(Change("update", record, stored.id, face))
        else:
            unchanged += 1

    move_out: list[int] = []
    if options.sync:
        keep = {o.id for o in matched.values() if o is not None}
        # Failed rows still name people who are on the file: never move them out.
        for external_id, id_hash in run.validated.identities.values():
            for stored in (run.by_ext.get(external_id or ""), run.by_hash.get(id_hash or "")):
                if stored is not None:
                    keep.add(stored.id)
        move_out = [o.id for o in snapshot.occupants if o.status == "active" and o.id not in keep]

    plan = Plan(
        site=options.site,
        model_id=model_id,
        changes=tuple(changes),
        move_out=tuple(move_out),
        source=sheet.source,
        actor=options.actor,
    )
    written, version = False, None
    if not options.dry_run and not (failed_rows and not options.partial):
        # Nothing to write is a successful import too (a re-import of the same file).
        version = store.apply(plan) if changes or move_out else snapshot.gallery_version or None
        written = True
    report = ImportReport(
        source=sheet.source,
        site=options.site,
        rows=len(sheet.rows),
        dry_run=options.dry_run,
        partial=options.partial,
        written=written,
        summary=Summary(
            created=sum(c.action == "create" for c in changes),
            updated=sum(c.action == "update" for c in changes),
            unchanged=unchanged,
            moved_out=len(move_out),
            failed=len(failed_rows),
        ),
        issues=tuple(sorted(run.issues, key=lambda i: (i.row, i.column))),
        enrolled_photos=len(faces),
        new_site=snapshot.site_id is None,
    )
    return ImportResult(report, plan, version)


def _enrol_photos(
    run: _Run,
    records: list[OccupantRecord],
    matched: dict[int, StoredOccupant | None],
    photos: PhotoSource | None,
    enroller_factory: Callable[[], Enroller | EnrolBackend] | None,
    *,
    bundled_default: bool = True,
    known: tuple[frozenset[str], dict[int, str]] | None = None,
) -> tuple[dict[int, NewFace], str]:
    """Read every row's photo and enrol the new or changed ones (with a progress bar)."""
    from tqdm import tqdm

    site_model = run.snapshot.model_id
    with_photo = [(r, r.photo) for r in records if r.photo]
    if with_photo and photos is None:
        raise InputError("the file names photos; give the folder or zip with --photos")
    by_row = {r.row: r for r, _ in with_photo}
    hashes: dict[int, str] = {}
    faces: dict[int, NewFace] = {}
    bar = tqdm(
        total=len(with_photo),
        unit="photo",
        desc="enrolling",
        file=sys.stderr,
        disable=not run.options.progress or not with_photo,
        dynamic_ncols=True,
    )

    def pending() -> Iterator[Job]:
        """Photos that need the engine; unreadable and unchanged ones are settled here."""
        for record, photo in with_photo:
            if photos is None:
                return
            try:
                data = photos.read(photo)
            except PhotoError as exc:
                run.issue(record, "photo", "bad_photo", str(exc))
                bar.update(1)
                continue
            sha = hashlib.sha256(data).hexdigest()
            stored = matched.get(record.row)
            if (
                stored is not None
                and stored.photo_sha256 == sha
                and (site_model is None or stored.template_model_id == site_model)
            ):
                bar.update(1)  # the same photo is already enrolled with the site's model
                continue
            if known is not None and sha in known[0]:
                known[1][record.row] = sha  # the server has it (remote import)
                bar.update(1)
                continue
            hashes[record.row] = sha
            yield Job(record.row, photo, data)

    model_id = site_model or ""
    try:
        jobs = pending()
        first = next(jobs, None)
        if first is not None:
            backend = _load_backend(enroller_factory, site_model)
            model_id = backend.model_id
            for job, outcome in backend.run(itertools.chain([first], jobs)):
                bar.update(1)
                record = by_row[job.key]
                if isinstance(outcome, EnrolmentError):
                    run.issue(record, "photo", outcome.reason, str(outcome))
                    continue
                faces[job.key] = NewFace(
                    embedding=outcome.embedding,
                    model_id=outcome.model_id,
                    quality=outcome.quality,
                    photo_sha256=hashes[job.key],
                )
    finally:
        bar.close()
    if not model_id and bundled_default:
        model_id = _bundled_model_id()
    return faces, model_id


def enrol_for_upload(
    sheet: Sheet,
    *,
    photos: PhotoSource | None,
    enroller: Callable[[], Enroller | EnrolBackend] | None,
    progress: bool = False,
    known_sha256: frozenset[str] = frozenset(),
) -> tuple[dict[int, NewFace | PhotoFailure | KnownPhoto], str | None]:
    """Enrol the photos of a sheet's valid rows on this machine, for a remote import.

    Returns (row -> outcome, the engine's model id or None when no photo
    needed the engine). Validation here only decides which rows are worth
    enrolling: it uses a throwaway key (equal ID numbers still hash equal, so
    duplicate rows are found), and the server validates every row again with
    its own key. A photo whose SHA-256 is in ``known_sha256`` (the site's
    registry photos, from the server) is not enrolled: the server keeps its
    template when the row's occupant is the one it belongs to, and otherwise
    asks for the face (:class:`~registry.errors.FacesNeeded`).
    """
    import secrets

    snapshot = SiteSnapshot(site="", site_id=None, model_id=None, gallery_version=0)
    run = _Run(sheet, snapshot, ImportOptions(site="", progress=progress), secrets.token_bytes(32))
    run.issues.clear()  # only the photo issues below are sent
    records = list(run.validated.records)
    skipped: dict[int, str] = {}
    faces, model_id = _enrol_photos(
        run,
        records,
        {},
        photos,
        enroller,
        bundled_default=False,
        known=(known_sha256, skipped),
    )
    out: dict[int, NewFace | PhotoFailure | KnownPhoto] = dict(faces)
    out.update({row: KnownPhoto(sha) for row, sha in skipped.items()})
    for issue in run.issues:
        out.setdefault(issue.row, PhotoFailure(issue.reason, issue.message))
    return out, model_id or None


def _replay_enrolled(
    run: _Run,
    records: list[OccupantRecord],
    matched: dict[int, StoredOccupant | None],
    enrolled: Enrolled,
    default_model_id: str | None,
) -> tuple[dict[int, NewFace], str]:
    """:func:`_enrol_photos` for faces enrolled by the client: same skips, same refusals."""
    site_model = run.snapshot.model_id
    faces: dict[int, NewFace] = {}
    needed: list[int] = []
    for record in records:
        if not record.photo:
            continue
        outcome = enrolled.get(record.row)
        if outcome is None:
            run.issue(record, "photo", "not_enrolled", "the client sent no face for this photo")
            continue
        if isinstance(outcome, PhotoFailure):
            run.issue(record, "photo", outcome.reason, outcome.message)
            continue
        stored = matched.get(record.row)
        if (
            stored is not None
            and stored.photo_sha256 == outcome.photo_sha256
            and (site_model is None or stored.template_model_id == site_model)
        ):
            continue  # the same photo is already enrolled with the site's model
        if isinstance(outcome, KnownPhoto):
            # The site knows the photo, but not as this row's occupant's (it moved to
            # another person, or the register changed since the client asked).
            needed.append(record.row)
            continue
        model = site_model or default_model_id or outcome.model_id
        if outcome.model_id != model:
            raise InputError(
                f"the site's gallery uses model {model!r} but the face engine is "
                f"{outcome.model_id!r}; templates of another model never reach its edges"
            )
        faces[record.row] = outcome
    if needed:
        raise FacesNeeded(tuple(needed))
    return faces, site_model or default_model_id or _bundled_model_id()


def _check_same_faces(
    run: _Run,
    records: list[OccupantRecord],
    matched: dict[int, StoredOccupant | None],
    faces: dict[int, NewFace],
    threshold: float,
) -> None:
    """Flag new faces that are (nearly) the same face as another row's or occupant's."""
    by_row = {r.row: r for r in records}
    rows = sorted(faces)
    new = np.stack([faces[r].embedding for r in rows]).astype(np.float32)
    # Existing templates, except those of occupants this import re-enrols or that
    # a row updates (their own old face is not a duplicate).
    replaced = {o.id for r, o in matched.items() if o is not None and r in faces}
    names = {o.id: o for o in run.snapshot.occupants}
    old_ids: list[int] = []
    old_vecs: list[npt.NDArray[np.float32]] = []
    for occupant_id, blob in run.snapshot.templates:
        occupant = names.get(occupant_id)
        if occupant_id in replaced or occupant is None or occupant.status != "active":
            continue
        vec = np.frombuffer(blob, dtype="<f4")
        if vec.shape == new.shape[1:]:
            old_ids.append(occupant_id)
            old_vecs.append(vec.astype(np.float32))
    old = np.stack(old_vecs) if old_vecs else np.zeros((0, new.shape[1]), np.float32)
    flagged: set[int] = set()
    block = 1024  # bounded memory: a 1024 x N similarity block at a time
    for start in range(0, len(rows), block):
        part = new[start : start + block]
        sims = part @ new.T
        for i in range(part.shape[0]):
            sims[i, start + i] = -1.0  # not itself
        for i, j in zip(*np.nonzero(sims >= threshold), strict=True):
            a, b = rows[start + int(i)], rows[int(j)]
            if a not in flagged:
                flagged.add(a)
                run.issue(
                    by_row[a],
                    "photo",
                    "same_face",
                    f"the face in {by_row[a].photo!r} is the one in row {b}'s photo "
                    f"(similarity {float(sims[i, j]):.2f}); a photo filed under two people?",
                )
        if old.shape[0]:
            sims_old = part @ old.T
            for i, j in zip(*np.nonzero(sims_old >= threshold), strict=True):
                a = rows[start + int(i)]
                mine = matched.get(a)
                other = names[old_ids[int(j)]]
                if a in flagged or (mine is not None and mine.id == other.id):
                    continue
                flagged.add(a)
                run.issue(
                    by_row[a],
                    "photo",
                    "same_face",
                    f"the face in {by_row[a].photo!r} is registered occupant {other.name!r}'s "
                    f"(external id {other.external_id or '-'}, similarity "
                    f"{float(sims_old[i, j]):.2f})",
                )


def _load_backend(
    factory: Callable[[], Enroller | EnrolBackend] | None, site_model: str | None
) -> EnrolBackend:
    if factory is None:
        raise InputError("photos need enrolling but no face engine is available")
    try:
        backend = as_backend(factory())
    except LintelEdgeError as exc:
        raise InputError(f"cannot load the face engine: {exc}") from None
    if site_model is not None and backend.model_id != site_model:
        raise InputError(
            f"the site's gallery uses model {site_model!r} but the face engine is "
            f"{backend.model_id!r}; templates of another model never reach its edges"
        )
    return backend


def _bundled_model_id() -> str:
    """Model id for a new site when no photo needed enrolling (the bundled pack's)."""
    try:
        from edge.models import resolve_pack

        return resolve_pack("buffalo_s").model_id
    except LintelEdgeError:
        return "buffalo_s"
