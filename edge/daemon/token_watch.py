"""The daemon's device token: picked up again, without a restart, once the server refuses it.

After a token is rotated or the device disabled in the web, every request of
the box answers 401/403 and its sightings queue. The technician gets a new
code and runs ``lintel-edge enrol``, which rewrites the token file; the
running daemon then needs that token, not a restart. :class:`TokenWatch`
re-reads the token source (the environment variable first, then the token
file, as at start) when a call was refused and, while refused, each time the
main loop writes ``status.json``. Looking is cheap: the file is only read when
its inode, mtime or size changed. A new token is swapped into the one shared
:class:`~edge.client.LintelClient` and wakes the threads that wait, so queued
sightings go out within one status interval instead of after ``retry_max_s``.

It also words the refusal for ``status.json`` and the log: the heartbeat
fails with the same token, so it cannot carry the news.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from enum import StrEnum

from edge.client import AuthRefused, LintelClient
from edge.daemon.config import ConfigError, EdgeConfig

log = logging.getLogger(__name__)

__all__ = ["TokenSource", "TokenWatch"]


class TokenSource(StrEnum):
    """Where the daemon's token comes from (the variable wins, as at start)."""

    ENV = "env"
    FILE = "file"


# What a token source looked like last time: the variable's value, or the file's
# (inode, mtime in ns, size); None for a missing file, a string for an unreadable one.
_Signature = tuple[TokenSource, str | int | None, int, int]


class TokenWatch:
    """Re-reads the device token when the server refuses it; reports the refusal in words."""

    def __init__(
        self,
        config: EdgeConfig,
        client: LintelClient,
        *,
        wakeups: Sequence[threading.Event] = (),
    ) -> None:
        """``wakeups``: set after a swap so the threads waiting out a refusal retry now."""
        assert config.server is not None
        self.config = config
        self.client = client
        self.env_var = config.server.token_env
        self.path = config.token_path()
        self.wakeups = list(wakeups)
        self._lock = threading.Lock()
        self._seen = self._signature()
        self._logged_refusal = False

    @property
    def source(self) -> TokenSource:
        """Which source a token is read from now."""
        return TokenSource.ENV if os.environ.get(self.env_var, "").strip() else TokenSource.FILE

    def _signature(self) -> _Signature:
        value = os.environ.get(self.env_var, "").strip()
        if value:
            return (TokenSource.ENV, value, 0, 0)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (TokenSource.FILE, None, 0, 0)
        except OSError as exc:
            return (TokenSource.FILE, str(exc), 0, 0)
        return (TokenSource.FILE, st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Read the token source again if it changed since the last look and swap the
        client's token when it holds another one; True when swapped."""
        with self._lock:
            signature = self._signature()
            if signature == self._seen:
                return False
            self._seen = signature
            try:
                token = self.config.token()
            except ConfigError as exc:
                # Half-written by hand, or emptied: keep the old token, say why.
                log.warning("the device token changed but cannot be used: %s", exc)
                return False
            if not self.client.set_token(token):
                return False
        log.warning(
            "the device token changed (%s); using the new one from now on",
            f"${self.env_var}" if signature[0] is TokenSource.ENV else self.path,
        )
        for event in self.wakeups:
            event.set()
        return True

    def recovered(self, refused: AuthRefused) -> bool:
        """After ``refused``: True when the client now holds a newer token than the one
        refused (just read, or swapped meanwhile by another thread): retry soon."""
        self.reload()
        return self.client.token_generation != refused.generation

    def tick(self) -> None:
        """Called by the main loop at each status write: while refused, look at the token
        source (so recovery takes at most one status interval); log each change of state
        once, not once per refused request; wake the waiting threads when another request
        (a heartbeat) got through again."""
        refusal = self.client.refused
        if refusal is None:
            if self._logged_refusal:
                self._logged_refusal = False
                log.warning("the server accepts this box's token again; delivering the outbox")
                # Same token accepted again (the device was enabled), seen by a
                # heartbeat: the forwarder need not wait out its back-off.
                for event in self.wakeups:
                    event.set()
            return
        if not self._logged_refusal:
            self._logged_refusal = True
            log.error("%s", self.problem())
        self.reload()

    def problem(self) -> str | None:
        """What a technician reads in ``status.json`` and the log while the token is refused."""
        refusal = self.client.refused
        if refusal is None:
            return None
        since = refusal.since.astimezone().strftime("%Y-%m-%d %H:%M")
        text = (
            f"the server refused this box's token since {since} ({refusal.status_code}: "
            f"{refusal.detail}); sightings stay queued in the outbox. If the device is "
            f"disabled, enable it in the web (Devices -> {self.config.device.name}); "
            f"otherwise get a new code there and run `lintel-edge enrol --config <edge.yaml> "
            "--code XXXX-XXXX` on this box: the running daemon picks the token up, no restart"
        )
        if self.source is TokenSource.ENV:
            text += (
                f". Note: this box reads its token from ${self.env_var}, which wins over "
                f"{self.path}: unset it (or set the new token there and restart)"
            )
        return text

    def status(self) -> dict[str, object]:
        """The token part of ``status.json``."""
        refusal = self.client.refused
        return {
            "token_source": str(self.source),
            "token_refused_since": None if refusal is None else refusal.since.isoformat(),
            "token_refused_status": None if refusal is None else refusal.status_code,
            "problem": self.problem(),
        }
