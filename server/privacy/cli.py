"""``lintel-server`` commands for privacy: purge, audit, crops, subject, consent, retention.

``server/cli.py`` adds these parsers (:func:`add_commands`) and hands the
parsed arguments here (:func:`run_command`) inside one transaction; every
command that reads or changes personal data is audited with actor ``cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from server.audit import export
from server.audit.chain import verify_chain
from server.audit.service import record
from server.privacy import subject
from server.privacy.consent import set_consent
from server.privacy.crypto import load_keyring, new_key_text
from server.privacy.purge import purge
from server.privacy.retention import set_site_retention
from server.sightings.crops import reseal
from server.sites.service import resolve_site

COMMANDS = ("purge", "audit", "crops", "subject", "retention", "consent")


def add_commands(sub: Any) -> None:
    """Add the privacy subcommands to ``lintel-server``'s subparsers."""
    p = sub.add_parser("purge", help="apply every site's retention (delete expired face data)")
    p.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    p.add_argument("--site", default=None, help="site name or id (default: all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("audit", help="the audit log")
    asub = p.add_subparsers(dest="audit_command", required=True)
    q = asub.add_parser("verify", help="check the hash chain; exit 1 at the first broken link")
    q.add_argument("--json", action="store_true")
    q = asub.add_parser("export", help="events as CSV (formula cells escaped); audited")
    q.add_argument("--site", default=None, help="site name or id")
    q.add_argument("--action", default=None)
    q.add_argument("--actor", default=None)
    q.add_argument("--out", type=Path, default=None, help="file (default: stdout)")

    p = sub.add_parser("crops", help="face crops at rest")
    csub = p.add_subparsers(dest="crops_command", required=True)
    csub.add_parser("new-key", help="print a fresh random crop key (base64)")
    q = csub.add_parser("rotate-key", help="re-encrypt every crop with the current key")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("subject", help="subject requests (export / erase one occupant)")
    ssub = p.add_subparsers(dest="subject_command", required=True)
    q = ssub.add_parser("export", help="everything held on one occupant, as JSON")
    q.add_argument("--occupant", type=int, required=True)
    q.add_argument("--include-biometrics", action="store_true", help="raw template embeddings")
    q.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
    q = ssub.add_parser("erase", help="erase one occupant everywhere (templates reach edges)")
    q.add_argument("--occupant", type=int, required=True)
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("consent", help="record an occupant's consent and notice (replaces them)")
    p.add_argument("--occupant", type=int, required=True)
    p.add_argument("--at", type=_aware, default=None, help="consent time, ISO 8601 with zone")
    p.add_argument("--ref", default=None, help="e.g. the signed form's number")
    p.add_argument("--notice-at", type=_aware, default=None, help="notice time, ISO 8601")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("retention", help="show or set a site's retention periods (days)")
    p.add_argument("--site", required=True, help="site name or id")
    p.add_argument("--crop-days", type=int, default=None)
    p.add_argument("--closed-case-days", type=int, default=None)
    p.add_argument("--moved-out-days", type=int, default=None)
    p.add_argument("--json", action="store_true")


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (e.g. +08:00)")
    return value


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n")
    elif isinstance(data, dict):
        for key, value in data.items():
            sys.stdout.write(f"{key}: {value}\n")
    else:
        for row in data:
            sys.stdout.write("  ".join(f"{k}={v}" for k, v in row.items()) + "\n")


def new_key_command() -> int:
    """``crops new-key`` (needs no database)."""
    sys.stdout.write(new_key_text() + "\n")
    return 0


def run_command(args: argparse.Namespace, settings: Any, session: Session) -> int:
    """Run one privacy command in ``session`` (committed by the caller); the exit code."""
    if args.command == "purge":
        site_id = resolve_site(session=session, ref=args.site).id if args.site else None
        results = purge(session=session, site_id=site_id, dry_run=args.dry_run, actor="cli")
        rows = [{**r.as_dict(), "dry_run": args.dry_run} for r in results]
        _print(rows, args.json)
        return 0
    if args.command == "audit":
        return _audit(args, session)
    if args.command == "crops":
        keyring = load_keyring(settings)
        done = reseal(session=session, keyring=keyring)
        record(
            session=session,
            actor="cli",
            action="crops.rotate_key",
            object_type="crops",
            detail={"resealed": done, "key_id": keyring.active_id},
        )
        _print({"resealed": done, "key_id": keyring.active_id}, args.json)
        return 0
    if args.command == "subject":
        if args.subject_command == "export":
            data = subject.export_subject(
                session=session,
                occupant_id=args.occupant,
                actor="cli",
                include_biometrics=args.include_biometrics,
            )
            _write(json.dumps(data, indent=2, ensure_ascii=False) + "\n", args.out)
            return 0
        counts = subject.erase_subject(session=session, occupant_id=args.occupant, actor="cli")
        _print(counts, args.json)
        return 0
    if args.command == "consent":
        occ = set_consent(
            session=session,
            occupant_id=args.occupant,
            actor="cli",
            consent_at=args.at,
            consent_ref=args.ref,
            notice_given_at=args.notice_at,
        )
        _print(
            {
                "occupant_id": occ.id,
                "consent_at": occ.consent_at.isoformat() if occ.consent_at else None,
                "consent_ref": occ.consent_ref,
                "notice_given_at": (
                    occ.notice_given_at.isoformat() if occ.notice_given_at else None
                ),
            },
            args.json,
        )
        return 0
    if args.command == "retention":
        site = resolve_site(session=session, ref=args.site)
        site = set_site_retention(
            session=session,
            site_id=site.id,
            actor="cli",
            crop_retention_days=args.crop_days,
            closed_case_retention_days=args.closed_case_days,
            moved_out_template_days=args.moved_out_days,
        )
        _print(
            {
                "site_id": site.id,
                "crop_retention_days": site.crop_retention_days,
                "closed_case_retention_days": site.closed_case_retention_days,
                "moved_out_template_days": site.moved_out_template_days,
            },
            args.json,
        )
        return 0
    raise AssertionError(f"not a privacy command: {args.command!r}")


def _audit(args: argparse.Namespace, session: Session) -> int:
    if args.audit_command == "verify":
        report = verify_chain(session=session)
        if args.json:
            _print(report.as_dict(), True)
        elif report.ok:
            sys.stdout.write(f"ok: {report.checked} events, last hash {report.last_hash}\n")
        else:
            sys.stdout.write(
                f"BROKEN at event {report.first_broken_id}: {report.reason} "
                f"({report.checked} events before it are intact)\n"
            )
        return 0 if report.ok else 1
    site_id = resolve_site(session=session, ref=args.site).id if args.site else None
    flt = export.AuditFilter(site_id=site_id, action=args.action, actor=args.actor)
    events = list(session.scalars(export.query_events(flt)))
    _write("".join(export.csv_lines(events)), args.out)
    record(
        session=session,
        actor="cli",
        action="audit.export",
        object_type="audit",
        detail={
            "site_id": site_id,
            "action": args.action,
            "actor": args.actor,
            "rows": len(events),
        },
    )
    return 0
