"""``lintel-server``: run the server and administer it from a shell.

Every command reads the same ``LINTEL_*`` settings as the server, so
``LINTEL_DATABASE_URL=postgresql+psycopg://... lintel-server device add ...``
works against the production database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from server.audit.service import record
from server.clusters.worker import cli_worker
from server.db import (
    current_revision,
    make_engine,
    make_session_factory,
    session_scope,
    upgrade,
    utcnow,
)
from server.devices.enrolment import create_enrolment_code
from server.devices.service import (
    create_device,
    get_device,
    rotate_device_token,
    set_device_disabled,
)
from server.errors import LintelError, NotFound
from server.metrics import MULTIPROC_ENV, fresh_multiproc_dir
from server.notify.cli import add_commands as add_notify_commands
from server.notify.cli import add_worker_args as add_notify_worker_args
from server.notify.cli import run_command as run_notify_command
from server.privacy.cli import COMMANDS as PRIVACY_COMMANDS
from server.privacy.cli import add_commands as add_privacy_commands
from server.privacy.cli import new_key_command
from server.privacy.cli import run_command as run_privacy_command
from server.privacy.crypto import install_keyring, load_keyring
from server.settings import Settings
from server.sites.service import create_site, list_sites, resolve_site
from server.stats import site_stats
from server.users.models import User
from server.users.service import (
    create_api_token,
    create_user,
    get_user_by_name,
    log_out_everywhere,
    revoke_api_tokens,
    set_disabled,
    set_password,
    web_sessions_of,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lintel-server", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="serve the API with uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="startup lines and one access line per request at info (the default); "
        "warning keeps only problems",
    )
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IPS",
        help="comma-separated addresses of the reverse proxies whose X-Forwarded-For / "
        "X-Forwarded-Proto are believed (e.g. 127.0.0.1 for a proxy on this host); default: "
        "none, the TCP peer is the client (login limits and the audit log use it)",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        default=200,
        metavar="N",
        help="connections and requests each worker serves at once; beyond it, 503 "
        "(default 200: bounds the memory held by bodies being read, each <= max_body_bytes)",
    )

    p = sub.add_parser("db", help="database schema")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("upgrade", help="migrate to the newest schema")
    dbsub.add_parser("current", help="print the schema revision")

    p = sub.add_parser("site", help="sites")
    sitesub = p.add_subparsers(dest="site_command", required=True)
    q = sitesub.add_parser("add", help="create a site")
    q.add_argument("name")
    q.add_argument("--model-id", default=None, help="recognition model id (default: settings)")
    q.add_argument("--json", action="store_true")
    sitesub.add_parser("list", help="list sites")

    p = sub.add_parser("device", help="edge devices")
    devsub = p.add_subparsers(dest="device_command", required=True)
    q = devsub.add_parser("add", help="register a device; prints its token once")
    q.add_argument("--site", required=True, help="site name or id")
    q.add_argument("--name", required=True)
    q.add_argument("--json", action="store_true", help='print {"device_id", "token"}')
    for name, text in (
        ("disable", "refuse the device's token from now on (a lost or stolen box)"),
        ("enable", "accept the device's token again"),
        ("rotate-token", "give the device a new token, printed once; the old one stops at once"),
        (
            "enrol-code",
            "a one-time code (15 min) the box trades for its token: lintel-edge enrol --code",
        ),
    ):
        q = devsub.add_parser(name, help=text)
        q.add_argument("device", help="device id, or name (with --site when names repeat)")
        q.add_argument("--site", default=None, help="site name or id the device is in")
        if name in ("rotate-token", "enrol-code"):
            q.add_argument("--json", action="store_true", help='print {"device_id", "token"}')

    p = sub.add_parser("user", help="users")
    usersub = p.add_subparsers(dest="user_command", required=True)
    q = usersub.add_parser("add", help="create a user and an API token")
    q.add_argument("username")
    q.add_argument("--role", required=True, choices=["admin", "manager", "viewer"])
    q.add_argument("--site", action="append", default=[], help="site name or id (repeatable)")
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    q.add_argument("--json", action="store_true")
    q = usersub.add_parser("sessions", help="list a user's web sessions (not yet expired)")
    q.add_argument("username")
    q.add_argument("--json", action="store_true")
    q = usersub.add_parser(
        "logout-all", help="end every web session and API token of a user at once"
    )
    q.add_argument("username")
    q = usersub.add_parser(
        "disable", help="refuse the user's logins; ends their web sessions, deletes API tokens"
    )
    q.add_argument("username")
    q = usersub.add_parser("enable", help="let a disabled user log in again")
    q.add_argument("username")
    q = usersub.add_parser("set-password", help="new password; ends the user's web sessions")
    q.add_argument("username")
    q.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from stdin (never from the command line)",
    )
    q = usersub.add_parser("revoke-tokens", help="delete every API token of a user")
    q.add_argument("username")

    # -- clustering worker (engineer F; logic in server/clusters/worker.py) --
    p = sub.add_parser("worker", help="cluster unknown sightings and open cases until stopped")
    p.add_argument("--once", action="store_true", help="drain the pending work, then exit")
    p.add_argument("--batch", type=int, default=1000, help="sightings per site per transaction")
    p.add_argument("--poll", type=float, default=1.0, help="seconds to sleep when idle")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve the worker's Prometheus counters (e.g. lintel_worker_site_failures_total) "
        "on this port while it runs (0: off)",
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        help="address for --metrics-port (0.0.0.0 in a container that Prometheus scrapes)",
    )
    # -- notifications (issue 15; server/notify/cli.py): the worker's sender and `notify`
    add_notify_worker_args(p)
    add_notify_commands(sub)

    # -- privacy: purge, audit, crops, subject, retention (engineer P; server/privacy/cli.py)
    add_privacy_commands(sub)

    p = sub.add_parser("stats", help="counts per site")
    p.add_argument("--site", default=None, help="site name or id (default: all)")
    p.add_argument("--json", action="store_true")
    return parser


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _out(json.dumps(data, sort_keys=True))
    else:
        for key, value in data.items():
            _out(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.stderr.write(f"lintel-server: bad settings: {exc}\n")
        return 2
    try:
        return _dispatch(args, settings)
    except LintelError as exc:
        sys.stderr.write(f"lintel-server: error: {exc.detail}\n")
        return 1
    except OperationalError as exc:
        # Wrong URL, server down, bad credentials: one line, not a traceback.
        sys.stderr.write(f"lintel-server: cannot use the database: {exc.orig or exc}\n")
        return 2


def _dispatch(args: argparse.Namespace, settings: Any) -> int:
    if args.command == "crops" and args.crops_command == "new-key":
        return new_key_command()
    # Crops are sealed at rest: every command that may touch them knows the keys,
    # and `run` without a key outside dev/test stops here, before any worker starts.
    install_keyring(load_keyring(settings))
    if args.command == "run":
        return _run(args, settings)
    if args.command == "worker":
        return cli_worker(args, settings)

    engine = make_engine(settings.sqlalchemy_url)
    try:
        if args.command == "db":
            if args.db_command == "upgrade":
                upgrade(engine)
            _out(f"revision: {current_revision(engine)}")
            return 0
        upgrade(engine)  # admin commands on a fresh install just work
        with session_scope(make_session_factory(engine)) as session:
            return _admin(args, settings, session)
    finally:
        engine.dispose()


def _admin(args: argparse.Namespace, settings: Any, session: Any) -> int:
    if args.command in PRIVACY_COMMANDS:
        return run_privacy_command(args, settings, session)
    if args.command == "notify":
        return run_notify_command(args, settings, session)
    if args.command == "site":
        if args.site_command == "add":
            site = create_site(
                session=session, name=args.name, model_id=args.model_id or settings.default_model_id
            )
            record(
                session=session,
                actor="cli",
                action="site.add",
                object_type="site",
                object_id=site.id,
                site_id=site.id,
            )
            _emit({"site_id": site.id, "name": site.name, "model_id": site.model_id}, args.json)
            return 0
        for site in list_sites(session=session):
            _out(f"{site.id}\t{site.name}\t{site.model_id}\tgallery v{site.gallery_version}")
        return 0
    if args.command == "device" and args.device_command != "add":
        return _device_credentials(args, session)
    if args.command == "device":
        site = resolve_site(session=session, ref=args.site)
        device, token = create_device(session=session, site_id=site.id, name=args.name)
        record(
            session=session,
            actor="cli",
            action="device.add",
            object_type="device",
            object_id=device.id,
            site_id=site.id,
            detail={"name": device.name},
        )
        if args.json:
            _out(json.dumps({"device_id": device.id, "token": token}))
        else:
            _out(f"device {device.id} ({device.name}) added to site {site.name}")
            _out(f"token (shown once, store it on the device): {token}")
        return 0
    if args.command == "user" and args.user_command in ("sessions", "logout-all"):
        return _user_sessions(args, session)
    if args.command == "user" and args.user_command != "add":
        return _user_credentials(args, settings, session)
    if args.command == "user":
        password = None
        if args.password_stdin:
            password = _password_from_stdin()
            if password is None:
                return 1
        site_ids = [resolve_site(session=session, ref=ref).id for ref in args.site]
        user = create_user(
            session=session,
            username=args.username,
            role=args.role,
            password=password,
            site_ids=site_ids,
            min_password_length=settings.min_password_length,
        )
        _row, token = create_api_token(session=session, user_id=user.id, name="cli")
        record(
            session=session,
            actor="cli",
            action="user.add",
            object_type="user",
            object_id=user.id,
            detail={"username": user.username, "role": user.role, "sites": site_ids},
        )
        _emit(
            {"user_id": user.id, "username": user.username, "role": user.role, "api_token": token},
            args.json,
        )
        return 0
    if args.command == "stats":
        site_id = resolve_site(session=session, ref=args.site).id if args.site else None
        _emit(site_stats(session=session, site_id=site_id), args.json)
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")


def _user_sessions(args: argparse.Namespace, session: Any) -> int:
    """``user sessions`` / ``user logout-all`` (server/users/service.py, server/web/session.py)."""
    user = session.scalar(select(User).where(User.username == args.username))
    if user is None:
        raise NotFound(f"user {args.username!r} does not exist")
    if args.user_command == "logout-all":
        ended = log_out_everywhere(session=session, user=user, actor="cli")
        _out(
            f"ended {ended['sessions']} web session(s) and {ended['api_tokens']} API token(s) "
            f"of {user.username}"
        )
        return 0
    now = utcnow()
    rows = [
        {
            "created_at": row.created_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat(),
            "expires_at": row.expires_at.isoformat(),
            "state": "revoked" if row.revoked_at is not None else "live",
            "client": row.client,
            "user_agent": row.user_agent,
        }
        for row in web_sessions_of(session=session, user_id=user.id, now=now)
    ]
    if args.json:
        _out(json.dumps(rows, sort_keys=True))
    else:
        for r in rows:
            _out(
                "\t".join(
                    r[k] for k in ("state", "created_at", "last_seen_at", "client", "user_agent")
                )
            )
    return 0


def _password_from_stdin() -> str | None:
    """One line of stdin (the password), or None after saying it was empty."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        sys.stderr.write("lintel-server: error: empty password on stdin\n")
        return None
    return password


def _device_credentials(args: argparse.Namespace, session: Any) -> int:
    """``device disable|enable|rotate-token|enrol-code`` (logic in server/devices/)."""
    site_id = resolve_site(session=session, ref=args.site).id if args.site else None
    device = get_device(session=session, ref=args.device, site_id=site_id)
    if args.device_command == "rotate-token":
        token = rotate_device_token(session=session, device=device, actor="cli")
        if args.json:
            _out(json.dumps({"device_id": device.id, "token": token}))
        else:
            _out(f"device {device.id} ({device.name}): new token; the old one no longer works")
            _out(f"token (shown once, store it on the device): {token}")
        return 0
    if args.device_command == "enrol-code":
        code = create_enrolment_code(session=session, device=device, actor="cli")
        if args.json:
            _out(json.dumps({"device_id": device.id, "code": code}))
        else:
            _out(f"device {device.id} ({device.name}): one-time code {code} (15 minutes)")
            _out(f"on the box: lintel-edge enrol --config /etc/lintel/edge.yaml --code {code}")
        return 0
    disabled = args.device_command == "disable"
    set_device_disabled(session=session, device=device, disabled=disabled, actor="cli")
    _out(f"device {device.id} ({device.name}) {'disabled' if disabled else 'enabled'}")
    return 0


def _user_credentials(args: argparse.Namespace, settings: Any, session: Any) -> int:
    """``user disable|enable|set-password|revoke-tokens`` (server/users/service.py)."""
    user = get_user_by_name(session=session, username=args.username)
    if args.user_command == "set-password":
        password = _password_from_stdin()
        if password is None:
            return 1
        ended = set_password(
            session=session,
            user=user,
            password=password,
            actor="cli",
            min_length=settings.min_password_length,
        )
        _out(f"password of {user.username} changed; ended {ended} web session(s)")
        return 0
    if args.user_command == "revoke-tokens":
        count = revoke_api_tokens(session=session, user=user, actor="cli")
        _out(f"deleted {count} API token(s) of {user.username}")
        return 0
    disabled = args.user_command == "disable"
    revoked = set_disabled(session=session, user=user, disabled=disabled, actor="cli")
    if disabled:
        _out(
            f"user {user.username} disabled; ended {revoked['sessions']} web session(s) and "
            f"{revoked['api_tokens']} API token(s)"
        )
    else:
        _out(f"user {user.username} enabled")
    return 0


def _run(args: argparse.Namespace, settings: Any) -> int:
    level = logging.DEBUG if args.verbose >= 2 else getattr(logging, args.log_level.upper())
    logging.getLogger().setLevel(level)  # Lintel's own loggers, like uvicorn's
    # Migrate once here, not in every worker.
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    engine.dispose()
    os.environ["LINTEL_MIGRATE_ON_START"] = "false"
    if args.workers > 1:
        # One /metrics for all workers (prometheus-client's multiprocess mode): each
        # worker writes its samples under this folder, any worker's scrape sums them.
        os.environ[MULTIPROC_ENV] = str(fresh_multiproc_dir(settings.data_dir))
    if args.limit_concurrency < 1:
        sys.stderr.write("lintel-server: error: --limit-concurrency must be at least 1\n")
        return 2
    uvicorn.run(
        "server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="debug" if args.verbose >= 2 else args.log_level,
        access_log=not args.no_access_log,
        # Uvicorn believes X-Forwarded-For from 127.0.0.1 by default (or from
        # $FORWARDED_ALLOW_IPS): any process on this host could then pick its own
        # address for the login limits and the audit log. Trust is opt-in.
        proxy_headers=args.forwarded_allow_ips is not None,
        forwarded_allow_ips=args.forwarded_allow_ips or "",
        limit_concurrency=args.limit_concurrency,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
