"""A webhook receiver for the demo: shows what a manager's system would get from Lintel.

It verifies each request as a real receiver should (``X-Lintel-Signature`` =
``sha256=`` + hex HMAC-SHA256 of ``"<X-Lintel-Timestamp>.<body>"``, the
timestamp within five minutes, each ``X-Lintel-Event-Id`` once) and keeps
what arrived. Standard library only, bound to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLAY_WINDOW_S = 300


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float) -> bool:
    """Whether a Lintel webhook request is authentic and fresh."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > REPLAY_WINDOW_S:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)


class DemoReceiver:
    """Collects verified notifications on ``http://127.0.0.1:<port>/lintel``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/lintel"

    def notify_add_args(self, *, site: str, link_base: str) -> list[str]:
        """``lintel-server`` arguments adding this receiver as a webhook (secret on stdin)."""
        return [
            "notify",
            "add",
            "--site",
            site,
            "--kind",
            "webhook",
            "--name",
            "demo-webhook",
            "--url",
            self.url,
            "--secret-stdin",
            "--link-base",
            link_base,
        ]

    def start(self) -> DemoReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = verify(
                    rx.secret,
                    self.headers.get("X-Lintel-Timestamp", ""),
                    body,
                    self.headers.get("X-Lintel-Signature", ""),
                    now=time.time(),
                )
                with rx._lock:
                    event_id = self.headers.get("X-Lintel-Event-Id", "")
                    if not ok:
                        rx.refused += 1
                    elif event_id not in rx._seen:  # a retry of one we have: answer OK, keep one
                        rx._seen.add(event_id)
                        rx.received.append(json.loads(body))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
