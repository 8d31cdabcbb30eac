"""``lintel-registry``: import a property registry (CSV/XLSX + photos) into a site.

Two targets: ``--db URL`` (or the LINTEL_* settings) writes the database
directly, on the server host; ``--server URL --token T`` (or LINTEL_API_TOKEN)
goes through the server's API from another machine: the photos are enrolled
here and never leave it, only the rows and face templates are sent, in one
request (an admin's token, or a manager's of that site; only admins create
sites). Both print the same report; re-importing an unchanged file changes
nothing in either mode.

Exit codes: 0 imported (or nothing to do), 1 some rows failed (nothing written
unless --partial), 2 the input or options are unusable (bad file, unsafe zip,
missing columns, database unreachable, server unreachable or refusing the
token or the import). User mistakes never print a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from edge.face.errors import LintelEdgeError
from edge.face.models import resolve_pack
from registry.enrol import EnrolBackend, Enroller, ProcessPoolBackend, load_engine
from registry.errors import FacesNeeded, InputError, RegistryError
from registry.importer import ImportOptions, PhotoOutcome, enrol_for_upload, run_import
from registry.photos import PhotoSource, open_photos
from registry.reader import read_registry
from registry.remote import (
    TOKEN_ENV,
    RemoteResult,
    build_payload,
    import_url,
    site_photos,
    upload,
)
from registry.report import ImportReport
from registry.store import local_store_opener
from registry.template import write_template

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ROWS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lintel-registry",
        description="Import a property registry into a Lintel site.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "import",
        help="import occupants (CSV in UTF-8 or GBK, or XLSX) with their photos",
        description="Validate every row, enrol every photo, then write all rows in one "
        "transaction (or none: any bad row and nothing is written, unless --partial). "
        "With --server the photos are enrolled on this machine and never sent; the rows and "
        "faces go to the server in one request (an admin's token, or a manager's of that "
        "site; only admins create sites), bounded by the server's LINTEL_MAX_IMPORT_BODY_BYTES "
        "(about 3.1 KB a row with a photo: ~20,000 such rows at the default 64 MiB). "
        "The report is the same in both modes.",
    )
    p.add_argument("file", type=Path, help="registry file (.csv or .xlsx)")
    p.add_argument("--site", required=True, help="site name (created if it does not exist)")
    p.add_argument(
        "--photos",
        type=Path,
        help="folder or .zip holding the photos named in 照片 (up to 3 a row: a.jpg;b.jpg)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--db", help="SQLAlchemy database URL (default: the server's, from LINTEL_* settings)"
    )
    target.add_argument(
        "--server",
        help="import through a Lintel server's API, e.g. https://lintel.example (photos are "
        "enrolled here and stay here; rows and face templates are sent in one request)",
    )
    p.add_argument(
        "--token", help="API token for --server (default: $LINTEL_API_TOKEN); admin or manager"
    )
    p.add_argument("--dry-run", action="store_true", help="validate and enrol; write nothing")
    p.add_argument("--partial", action="store_true", help="import the good rows even if some fail")
    p.add_argument(
        "--sync", action="store_true", help="mark occupants missing from the file as moved out"
    )
    p.add_argument("--report", type=Path, help="also write the report to FILE (.csv or .json)")
    p.add_argument(
        "--allow-same-face",
        action="store_true",
        help="accept a photo whose face is (nearly) another occupant's (refused by default)",
    )
    p.add_argument(
        "--progress", action="store_true", help="show the progress bar even when not on a TTY"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="ONNX Runtime threads per face engine (default: up to 4)",
    )
    p.add_argument(
        "--model",
        default="buffalo_s",
        help="face model pack: 'buffalo_s' (bundled; non-commercial), 'sface' (commercially "
        "safe) or an insightface pack directory; must be the site's (see `lintel-edge models`)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="enrolment processes, each with its own engine (for many photos on many "
        "cores: e.g. --workers 4 --threads 2 on 8 cores; default 1)",
    )

    p = sub.add_parser("template", help="write an example registry file with every column")
    p.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=Path("registry-template.xlsx"),
        help="output .xlsx or .csv (default: registry-template.xlsx)",
    )
    p.add_argument("--lang", choices=("zh", "en"), default="zh", help="header language")
    return parser


def _actor() -> str:
    """The audit log's actor: the operating-system user running the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli:unknown"


def _cmd_import(args: argparse.Namespace, transport: httpx.BaseTransport | None = None) -> int:
    if args.token and not args.server:
        raise InputError("--token is for --server")
    if args.threads < 1 or args.workers < 1:
        raise InputError("--threads and --workers must be at least 1")
    if args.report is not None:
        if args.report.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"--report {args.report}: use a .csv or .json file name")
        # Checked first: finding out after a long import that the report cannot be written
        # would lose the list of bad rows.
        if not args.report.absolute().parent.is_dir():
            raise InputError(f"--report {args.report}: the folder does not exist")
    threads = args.threads
    workers = args.workers
    pack = args.model

    def engine_factory() -> Enroller | EnrolBackend:
        if workers > 1:
            return ProcessPoolBackend(workers, threads=threads, pack=pack)
        return load_engine(pack, threads=threads)

    if args.server:
        return _remote_import(args, engine_factory, transport)
    # The office PC installs only the registry extra (no SQLAlchemy, no server), where
    # --server (with or without --dry-run) and `template` work; only the local --db mode
    # writes the server's database directly, through the store the server registers.
    open_store = local_store_opener()  # without the server: one line, before any reading
    sheet = read_registry(args.file)  # a bad file is refused before any database is made
    secret, store = open_store(args.db, migrate=not args.dry_run)
    photos: PhotoSource | None = None
    try:
        photos = open_photos(args.photos) if args.photos else None
        result = run_import(
            sheet,
            store=store,
            options=ImportOptions(
                site=args.site,
                dry_run=args.dry_run,
                partial=args.partial,
                sync=args.sync,
                progress=args.progress or sys.stderr.isatty(),
                actor=_actor(),
                same_face_similarity=None if args.allow_same_face else 0.8,
            ),
            secret=secret,
            photos=photos,
            enroller=engine_factory,
        )
    finally:
        if photos is not None:
            photos.close()
        store.close()
    return _finish(args, result.report, result.gallery_version)


def _finish(args: argparse.Namespace, report: ImportReport, gallery_version: int | None) -> int:
    """Print the report (and write --report): the same in local and remote mode."""
    sys.stdout.write(report.render_text())
    if gallery_version is not None and report.written:
        sys.stdout.write(f"site {args.site!r} gallery version {gallery_version}\n")
    if args.report is not None:
        report.write(args.report)
        sys.stdout.write(f"report written to {args.report}\n")
    return EXIT_ROWS_FAILED if report.issues else EXIT_OK


def _remote_import(
    args: argparse.Namespace,
    engine_factory: Callable[[], Enroller | EnrolBackend],
    transport: httpx.BaseTransport | None,
) -> int:
    """``--server``: enrol the photos here, send rows and faces, print the server's report."""
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise InputError(f"--server needs an API token: --token or {TOKEN_ENV}")
    token = token.strip()
    import_url(args.server, args.site)  # a bad URL is refused before a long enrolment
    try:
        pack_model = resolve_pack(args.model).model_id  # cheap: nothing is loaded
    except LintelEdgeError as exc:
        raise InputError(f"--model {args.model}: {exc}") from None
    sheet = read_registry(args.file)
    known = site_photos(server=args.server, token=token, site=args.site, transport=transport)
    if args.photos and known.model_id is not None and known.model_id != pack_model:
        # Found out now rather than after enrolling every photo.
        raise InputError(
            f"the site's gallery uses model {known.model_id!r} but --model {args.model} is "
            f"{pack_model!r}; templates of another model never reach its edges"
        )

    def enrol(skip: frozenset[str]) -> tuple[dict[int, list[PhotoOutcome]], str]:
        photos: PhotoSource | None = open_photos(args.photos) if args.photos else None
        try:
            faces, model_id = enrol_for_upload(
                sheet,
                photos=photos,
                enroller=engine_factory,
                progress=args.progress or sys.stderr.isatty(),
                known_sha256=skip,
            )
        finally:
            if photos is not None:
                photos.close()
        # No photo needed the engine: the pack's model names a new site's gallery.
        return faces, model_id or pack_model

    def send(faces: dict[int, list[PhotoOutcome]], model_id: str) -> RemoteResult:
        payload = build_payload(
            sheet, faces, model_id=model_id, allow_same_face=args.allow_same_face
        )
        return upload(
            payload,
            server=args.server,
            token=token,
            site=args.site,
            dry_run=args.dry_run,
            partial=args.partial,
            sync=args.sync,
            transport=transport,
        )

    try:
        result = send(*enrol(known.photo_sha256))
    except FacesNeeded as exc:
        # A known photo now belongs to someone else (or the register changed since
        # we asked): nothing was written; enrol every photo and send once more.
        log.info("server needs the faces of rows %s; enrolling every photo", exc.rows)
        result = send(*enrol(frozenset()))
    return _finish(args, result.report, result.gallery_version)


def _cmd_template(args: argparse.Namespace) -> int:
    write_template(args.file, lang=args.lang)
    sys.stdout.write(f"wrote {args.file}\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """The CLI; ``transport`` lets tests send ``--server`` requests to an in-process app."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "import":
            return _cmd_import(args, transport)
        if args.command == "template":
            return _cmd_template(args)
    except RegistryError as exc:
        sys.stderr.write(f"lintel-registry: error: {exc}\n")
        return EXIT_BAD_INPUT
    except OSError as exc:  # unreadable file, unwritable report, disk full
        sys.stderr.write(f"lintel-registry: error: {exc}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("lintel-registry: interrupted, nothing written\n")
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
