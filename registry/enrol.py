"""Enrolment backends: the face engine in this process, or a pool of worker processes.

A registry of 10,000 photos is CPU-bound on the face engine; on a server with
more cores, several processes (each with its own ONNX Runtime sessions) scale
almost linearly where more intra-op threads do not. Both backends take a
*stream* of jobs and keep only a bounded window of photos in memory.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from edge.face.errors import EnrolmentError, LintelEdgeError
from edge.face.models import ModelConfig, resolve_pack
from edge.face.reasons import warning_text
from edge.face.types import EnrolledFace
from registry.errors import InputError

log = logging.getLogger(__name__)


class Enroller(Protocol):
    """The face engine as the importer sees it (``edge.face.engine.FaceEngine`` fits)."""

    model_id: str

    def enrol(self, image: bytes, *, name: str | None = None) -> EnrolledFace: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One photo to enrol; ``key`` is the importer's (the row number)."""

    key: int
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Enrolled:
    """What the importer keeps of an enrolled face (picklable across processes)."""

    embedding: np.ndarray
    quality: float
    model_id: str
    chip: bytes | None = None
    """The aligned face as a JPEG (``edge.face.engine.face_chip``), for the server's desk check."""
    warning: str = ""
    """Usable but poor photo: what is poor about it (:func:`edge.face.reasons.warning_text`)."""


Outcome = Enrolled | EnrolmentError


@runtime_checkable
class EnrolBackend(Protocol):
    model_id: str

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        """Enrol every job; yields each job with its face or its EnrolmentError."""
        ...


class InProcessBackend:
    """One engine in this process (the default; best on a 2-core box)."""

    def __init__(self, engine: Enroller) -> None:
        self.engine = engine
        self.model_id = engine.model_id

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        for job in jobs:
            try:
                face = self.engine.enrol(job.data, name=job.name)
            except EnrolmentError as exc:
                yield job, exc
                continue
            yield (
                job,
                Enrolled(
                    face.embedding,
                    face.quality.score,
                    face.model_id,
                    face.chip,
                    warning_text(face.quality),
                ),
            )


def as_backend(obj: Enroller | EnrolBackend) -> EnrolBackend:
    """Wrap a bare engine in :class:`InProcessBackend`."""
    if isinstance(obj, EnrolBackend):
        return obj
    return InProcessBackend(obj)


def load_engine(pack: str, *, threads: int) -> Enroller:
    """The face engine of ``pack`` (ONNX Runtime sessions loaded now)."""
    # Imported here, the one place the registry loads the engine: the server imports
    # this library (registry.importer -> registry.enrol) on a machine that has no
    # face engine installed (no cv2, no onnxruntime: the server extra), and only
    # enrolment on the office PC or the server host's --db mode ever runs this.
    try:
        from edge.face.engine import FaceEngine
    except ModuleNotFoundError as exc:
        # e.g. `lintel-registry import --db --photos` on a server installed lean
        raise InputError(
            f"enrolling photos needs the face engine (no module {exc.name!r}): "
            "pip install 'lintel[engine]', or enrol on the office PC with --server URL"
        ) from None

    return FaceEngine.load(ModelConfig(pack=pack, threads=threads))


# --------------------------------------------------------------- process pool

_worker_engine: Enroller | None = None


def _worker_init(pack: str, threads: int) -> None:
    global _worker_engine
    _worker_engine = load_engine(pack, threads=threads)


def _worker_enrol(data: bytes, name: str) -> tuple[str, object, object, object, str, object]:
    # EnrolmentError does not survive pickling (its __init__ takes two
    # arguments), so outcomes cross the process boundary as plain tuples.
    if _worker_engine is None:
        raise RuntimeError("worker engine not initialised")
    try:
        face = _worker_engine.enrol(data, name=name)
    except EnrolmentError as exc:
        return ("error", exc.reason, str(exc), None, "", None)
    return (
        "ok",
        face.embedding,
        face.quality.score,
        face.model_id,
        warning_text(face.quality),
        face.chip,
    )


def _outcome(result: tuple[str, object, object, object, str, object]) -> Outcome:
    kind, a, b, c, warning, d = result
    if kind == "error":
        return EnrolmentError(str(a), str(b))
    if not isinstance(a, np.ndarray) or not isinstance(b, float) or not isinstance(c, str):
        raise TypeError("malformed result from an enrolment worker")
    if d is not None and not isinstance(d, bytes):
        raise TypeError("malformed face chip from an enrolment worker")
    return Enrolled(a, b, c, d, warning)


class ProcessPoolBackend:
    """``workers`` processes, each with its own engine of ``threads`` intra-op threads."""

    def __init__(self, workers: int, threads: int = 1, pack: str = "buffalo_s") -> None:
        if workers < 2:
            raise ValueError("a process pool needs at least 2 workers; use InProcessBackend")
        try:
            # Resolved here (cheap, no ONNX Runtime) so the site's model can be
            # checked before any worker starts.
            self.model_id = resolve_pack(pack).model_id
        except LintelEdgeError as exc:
            raise InputError(f"cannot load the face engine: {exc}") from None
        self.workers = workers
        self.threads = threads
        self.pack = pack

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Outcome]]:
        # spawn, not fork: a forked child would inherit whatever threads (ONNX
        # Runtime, tqdm's monitor) the parent happens to run.
        context = multiprocessing.get_context("spawn")
        window: deque[tuple[Job, Future[tuple[str, object, object, object, str, object]]]] = deque()
        limit = 4 * self.workers  # bounded: photos are not all held in memory
        try:
            with ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_worker_init,
                initargs=(self.pack, self.threads),
            ) as pool:
                for job in jobs:
                    window.append((job, pool.submit(_worker_enrol, job.data, job.name)))
                    if len(window) >= limit:
                        done, future = window.popleft()
                        yield done, _outcome(future.result())
                while window:
                    done, future = window.popleft()
                    yield done, _outcome(future.result())
        except BrokenProcessPool as exc:
            raise InputError(f"an enrolment worker died (model load or memory?): {exc}") from None
