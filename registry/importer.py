"""The import flow: validate -> match -> enrol -> plan -> (one transaction) write.

Nothing is written until every row has been validated and every new photo
enrolled; then the whole plan goes to :meth:`RegistryStore.apply` in one
transaction. By default any bad row means nothing is written (all or
nothing); ``partial`` writes the good rows. Re-importing the same file plans
no change at all: rows are matched by external id, else by ID hash, and a
photo whose SHA-256 is one the occupant's registry templates came from is not
enrolled again.

A row may name up to three photos (``a.jpg;b.jpg``): each is enrolled on its
own and becomes its own template (matching takes the best, no fusion). Any of
them failing fails the row; so do two photos of one row that look like
different people.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.face.errors import EnrolmentError, LintelEdgeError
from edge.face.models import BUNDLED_MODEL_ID
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
    one_person_similarity: float | None = 0.10
    """Refuse a row whose photos are less similar (cosine) than this to each other; None: off.

    On ../shared/eval/faces (1,321 photos of 177 people, buffalo_s, see
    bench/cluster_calibration.py) 99% of same-person pairs are >= 0.154 while half of
    different-person pairs are <= 0.005: 0.10 catches most photos of two people filed
    in one row and refuses fewer than 1 in 100 genuine pairs."""
    actor: str = "lintel-registry"
    """Who runs the import, for the audit log."""


@dataclass(frozen=True, slots=True)
class PhotoFailure:
    """A photo that could not be enrolled (unreadable, no face...): the row issue to report."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class KnownPhoto:
    """A photo not enrolled: the site already holds a template of it."""

    photo_sha256: str
    photo: str = ""
    """The file name as the row gives it (for messages; empty if unknown)."""


PhotoOutcome = NewFace | PhotoFailure | KnownPhoto
Enrolled = Mapping[int, Sequence[PhotoOutcome]]
"""Row -> for each of its photos, the face enrolled from it, or why it could not be, or
that it was skipped because the site already had it (see :func:`enrol_for_upload`)."""


@dataclass(frozen=True, slots=True)
class RowFaces:
    """A row whose photos differ from its occupant's registry templates."""

    photos: tuple[tuple[str, str], ...]
    """(file name, SHA-256) of every photo of the row: the set its templates come from."""
    new: tuple[NewFace, ...]
    """The faces of photos the occupant has no template of yet."""

    @property
    def sha256s(self) -> frozenset[str]:
        return frozenset(sha for _name, sha in self.photos)


@dataclass
class _PhotoCounts:
    unchanged: int = 0
    failed: int = 0


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
        self.warnings: list[RowIssue] = []
        """Rows imported as asked but worth a look (a usable but poor photo)."""
        self.by_ext, self.by_hash = occupants_by_identity(snapshot.occupants)

    def issue(self, record: OccupantRecord, column: str, reason: str, message: str) -> None:
        header = self.sheet.columns.get(column, column)
        self.issues.append(RowIssue(record.row, header, reason, message, record.name))

    def warn(self, record: OccupantRecord, column: str, reason: str, message: str) -> None:
        header = self.sheet.columns.get(column, column)
        self.warnings.append(RowIssue(record.row, header, reason, message, record.name))

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
    if enrolled is None:

        def known(row: int, sha: str) -> bool:
            stored = matched.get(row)
            return stored is not None and sha in stored.photo_sha256s

        enrolled, model_id = _enrol_photos(run, records, photos, enroller, known=known)
    counts = _PhotoCounts()
    faces, model_id = _resolve_faces(run, records, matched, enrolled, model_id, counts)

    if options.one_person_similarity is not None and faces:
        _check_one_person(run, records, matched, faces, options.one_person_similarity)
    if options.same_face_similarity is not None and any(f.new for f in faces.values()):
        _check_same_faces(run, records, matched, faces, options.same_face_similarity)
    failed_rows = {i.row for i in run.issues}
    changes: list[Change] = []
    unchanged = 0
    for record in records:
        if record.row in failed_rows:
            continue
        stored = matched[record.row]
        row_faces = faces.get(record.row)
        new = row_faces.new if row_faces else ()
        shas = row_faces.sha256s if row_faces else None
        if stored is None:
            changes.append(Change("create", record, None, new, shas))
        elif row_faces is not None or _differs(record, stored):
            changes.append(Change("update", record, stored.id, new, shas))
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
        warnings=tuple(sorted(run.warnings, key=lambda i: (i.row, i.column))),
        enrolled_photos=sum(len(f.new) for f in faces.values()),
        new_site=snapshot.site_id is None,
        unchanged_photos=counts.unchanged,
        failed_photos=counts.failed,
    )
    return ImportResult(report, plan, version)


def _enrol_photos(
    run: _Run,
    records: list[OccupantRecord],
    photos: PhotoSource | None,
    enroller_factory: Callable[[], Enroller | EnrolBackend] | None,
    *,
    known: Callable[[int, str], bool],
    bundled_default: bool = True,
) -> tuple[dict[int, list[PhotoOutcome]], str]:
    """Read every photo of every row and enrol those ``known`` does not already hold
    (with a progress bar counting photos); row -> one outcome per photo, in cell order."""
    from tqdm import tqdm

    site_model = run.snapshot.model_id
    with_photo = [r for r in records if r.photos]
    if with_photo and photos is None:
        raise InputError("the file names photos; give the folder or zip with --photos")
    out: dict[int, list[PhotoOutcome]] = {r.row: [] for r in with_photo}
    by_row = {r.row: r for r in with_photo}
    slots: dict[int, tuple[int, int, str, str]] = {}  # job key -> (row, index, name, sha)
    bar = tqdm(
        total=sum(len(r.photos) for r in with_photo),
        unit="photo",
        desc="enrolling",
        file=sys.stderr,
        disable=not run.options.progress or not with_photo,
        dynamic_ncols=True,
    )

    def pending() -> Iterator[Job]:
        """Photos that need the engine; unreadable and known ones are settled here."""
        for record in with_photo:
            if photos is None:
                return
            for name in record.photos:
                outcomes = out[record.row]
                try:
                    data = photos.read(name)
                except PhotoError as exc:
                    outcomes.append(PhotoFailure("bad_photo", str(exc)))
                    bar.update(1)
                    continue
                sha = hashlib.sha256(data).hexdigest()
                if known(record.row, sha):
                    outcomes.append(KnownPhoto(sha, name))  # enrolled with the site's model
                    bar.update(1)
                    continue
                key = len(slots)
                slots[key] = (record.row, len(outcomes), name, sha)
                outcomes.append(PhotoFailure("not_enrolled", f"photo {name!r} was not enrolled"))
                yield Job(key, name, data)

    model_id = site_model or ""
    try:
        jobs = pending()
        first = next(jobs, None)
        if first is not None:
            backend = _load_backend(enroller_factory, site_model)
            model_id = backend.model_id
            for job, outcome in backend.run(itertools.chain([first], jobs)):
                bar.update(1)
                row, index, name, sha = slots[job.key]
                if isinstance(outcome, EnrolmentError):
                    out[row][index] = PhotoFailure(outcome.reason, str(outcome))
                    continue
                if outcome.warning:
                    # Enrolled, not refused: the recogniser can use it, but a
                    # better photo would match this person more reliably.
                    run.warn(
                        by_row[row],
                        "photo",
                        "poor_photo",
                        f"photo {name!r} enrolled, but it is poor ({outcome.warning}); "
                        "a sharper, larger, more frontal photo would match better",
                    )
                out[row][index] = NewFace(
                    embedding=outcome.embedding,
                    model_id=outcome.model_id,
                    quality=outcome.quality,
                    photo_sha256=sha,
                    photo=name,
                    chip=outcome.chip,
                )
    finally:
        bar.close()
    if not model_id and bundled_default:
        model_id = _bundled_model_id()
    return out, model_id


def enrol_for_upload(
    sheet: Sheet,
    *,
    photos: PhotoSource | None,
    enroller: Callable[[], Enroller | EnrolBackend] | None,
    progress: bool = False,
    known_sha256: frozenset[str] = frozenset(),
) -> tuple[dict[int, list[PhotoOutcome]], str | None]:
    """Enrol the photos of a sheet's valid rows on this machine, for a remote import.

    Returns (row -> one outcome per photo, the engine's model id or None when no
    photo needed the engine). Validation here only decides which rows are worth
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
    faces, model_id = _enrol_photos(
        run,
        list(run.validated.records),
        photos,
        enroller,
        known=lambda _row, sha: sha in known_sha256,
        bundled_default=False,
    )
    return faces, model_id or None


def _resolve_faces(
    run: _Run,
    records: list[OccupantRecord],
    matched: dict[int, StoredOccupant | None],
    enrolled: Enrolled,
    default_model_id: str | None,
    counts: _PhotoCounts,
) -> tuple[dict[int, RowFaces], str]:
    """Row -> its photos and new faces, for rows whose photo set differs from the
    occupant's registry templates; failed photos become row issues. The same for faces
    enrolled here and faces a client enrolled (remote import): same skips, same refusals."""
    site_model = run.snapshot.model_id
    model = site_model or default_model_id or _bundled_model_id()
    out: dict[int, RowFaces] = {}
    needed: list[int] = []
    for record in records:
        if not record.photos:
            continue
        outcomes = list(enrolled.get(record.row, ()))
        if not outcomes:
            run.issue(record, "photo", "not_enrolled", "the client sent no face for this photo")
            continue
        failures = [o for o in outcomes if isinstance(o, PhotoFailure)]
        if failures:
            counts.failed += len(failures)
            for failure in failures:
                run.issue(record, "photo", failure.reason, failure.message)
            continue
        if len(outcomes) != len(record.photos):
            run.issue(
                record,
                "photo",
                "not_enrolled",
                f"the client sent {len(outcomes)} faces for {len(record.photos)} photos",
            )
            continue
        faces = [o for o in outcomes if not isinstance(o, PhotoFailure)]
        pairs = zip(faces, record.photos, strict=True)
        named = [(f.photo or name, f.photo_sha256) for f, name in pairs]
        first: dict[str, str] = {}
        duplicate = False
        for name, sha in named:
            if sha in first:
                run.issue(
                    record,
                    "photo",
                    "duplicate",
                    f"photos {first[sha]!r} and {name!r} of row {record.row} are the same file",
                )
                duplicate = True
                break
            first[sha] = name
        if duplicate:
            continue
        stored = matched.get(record.row)
        have = stored.photo_sha256s if stored is not None else frozenset()
        wanted = frozenset(first)
        counts.unchanged += len(wanted & have)
        if wanted == have:
            continue  # the same photos are already enrolled with the site's model
        new: list[NewFace] = []
        for face in faces:
            if face.photo_sha256 in have:
                continue  # enrolled again by a client that did not know; keep the stored one
            if isinstance(face, KnownPhoto):
                # The site knows the photo, but not as this row's occupant's (it moved to
                # another person, or the register changed since the client asked).
                needed.append(record.row)
                break
            if face.model_id != model:
                raise InputError(
                    f"the site's gallery uses model {model!r} but the face engine is "
                    f"{face.model_id!r}; templates of another model never reach its edges"
                )
            new.append(face)
        else:
            out[record.row] = RowFaces(tuple(named), tuple(new))
    if needed:
        raise FacesNeeded(tuple(needed))
    return out, model


def _check_one_person(
    run: _Run,
    records: list[OccupantRecord],
    matched: dict[int, StoredOccupant | None],
    faces: dict[int, RowFaces],
    threshold: float,
) -> None:
    """Flag rows whose photos (new ones and kept templates) look like different people."""
    by_row = {r.row: r for r in records}
    stored_vecs: dict[tuple[int, str], bytes] = {
        (occupant_id, sha): blob for occupant_id, sha, blob in run.snapshot.registry_templates
    }
    for row, row_faces in faces.items():
        if len(row_faces.photos) < 2:
            continue
        new = {f.photo_sha256: f.embedding for f in row_faces.new}
        stored = matched.get(row)
        vecs: list[tuple[str, npt.NDArray[np.float32]]] = []
        for name, sha in row_faces.photos:
            if sha in new:
                vecs.append((name, np.asarray(new[sha], dtype=np.float32)))
            elif stored is not None and (stored.id, sha) in stored_vecs:
                blob = stored_vecs[(stored.id, sha)]
                vecs.append((name, np.frombuffer(blob, dtype="<f4").astype(np.float32)))
        worst: tuple[float, str, str] | None = None
        for (a, va), (b, vb) in itertools.combinations(vecs, 2):
            if va.shape != vb.shape:
                continue
            sim = float(va @ vb)
            if worst is None or sim < worst[0]:
                worst = (sim, a, b)
        if worst is not None and worst[0] < threshold:
            run.issue(
                by_row[row],
                "photo",
                "different_people",
                f"photos {worst[1]!r} and {worst[2]!r} of row {row} look like different "
                f"people ({worst[0]:.2f})",
            )


def _check_same_faces(
    run: _Run,
    records: list[OccupantRecord],
    matched: dict[int, StoredOccupant | None],
    faces: dict[int, RowFaces],
    threshold: float,
) -> None:
    """Flag new faces that are (nearly) the same face as another row's or occupant's."""
    by_row = {r.row: r for r in records}
    items = [(row, face) for row in sorted(faces) for face in faces[row].new]
    rows = [row for row, _face in items]
    new = np.stack([face.embedding for _row, face in items]).astype(np.float32)
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

    def photo(index: int) -> str:
        row, face = items[index]
        return face.photo or by_row[row].photo or ""

    block = 1024  # bounded memory: a 1024 x N similarity block at a time
    for start in range(0, len(rows), block):
        part = new[start : start + block]
        sims = part @ new.T
        for i in range(part.shape[0]):
            sims[i, start + i] = -1.0  # not itself
        for i, j in zip(*np.nonzero(sims >= threshold), strict=True):
            a, b = rows[start + int(i)], rows[int(j)]
            if a not in flagged and a != b:  # a row's own photos are one person
                flagged.add(a)
                run.issue(
                    by_row[a],
                    "photo",
                    "same_face",
                    f"the face in {photo(start + int(i))!r} is the one in row {b}'s photo "
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
                    f"the face in {photo(start + int(i))!r} is registered occupant "
                    f"{other.name!r}'s (external id {other.external_id or '-'}, similarity "
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
    """Model id for a new site when no photo needed enrolling (the bundled pack's).

    A constant, not resolved from the installed pack: a server without the face engine
    (the `server` extra) imports registers without photos too, and its new sites must
    carry the id the edges' bundled pack reports, or their galleries are refused."""
    return BUNDLED_MODEL_ID
