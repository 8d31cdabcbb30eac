"""One sender per channel kind: webhook, DingTalk robot, WeCom robot, e-mail (SMTP + STARTTLS).

Each takes the channel's settings and a rendered message and returns a
:class:`Answer` (what the other side said); it raises nothing for a refusal
or a network error, so the sender records every attempt the same way.

Webhook signature (documented in docs/operator-guide.md): ``X-Lintel-Timestamp``
is the Unix time in seconds, ``X-Lintel-Signature`` is ``sha256=`` + hex
HMAC-SHA256 over ``"<timestamp>.<raw body>"`` with the channel's secret.
Receivers should refuse a timestamp more than :data:`REPLAY_WINDOW_S` from
their clock and deduplicate on ``X-Lintel-Event-Id``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from html import escape
from typing import Any

import httpx

from server.notify.messages import Message

KINDS = ("webhook", "dingtalk", "wecom", "email")

REPLAY_WINDOW_S = 300
"""How far a webhook receiver should accept ``X-Lintel-Timestamp`` from its clock (5 min:
covers clock skew and our own retries' queueing, each retry is signed afresh)."""

HTTP_TIMEOUT_S = 10.0
"""Connect + read timeout of one HTTP send; the sender's lease must be longer."""

SMTP_TIMEOUT_S = 20.0
"""Socket timeout of one SMTP conversation."""

ANSWER_CHARS = 500
"""The most of a channel's answer kept per attempt (it is shown to admins, not parsed)."""


@dataclass(frozen=True)
class Outgoing:
    """One message to send: the event's id and kind, its rendered text and JSON data."""

    event_id: str
    kind: str
    site: str
    created_at: str
    data: dict[str, Any]
    message: Message
    thumbnail_jpeg: bytes | None = None


@dataclass(frozen=True)
class Answer:
    """What the channel said: ``ok``, the HTTP/SMTP status when there was one, and its text."""

    ok: bool
    status_code: int | None
    text: str


def _clip(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + "…"


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Lintel-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_dingtalk(secret: str, timestamp_ms: str) -> str:
    """DingTalk's ``sign``: base64 HMAC-SHA256 of ``timestamp + "\\n" + secret``, url-encoded."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return urllib.parse.quote_plus(base64.b64encode(mac.digest()))


def webhook_body(out: Outgoing) -> dict[str, Any]:
    """The webhook's JSON document (stable field names; see docs/operator-guide.md)."""
    body: dict[str, Any] = {
        "id": out.event_id,
        "kind": out.kind,
        "site": out.site,
        "created_at": out.created_at,
        "title": out.message.title,
        "text": out.message.text,
        "link": out.message.link or None,
        "data": out.data,
    }
    if out.thumbnail_jpeg is not None:
        body["thumbnail_jpeg_base64"] = base64.b64encode(out.thumbnail_jpeg).decode()
    return body


def _post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> Answer:
    try:
        resp = client.post(url, content=body, headers=headers, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Answer(ok=False, status_code=None, text=_clip(f"{type(exc).__name__}: {exc}"))
    return Answer(
        ok=200 <= resp.status_code < 300, status_code=resp.status_code, text=_clip(resp.text)
    )


def _robot_answer(answer: Answer) -> Answer:
    """DingTalk and WeCom answer 200 with ``{"errcode": N}``; anything but 0 is a refusal."""
    if not answer.ok:
        return answer
    try:
        errcode = json.loads(answer.text).get("errcode")
    except (ValueError, AttributeError):
        return Answer(
            ok=False, status_code=answer.status_code, text="not a robot answer: " + answer.text
        )
    return Answer(ok=errcode == 0, status_code=answer.status_code, text=answer.text)


def send_webhook(client: httpx.Client, *, url: str, secret: str | None, out: Outgoing) -> Answer:
    """POST the JSON body, signed when the channel has a secret."""
    body = json.dumps(webhook_body(out), ensure_ascii=False, sort_keys=True).encode()
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Lintel-Event-Id": out.event_id,
        "Idempotency-Key": out.event_id,
        "X-Lintel-Timestamp": ts,
    }
    if secret:
        headers["X-Lintel-Signature"] = sign_webhook(secret, ts, body)
    return _post(client, url, body, headers)


def send_dingtalk(client: httpx.Client, *, url: str, secret: str | None, out: Outgoing) -> Answer:
    """A markdown message to a DingTalk custom robot (``...robot/send?access_token=...``)."""
    if secret:
        ts = str(round(time.time() * 1000))
        sep = "&" if urllib.parse.urlsplit(url).query else "?"
        url = f"{url}{sep}timestamp={ts}&sign={sign_dingtalk(secret, ts)}"
    doc = {
        "msgtype": "markdown",
        "markdown": {"title": out.message.title, "text": out.message.markdown()},
    }
    body = json.dumps(doc, ensure_ascii=False).encode()
    return _robot_answer(
        _post(client, url, body, {"Content-Type": "application/json; charset=utf-8"})
    )


def send_wecom(client: httpx.Client, *, url: str, secret: str | None, out: Outgoing) -> Answer:
    """A markdown message to a WeCom group robot (``...webhook/send?key=...``; no signature)."""
    doc = {"msgtype": "markdown", "markdown": {"content": out.message.markdown()}}
    body = json.dumps(doc, ensure_ascii=False).encode()
    return _robot_answer(
        _post(client, url, body, {"Content-Type": "application/json; charset=utf-8"})
    )


def email_message(*, sender: str, to: list[str], out: Outgoing) -> EmailMessage:
    """A plain text + HTML message (with the thumbnail inline when the channel opted in)."""
    msg = EmailMessage()
    msg["Subject"] = out.message.title
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = make_msgid(idstring=out.event_id.replace("-", ""))
    msg["X-Lintel-Event-Id"] = out.event_id
    msg.set_content(out.message.plain())
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in out.message.text.split("\n\n"))
    link = (
        f'<p><a href="{escape(out.message.link)}">{escape(out.message.link)}</a></p>'
        if out.message.link
        else ""
    )
    image = '<p><img src="cid:thumb" alt=""></p>' if out.thumbnail_jpeg else ""
    msg.add_alternative(
        f"<html><body><h3>{escape(out.message.title)}</h3>{paragraphs}{link}{image}</body></html>",
        subtype="html",
    )
    if out.thumbnail_jpeg:
        html_part = msg.get_body(preferencelist=("html",))
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(out.thumbnail_jpeg, maintype="image", subtype="jpeg", cid="<thumb>")
    return msg


def send_email(*, url: str, secret: str | None, options: dict[str, Any], out: Outgoing) -> Answer:
    """Send over SMTP ``url`` (``smtp://host:port``) with STARTTLS; login when a user is set."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 587
    context = ssl.create_default_context(cafile=options.get("ca_file"))
    msg = email_message(sender=options["from"], to=list(options["to"]), out=out)
    try:
        with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S) as smtp:
            smtp.starttls(context=context)
            if options.get("username"):
                smtp.login(options["username"], secret or "")
            refused = smtp.send_message(msg)
            code, _text = smtp.noop()
    except (smtplib.SMTPException, OSError) as exc:
        code_attr = getattr(exc, "smtp_code", None)
        return Answer(ok=False, status_code=code_attr, text=_clip(f"{type(exc).__name__}: {exc}"))
    if refused:
        return Answer(ok=False, status_code=None, text=_clip(f"recipients refused: {refused}"))
    return Answer(ok=True, status_code=code, text=_clip(f"accepted for {', '.join(options['to'])}"))


def send(
    client: httpx.Client,
    *,
    kind: str,
    url: str,
    secret: str | None,
    options: dict[str, Any],
    out: Outgoing,
) -> Answer:
    """Send ``out`` over a channel of ``kind``."""
    if kind == "webhook":
        return send_webhook(client, url=url, secret=secret, out=out)
    if kind == "dingtalk":
        return send_dingtalk(client, url=url, secret=secret, out=out)
    if kind == "wecom":
        return send_wecom(client, url=url, secret=secret, out=out)
    if kind == "email":
        return send_email(url=url, secret=secret, options=options, out=out)
    return Answer(ok=False, status_code=None, text=f"unknown channel kind {kind!r}")
