"""``lintel-server notify ...``: add, list, disable/enable, remove and test channels.

Secrets (webhook/DingTalk signing secrets, SMTP passwords) come from stdin
(``--secret-stdin``) or an environment variable (``--secret-env NAME``), never
from the command line, and are never printed. Every change is audited.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy.orm import Session

from server.audit.service import record
from server.db import utcnow
from server.notify.channels import KINDS, Outgoing, send
from server.notify.errors import ChannelInvalid
from server.notify.messages import render
from server.notify.models import NotifyChannel
from server.notify.sender import SenderConfig
from server.notify.service import (
    EVENT_KINDS,
    add_channel,
    channel_secret,
    get_channel,
    list_channels,
    remove_channel,
    set_enabled,
    shown_url,
)
from server.sites.service import resolve_site

COMMANDS = frozenset({"notify"})


def add_commands(sub: Any) -> None:
    """Add the ``notify`` group to the top-level parser's subcommands."""
    p = sub.add_parser("notify", help="notification channels (webhook, DingTalk, WeCom, e-mail)")
    nsub = p.add_subparsers(dest="notify_command", required=True)
    q = nsub.add_parser("add", help="add a channel to a site")
    q.add_argument("--site", required=True, help="site name or id")
    q.add_argument("--kind", required=True, choices=KINDS)
    q.add_argument("--name", default=None, help="unique in the site (default: the kind)")
    q.add_argument(
        "--url",
        required=True,
        help="webhook URL; DingTalk .../robot/send?access_token=...; "
        "WeCom .../webhook/send?key=...; e-mail smtp://host:587",
    )
    q.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    q.add_argument("--secret-env", default=None, metavar="NAME", help="read the secret from $NAME")
    q.add_argument(
        "--events",
        default=None,
        help=f"comma-separated, some of {','.join(EVENT_KINDS)} (default: all but case.unassigned)",
    )
    q.add_argument("--language", default="en", choices=["en", "zh-CN"])
    q.add_argument("--quiet", default=None, metavar="HH:MM-HH:MM", help="site-local quiet hours")
    q.add_argument(
        "--thumbnail", action="store_true", help="attach a face thumbnail (webhook/e-mail)"
    )
    q.add_argument(
        "--digest", action="store_true", help="one message a day instead of one per event"
    )
    q.add_argument("--digest-at", default="08:00", metavar="HH:MM", help="site-local digest time")
    q.add_argument("--link-base", default=None, help="the web UI's address for case links")
    q.add_argument("--from", dest="mail_from", default=None, help="e-mail sender address")
    q.add_argument("--to", action="append", default=[], help="e-mail recipient (repeatable)")
    q.add_argument("--smtp-user", default=None, help="SMTP login (password as the secret)")
    q.add_argument("--ca-file", default=None, help="CA bundle to verify the SMTP server with")
    q.add_argument("--json", action="store_true")
    q = nsub.add_parser("list", help="list channels and their state (no secrets)")
    q.add_argument("--site", default=None)
    q.add_argument("--json", action="store_true")
    for name, text in (
        ("disable", "stop sending to a channel (its deliveries wait)"),
        ("enable", "send to a channel again (clears 'failing')"),
        ("remove", "delete a channel and its pending deliveries"),
    ):
        q = nsub.add_parser(name, help=text)
        q.add_argument("channel", help="channel id or name")
        q.add_argument("--site", required=True)
    q = nsub.add_parser("test", help="send a test message now; non-zero exit when one fails")
    q.add_argument("--site", required=True)
    q.add_argument("--channel", default=None, help="only this channel (id or name)")


def add_worker_args(p: argparse.ArgumentParser) -> None:
    """The worker's notification options."""
    d = SenderConfig()
    p.add_argument("--no-notify", action="store_true", help="do not run the notification sender")
    p.add_argument(
        "--notify-lease-s", type=float, default=d.lease_s, help="lease of a claimed delivery"
    )
    p.add_argument(
        "--notify-base-delay-s", type=float, default=d.base_delay_s, help="first retry backoff"
    )
    p.add_argument(
        "--notify-offline-min", type=float, default=d.offline_after_min, help="minutes to offline"
    )
    p.add_argument(
        "--notify-unassigned-h", type=float, default=d.unassigned_after_h, help="hours to escalate"
    )


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"lintel-server: {text}\n")


def channel_row(c: NotifyChannel) -> dict[str, Any]:
    """What ``notify list`` and the admin page show of a channel (never the secret)."""
    return {
        "id": c.id,
        "site_id": c.site_id,
        "name": c.name,
        "kind": c.kind,
        "url": shown_url(c.url),
        "events": list(c.events),
        "language": c.language,
        "quiet": f"{c.quiet_start}-{c.quiet_end}" if c.quiet_start else None,
        "digest": c.digest_at if c.digest else None,
        "thumbnail": c.thumbnail,
        "enabled": c.enabled,
        "failing": c.failing,
        "has_secret": c.secret_sealed is not None,
        "last_error": c.last_error,
        "last_success_at": c.last_success_at.isoformat() if c.last_success_at else None,
    }


def _secret(args: argparse.Namespace) -> str | None:
    if args.secret_stdin and args.secret_env:
        raise ChannelInvalid("give the secret either on stdin or in an environment variable")
    if args.secret_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise ChannelInvalid("--secret-stdin given but stdin was empty")
        return value
    if args.secret_env:
        value = os.environ.get(args.secret_env, "")
        if not value:
            raise ChannelInvalid(f"--secret-env {args.secret_env}: that variable is empty or unset")
        return value
    return None


def run_command(args: argparse.Namespace, settings: Any, session: Session) -> int:
    """Run one ``notify`` command in the CLI's transaction."""
    cmd = args.notify_command
    if cmd == "list":
        scope = {resolve_site(session=session, ref=args.site).id} if args.site else None
        rows = [channel_row(c) for c in list_channels(session=session, site_ids=scope)]
        if args.json:
            _out(json.dumps(rows, sort_keys=True))
        for r in [] if args.json else rows:
            state = "failing" if r["failing"] else ("enabled" if r["enabled"] else "disabled")
            _out(
                f"{r['id']}\tsite {r['site_id']}\t{r['name']}\t{r['kind']}\t{r['url']}\t{state}\t"
                f"{','.join(r['events'])}\t{r['last_error'] or ''}"
            )
        return 0
    site = resolve_site(session=session, ref=args.site)
    if cmd == "add":
        return _add(args, session, site.id)
    if cmd == "test":
        return _test(args, session, site.id, site.name)
    channel = get_channel(session=session, site_id=site.id, ref=args.channel)
    if cmd == "remove":
        detail = {"name": channel.name, "kind": channel.kind}
        channel_id = channel.id
        remove_channel(session=session, channel=channel)
    else:
        set_enabled(session=session, channel=channel, enabled=cmd == "enable")
        detail = {"name": channel.name}
        channel_id = channel.id
    record(
        session=session,
        actor="cli",
        action=f"notify.{cmd}",
        object_type="notify_channel",
        object_id=channel_id,
        site_id=site.id,
        detail=detail,
    )
    _out(f"channel {channel_id} ({detail['name']}): {cmd}d")
    return 0


def _add(args: argparse.Namespace, session: Session, site_id: int) -> int:
    quiet_start = quiet_end = None
    if args.quiet:
        quiet_start, _, quiet_end = args.quiet.partition("-")
    options: dict[str, Any] = {}
    if args.kind == "email":
        options = {"from": args.mail_from, "to": args.to}
        if args.smtp_user:
            options["username"] = args.smtp_user
        if args.ca_file:
            options["ca_file"] = args.ca_file
    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    channel = add_channel(
        session=session,
        site_id=site_id,
        name=args.name or args.kind,
        kind=args.kind,
        url=args.url,
        secret=_secret(args),
        events=events,
        language=args.language,
        quiet_start=quiet_start,
        quiet_end=quiet_end or None,
        thumbnail=args.thumbnail,
        digest=args.digest,
        digest_at=args.digest_at,
        link_base=args.link_base,
        options=options,
    )
    row = channel_row(channel)
    record(
        session=session,
        actor="cli",
        action="notify.add",
        object_type="notify_channel",
        object_id=channel.id,
        site_id=site_id,
        detail={k: row[k] for k in ("name", "kind", "url", "events", "language", "thumbnail")},
    )
    if args.json:
        _out(json.dumps(row, sort_keys=True))
    else:
        _out(
            f"channel {channel.id} ({channel.name}, {channel.kind}) added; "
            "the secret is not shown again"
        )
    return 0


def _test(args: argparse.Namespace, session: Session, site_id: int, site_name: str) -> int:
    if args.channel:
        channels = [get_channel(session=session, site_id=site_id, ref=args.channel)]
    else:
        channels = [c for c in list_channels(session=session, site_ids={site_id}) if c.enabled]
    if not channels:
        _err(f"site {site_name!r} has no enabled notification channel (notify add)")
        return 1
    failed = 0
    with httpx.Client(trust_env=False) as client:
        for c in channels:
            out = Outgoing(
                event_id=str(uuid.uuid4()),
                kind="test",
                site=site_name,
                created_at=utcnow().isoformat(),
                data={},
                message=render(
                    kind="test", data={}, site=site_name, language=c.language, link_base=None
                ),
            )
            answer = send(
                client,
                kind=c.kind,
                url=c.url,
                secret=channel_secret(c),
                options=dict(c.options),
                out=out,
            )
            code = answer.status_code if answer.status_code is not None else "no answer"
            if answer.ok:
                _out(f"channel {c.id} ({c.name}, {c.kind}): OK ({code}): {answer.text}")
            else:
                failed += 1
                _err(f"channel {c.id} ({c.name}, {c.kind}) FAILED ({code}): {answer.text}")
            record(
                session=session,
                actor="cli",
                action="notify.test",
                object_type="notify_channel",
                object_id=c.id,
                site_id=site_id,
                detail={"ok": answer.ok, "status": answer.status_code},
            )
    if failed:
        _err(f"{failed} of {len(channels)} channel(s) failed the test")
        return 1
    return 0
