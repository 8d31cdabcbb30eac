"""The daemon's *gallery sync* thread and what it owns: the synced gallery and its disk cache.

Asks for the site's gallery with its ETag (304 when unchanged), keeps the last
one on disk so a reboot without network still matches residents, and replaces
the local copy whole, so an occupant deleted on the server leaves no template
on the box. A heartbeat ack announcing a newer gallery version wakes it at once
(:attr:`GallerySync.wakeup`). Matching is over the enrolled and the adaptive
templates (:mod:`edge.adaptive`); a synced gallery that drops an occupant drops
theirs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.adaptive import AdaptiveGallery
from edge.client import ClientError, GalleryModelMismatch, LintelClient
from edge.face.errors import LintelEdgeError
from edge.files import atomic_write
from edge.gallery import Gallery, Match, Template
from edge.wire import Gallery as WireGallery
from edge.wire import decode_embedding

log = logging.getLogger(__name__)


class GalleryCache:
    """The last gallery the server sent, on disk (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> WireGallery | None:
        """The cached gallery, or None when there is none or it is unreadable."""
        try:
            return WireGallery.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("cached gallery %s is unreadable; ignoring it", self.path)
            return None

    def save(self, gallery: WireGallery) -> None:
        """Replace the cached copy whole: an occupant deleted on the server leaves
        no template behind on the box."""
        atomic_write(self.path, gallery.model_dump_json().encode())


def to_local_gallery(wire: WireGallery, *, model_id: str, threshold: float) -> Gallery:
    """A server gallery as a matcher; identities are occupant ids as strings."""
    try:
        templates = [
            Template(
                identity=str(t.occupant_id),
                embedding=decode_embedding(t.embedding_b64),
                model_id=t.model_id or wire.model_id,
            )
            for t in wire.templates
        ]
    except ValueError as exc:
        raise LintelEdgeError(
            f"gallery version {wire.version} holds a bad template: {exc}"
        ) from exc
    return Gallery.from_templates(templates, model_id=model_id, threshold=threshold)


class GallerySync:
    """The synced gallery, its version and ETag, the cache, and the sync thread's loop.

    It is also the pipelines' gallery (:meth:`match`): pipelines live as long as
    a stream, and matching through this object at each track means a synced
    gallery (or a deletion) takes effect on the next track.
    """

    def __init__(
        self,
        *,
        cache: GalleryCache,
        adaptive: AdaptiveGallery,
        client: LintelClient | None,
        model_id: str,
        threshold: float,
    ) -> None:
        self.cache = cache
        self.adaptive = adaptive
        self.client = client
        self.model_id = model_id
        self.threshold = threshold
        self.gallery: Gallery | None = None
        """The synced (enrolled) gallery; :attr:`adaptive` matches it plus local templates."""
        self.version: int | None = None
        self.etag: str | None = None
        self.wakeup = threading.Event()
        """Set to sync now (a heartbeat ack names a newer version) or to stop waiting."""

    def load_cached(self) -> None:
        """Offline start: residents keep matching on the last gallery we had."""
        cached = self.cache.load()
        if cached is not None:
            self.install(cached, source="cache")

    def match(self, embeddings: npt.NDArray[np.float32]) -> Sequence[Match]:
        """Enrolled + adaptive templates (without a gallery: every track unknown)."""
        return self.adaptive.match(embeddings)

    def install(self, wire: WireGallery, *, source: str) -> bool:
        """Make ``wire`` the matcher; False (the current one kept) when it is unusable."""
        try:
            gallery = to_local_gallery(wire, model_id=self.model_id, threshold=self.threshold)
        except LintelEdgeError as exc:
            log.error("gallery version %s (%s) refused: %s", wire.version, source, exc)
            return False
        self.gallery = gallery  # one reference swap: readers see the old or the new
        # Deleted occupants' adaptive templates go with them (on disk too).
        self.adaptive.set_base(gallery)
        self.version = wire.version
        self.etag = wire.etag
        log.info(
            "gallery version %d from %s: %d templates", wire.version, source, len(wire.templates)
        )
        return True

    def sync_once(self) -> bool:
        """Ask the server for a newer gallery; True when one was installed."""
        if self.client is None:
            return False
        try:
            wire = self.client.fetch_gallery(self.etag)
        except GalleryModelMismatch as exc:
            # Not a network blip: every unknown sighting will be refused too.
            log.error("gallery refused: %s", exc)
            return False
        except ClientError as exc:
            log.warning("gallery sync failed (keeping the current one): %s", exc)
            return False
        if wire is None:
            log.debug("gallery unchanged (304)")
            return False
        if not self.install(wire, source="server"):
            return False
        # Saved only once usable, so the cache never holds a gallery we refused.
        self.cache.save(wire)
        return True

    def run(self, stop_event: threading.Event, interval_s: float) -> None:
        """The gallery-sync thread: every ``interval_s`` or when woken, until stopped."""
        while not stop_event.is_set():
            self.wakeup.wait(interval_s)
            self.wakeup.clear()
            if stop_event.is_set():
                break
            try:
                self.sync_once()
            except Exception:
                log.exception("gallery sync: unexpected error (keeping the current gallery)")
