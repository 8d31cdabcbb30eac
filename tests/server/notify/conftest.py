"""Real local receivers for the notification tests: an HTTP server and an SMTP server.

Both bind 127.0.0.1 only. The HTTP receiver checks what the real services
check: the webhook signature and replay window, DingTalk's timestamp/sign
query, and the DingTalk/WeCom markdown shapes; it records every request.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine

from server.db import make_session_factory

SECRET = "whsec-test-" + "k" * 24
REPLAY_WINDOW_S = 300


@dataclass
class Received:
    """One request the receiver accepted (or refused), as it saw it."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    verdict: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP server; ``mode`` decides how it answers (changeable while running)."""

    port: int
    secret: str = SECRET
    mode: str = "webhook"  # webhook | dingtalk | wecom | fail500
    requests: list[Received] = field(default_factory=list)
    stall: threading.Event | None = None  # set: answer; unset: hold the request
    arrived: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.verdict == "ok"]

    def check(self, r: Received) -> str:
        """What the real service would say about the request: "ok" or why not."""
        if self.mode == "fail500":
            return "fail500"
        if self.mode == "webhook":
            ts = r.headers.get("x-lintel-timestamp", "")
            if not ts.isdigit() or abs(time.time() - int(ts)) > REPLAY_WINDOW_S:
                return "stale or missing timestamp"
            mac = hmac.new(self.secret.encode(), ts.encode() + b"." + r.body, hashlib.sha256)
            if not hmac.compare_digest(
                "sha256=" + mac.hexdigest(), r.headers.get("x-lintel-signature", "")
            ):
                return "bad signature"
            if r.headers.get("x-lintel-event-id") != r.json()["id"]:
                return "event id header differs from body"
            return "ok"
        doc = r.json()
        if self.mode == "dingtalk":
            ts = r.query.get("timestamp", [""])[0]
            if r.query.get("access_token") != ["tok123"]:
                return "no access_token"
            if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3600_000:
                return "timestamp outside an hour"
            want = base64.b64encode(
                hmac.new(
                    self.secret.encode(), f"{ts}\n{self.secret}".encode(), hashlib.sha256
                ).digest()
            ).decode()
            if r.query.get("sign") != [want]:  # parse_qs has url-decoded it
                return "bad sign"
            md = doc.get("markdown", {})
            if doc.get("msgtype") != "markdown" or not md.get("title") or not md.get("text"):
                return "not a markdown message"
            return "ok"
        if self.mode == "wecom":
            if r.query.get("key") != ["wk-1"]:
                return "no key"
            if doc.get("msgtype") != "markdown" or not doc.get("markdown", {}).get("content"):
                return "not a markdown message"
            return "ok"
        return "unknown mode"


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read the receiver's records, not its access log."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            parts = urllib.parse.urlsplit(self.path)
            got = Received(
                path=parts.path,
                query=urllib.parse.parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                verdict="",
            )
            got.verdict = rx.check(got)
            rx.requests.append(got)
            rx.arrived.set()
            if rx.stall is not None:
                rx.stall.wait(30)  # bounded: the test releases it or gives up
            if got.verdict == "fail500":
                status, answer = 500, b'{"error": "receiver broken"}'
            elif rx.mode in ("dingtalk", "wecom"):
                ok = got.verdict == "ok"
                status = 200  # both robots answer 200 and put the verdict in errcode
                answer = json.dumps(
                    {"errcode": 0 if ok else 310000, "errmsg": got.verdict}
                ).encode()
            else:
                status = 200 if got.verdict == "ok" else 401
                answer = json.dumps({"verdict": got.verdict}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(rx: Receiver) -> Receiver:
    """Serve ``rx`` on its port in a thread (the port may have been refused before)."""
    ThreadingHTTPServer.allow_reuse_address = True
    rx.server = ThreadingHTTPServer(("127.0.0.1", rx.port), _handler(rx))
    rx.server.daemon_threads = True
    threading.Thread(
        target=rx.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return rx


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = start(Receiver(port=free_port()))
    yield rx
    if rx.stall is not None:
        rx.stall.set()
    assert rx.server is not None
    rx.server.shutdown()
    rx.server.server_close()


@pytest.fixture
def factory(engine: Engine) -> Callable[..., Any]:
    return make_session_factory(engine)


# -- SMTP ------------------------------------------------------------------------------------
@dataclass
class Mailbox:
    port: int
    cert_file: Path
    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    tls_seen: list[bool] = field(default_factory=list)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made here with ``cryptography`` (no files shipped)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "smtp.crt", tmp / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[Mailbox]:
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    box = Mailbox(port=free_port(), cert_file=cert_file)

    class Handler:
        async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
            box.tls_seen.append(session.ssl is not None)
            raw = envelope.original_content or b""
            msg = message_from_bytes(raw, policy=policy.default)
            assert isinstance(msg, EmailMessage)
            box.messages.append((envelope, msg))
            return "250 OK queued"

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        ready_timeout=10,
    )
    controller.start()
    yield box
    controller.stop()
