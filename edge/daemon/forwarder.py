"""The daemon's *forwarder* thread and what it owns: the upload state of the outbox.

Drains the outbox to the server in batches; a retryable failure (server
unreachable, 5xx) backs off, doubling up to a cap, and keeps everything
queued; a sighting the server refuses as invalid goes to the outbox's dead
table (isolated by halving the batch, so one bad sighting does not bury its
neighbours). A refused token keeps everything queued too; the wait that
follows ends early when :class:`~edge.daemon.token_watch.TokenWatch` swaps in
a new token.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from edge.client import AuthRefused, ClientError, LintelClient, Rejected
from edge.daemon.config import ServerConfig
from edge.daemon.token_watch import TokenWatch
from edge.outbox import Outbox

log = logging.getLogger(__name__)


class Forwarder:
    """Uploads the outbox; its batch size adapts (halved on a refused batch, then regrown)."""

    def __init__(
        self, outbox: Outbox, client: LintelClient | None, server: ServerConfig | None
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.server = server
        self.batch_limit = server.batch_size if server is not None else 1
        self.last_upload_at: str | None = None
        self.last_upload_error: str | None = None
        # Set by the composition root: re-reads the token after a refusal.
        self.tokens: TokenWatch | None = None
        # Set when a new token arrives (or on stop): ends the wait after a refusal.
        self.wakeup = threading.Event()

    def forward_once(self) -> int:
        """Upload one batch from the outbox; returns how many entries it settled.

        Raises :class:`~edge.client.ClientError` when nothing can be settled now
        (server unreachable, token refused, an unexpected 4xx): they stay queued.
        """
        assert self.client is not None and self.server is not None
        entries = self.outbox.peek(self.batch_limit)
        if not entries:
            return 0
        try:
            result = self.client.upload_sightings([e.sighting for e in entries])
        except Rejected as exc:
            if exc.status_code not in (400, 413, 422):
                raise  # a proxy's 404 or the like: not the sightings' fault, keep them
            if len(entries) > 1:
                # Too big, or one bad item sinks the envelope: halve until the
                # culprit is alone, so only it goes to the dead table.
                self.batch_limit = max(1, len(entries) // 2)
                log.warning(
                    "server refused a batch of %d (%s); retrying with %d",
                    len(entries),
                    exc,
                    self.batch_limit,
                )
                return 0
            self.outbox.bury({entries[0].id: f"{exc.status_code}: {exc.detail}"})
            log.error("sighting %s refused by the server: %s", entries[0].id, exc)
            return 1
        except ClientError:
            self.outbox.fail([e.id for e in entries])
            raise
        rejected = {str(err.id): err.error for err in result.errors if err.id is not None}
        for err in result.errors:
            if err.id is None and 0 <= err.index < len(entries):
                rejected[entries[err.index].id] = err.error
        if rejected:
            log.error("server refused %d sighting(s): %s", len(rejected), rejected)
        self.outbox.bury(rejected)
        self.outbox.ack([e.id for e in entries if e.id not in rejected])
        if result.duplicates:
            # Expected after a crash between upload and ack: the server had them.
            log.info("%d sighting(s) were already on the server", result.duplicates)
        self.batch_limit = min(self.server.batch_size, self.batch_limit * 2)
        self.last_upload_at = datetime.now(UTC).isoformat()
        self.last_upload_error = None
        return len(entries)

    def drain(self, deadline: float) -> bool:
        """Upload until the outbox is empty (True) or ``deadline`` / a failure (False)."""
        if self.client is None:
            return self.outbox.stats().depth == 0
        while time.monotonic() < deadline:
            if self.outbox.stats().depth == 0:
                return True
            try:
                self.forward_once()
            except ClientError as exc:
                log.warning("upload stopped: %s", exc)
                return False
        return self.outbox.stats().depth == 0

    def run(self, stop_event: threading.Event) -> None:
        """The forwarder thread: upload, back off on failure, until stopped."""
        assert self.server is not None
        server = self.server
        delay = 0.0
        while not stop_event.is_set():
            try:
                settled = self.forward_once()
                delay = 0.0
                if settled == 0 and self.outbox.stats().depth == 0:
                    stop_event.wait(server.upload_interval_s)
                elif settled == 0:
                    stop_event.wait(0.05)  # a batch was split; go again
                continue
            except AuthRefused as exc:
                self.last_upload_error = str(exc)
                self.wakeup.clear()  # before looking: a swap from now on still wakes us
                if self.tokens is not None and self.tokens.recovered(exc):
                    log.info("upload refused with the old token; retrying with the new one")
                    continue
                depth = self.outbox.stats().depth
                log.info(
                    "upload refused (%s); the outbox holds %d, waiting up to %.0f s "
                    "for a new token",
                    exc,
                    depth,
                    server.retry_max_s,
                )
                # Retrying the same token is pointless; a new one wakes this wait.
                self.wakeup.wait(server.retry_max_s)
                delay = 0.0
                continue
            except ClientError as exc:
                self.last_upload_error = str(exc)
                delay = min(server.retry_max_s, max(1.0, delay * 2))
                depth = self.outbox.stats().depth
                log.warning(
                    "upload failed (%s); the outbox holds %d, retry in %.0f s", exc, depth, delay
                )
            except Exception as exc:
                self.last_upload_error = repr(exc)
                delay = min(server.retry_max_s, max(1.0, delay * 2))
                log.exception("forwarder: unexpected error; retry in %.0f s", delay)
            stop_event.wait(delay)
