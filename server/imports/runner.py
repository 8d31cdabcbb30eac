"""Runs web imports in a background thread and holds each dry run until it is applied.

One worker thread per server process (enrolment is CPU-bound; two imports at
once would only share the cores), fed by a queue of jobs; the page polls the
job row for progress. Between the dry run and the apply the read rows and the
enrolled faces (embeddings and face chips: biometric) stay in this process's
memory only, for :data:`~server.imports.service.HOLD` at most, and are dropped
once applied, discarded or expired. The uploaded files themselves are dropped
when the dry run ends. A restart loses what was held: the job then says
"upload again". Several server processes behind a proxy each hold their own
jobs: the apply must reach the process that ran the dry run (sticky sessions),
else it is refused the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import RegistryError
from registry.importer import ImportResult
from server.db import session_scope, utcnow
from server.errors import LintelError
from server.imports import face, service
from server.imports.enums import ImportStatus
from server.imports.models import ImportJob
from server.sites.models import Site

log = logging.getLogger(__name__)

MAX_HELD = 8
"""Dry runs one process holds at once; a ninth drops the oldest (its job then says to
upload again). A 10,000-photo dry run holds ~70 MB (a 2 KB embedding and a ~5 KB chip
a face), so eight bound the memory at about half a gigabyte."""
PROGRESS_EVERY_S = 0.5
"""How often the dry run writes its progress (a row update; the page polls each second)."""


def engine_available() -> bool:
    """Whether this server can enrol photos."""
    return face.installed()


def _enroller(model_id: str) -> service.EngineFactory | None:
    if not face.installed():
        return None
    return face.engine_factory(model_id)


class ImportRunner:
    """The web imports of one server process."""

    def __init__(self, session_factory: sessionmaker[Session], *, secret: bytes, model_id: str):
        """``model_id``: the model a site without a gallery yet gets (settings)."""
        self.session_factory = session_factory
        self.secret = secret
        self.model_id = model_id
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lintel-import")
        self._held: dict[int, service.Checked] = {}
        self._lock = threading.Lock()

    # -- the dry run ----------------------------------------------------------------------
    def start_check(self, job_id: int, upload: service.Upload) -> Future[None]:
        """Run the dry run of a committed ``checking`` job in the background."""
        return self._pool.submit(self._check, job_id, upload)

    def _check(self, job_id: int, upload: service.Upload) -> None:
        try:
            with session_scope(self.session_factory) as session:
                job = session.get(ImportJob, job_id)
                if job is None:
                    return
                sheet, photos = service.read_upload(upload)
                try:
                    total = service.photos_to_read(sheet, self.secret)
                    self._progress(job_id, 0, total)
                    site_model = select(Site.model_id).where(Site.id == job.site_id)
                    model = session.scalar(site_model) or self.model_id
                    checked = service.dry_run(
                        session=session,
                        job=job,
                        sheet=sheet,
                        photos=photos,
                        files_digest=upload.digest(),
                        secret=self.secret,
                        enroller=_enroller(model) if photos is not None else None,
                        tick=self._ticker(job_id, total),
                    )
                finally:
                    if photos is not None:
                        photos.close()
                # Held before the commit shows the job as checked to the page.
                with self._lock:
                    self._held[job_id] = checked
                    while len(self._held) > MAX_HELD:
                        del self._held[min(self._held, key=lambda k: self._held[k].expires_at)]
        except (RegistryError, LintelError) as exc:
            self._fail(job_id, ImportStatus.FAILED, _words(exc))
        except Exception:
            log.exception("web import %d: the dry run failed", job_id)
            self._fail(job_id, ImportStatus.FAILED, "the dry run failed (see the server log)")

    def _ticker(self, job_id: int, total: int) -> Callable[[], None]:
        done = 0
        last = time.monotonic()

        def tick() -> None:
            nonlocal done, last
            done += 1
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or done == total:
                last = now
                # A retry that enrols every photo again (FacesNeeded) reads them twice.
                self._progress(job_id, min(done, total))

        return tick

    def _progress(self, job_id: int, done: int, total: int | None = None) -> None:
        with session_scope(self.session_factory) as session:
            service.set_progress(session=session, job_id=job_id, done=done, total=total)

    # -- the apply ------------------------------------------------------------------------
    def held(self, job_id: int) -> service.Checked | None:
        """The dry run of a job, if this process holds it and it has not expired."""
        with self._lock:
            self._drop_expired()
            return self._held.get(job_id)

    def start_apply(self, job_id: int) -> Future[ImportResult | None]:
        """Apply a job already claimed (``applying``) in the background."""
        return self._pool.submit(self._apply, job_id)

    def _apply(self, job_id: int) -> ImportResult | None:
        with self._lock:
            checked = self._held.pop(job_id, None)  # applied or refused: dropped either way
        if checked is None:
            self._fail(job_id, ImportStatus.EXPIRED, "the dry run is no longer held; upload again")
            return None
        try:
            with session_scope(self.session_factory) as session:
                job = session.get(ImportJob, job_id)
                if job is None:
                    return None
                return service.apply(session=session, job=job, checked=checked, secret=self.secret)
        except service.RegisterChanged as exc:
            self._fail(job_id, ImportStatus.STALE, exc.detail)
        except (RegistryError, LintelError) as exc:
            self._fail(job_id, ImportStatus.FAILED, _words(exc))
        except Exception:
            log.exception("web import %d: the apply failed", job_id)
            self._fail(job_id, ImportStatus.FAILED, "the import failed; nothing was written")
        return None

    def drop(self, job_id: int) -> None:
        """Forget a job's dry run (discarded)."""
        with self._lock:
            self._held.pop(job_id, None)

    def _drop_expired(self) -> None:
        now = utcnow()
        for job_id in [k for k, v in self._held.items() if v.expires_at <= now]:
            del self._held[job_id]

    def _fail(self, job_id: int, status: ImportStatus, error: str) -> None:
        with session_scope(self.session_factory) as session:
            service.finish_failed(session=session, job_id=job_id, status=status, error=error)

    def close(self) -> None:
        """Wait for the running job; drop every dry run held."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._held.clear()


def _words(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    return str(detail if isinstance(detail, str) else exc)
