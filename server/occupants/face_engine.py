"""The face engine on the server, for photos added in the web: loaded once per process.

The only module of ``server/`` that needs the face stack (OpenCV, ONNX Runtime,
the model pack). The web's photo route imports it on the first photo, after
checking ONNX Runtime is installed, so a lean ``[server]`` install runs every
other page and says plainly that photo enrolment needs the engine.

Enrolment is the registry import's, not a second one: the same
:class:`~edge.face.engine.FaceEngine` (loaded by :func:`registry.enrol.load_engine`)
with the same :class:`~edge.face.models.ModelConfig` defaults and quality gates,
behind the import's photo gate
(:func:`registry.photos.check_photo`), run through :class:`registry.enrol.InProcessBackend`
(exactly one usable face, or the engine's reason), and the same ``same_face``
threshold as :class:`registry.importer.ImportOptions`.
"""

from __future__ import annotations

import hashlib
import os
import threading

from edge.face.errors import EnrolmentError, LintelEdgeError
from edge.face.models import BUNDLED_PACK, SFACE_PACK, resolve_pack
from registry.enrol import Enrolled, Enroller, InProcessBackend, Job, load_engine
from registry.errors import PhotoError
from registry.importer import ImportOptions
from registry.photos import check_photo
from server.errors import InvalidInput
from server.occupants.errors import PhotoRefused

PACKS = (BUNDLED_PACK, SFACE_PACK)
"""The packs the server can enrol with, picked by the site's model id."""

SAME_FACE_SIMILARITY = ImportOptions(site="").same_face_similarity
"""The import's ``same_face`` refusal threshold (one photo filed under two people)."""

THREADS = min(2, os.cpu_count() or 1)
"""ONNX Runtime threads: a photo is one request among the server's others (~0.1 s a photo)."""

_engines: dict[str, Enroller] = {}
_lock = threading.Lock()
_enrol_lock = threading.Lock()


def pack_for_model(model_id: str) -> str:
    """The pack whose model a site uses; :class:`InvalidInput` naming what this server has."""
    offered: list[str] = []
    for pack in PACKS:
        try:
            # Cheap: resolves file paths, loads nothing.
            pack_model = resolve_pack(pack).model_id
        except LintelEdgeError:
            continue
        if pack_model == model_id:
            return pack
        offered.append(pack_model)
    raise InvalidInput(
        f"the site's gallery uses model {model_id!r} but this server's face engine offers "
        f"{', '.join(offered) or 'no model'}; a photo enrolled with another model never "
        "matches at the site's doors"
    )


def engine_for_model(model_id: str) -> Enroller:
    """The engine of the site's model, built on first use and kept for the process."""
    pack = pack_for_model(model_id)
    with _lock:
        engine = _engines.get(pack)
        if engine is None:
            try:
                engine = load_engine(pack, threads=THREADS)
            except LintelEdgeError as exc:
                raise InvalidInput(f"cannot load the face engine: {exc}") from None
            _engines[pack] = engine
    return engine


def enrol_photo(data: bytes, *, model_id: str, name: str = "photo") -> tuple[Enrolled, str]:
    """The one usable face of a photo and the photo's SHA-256; :class:`PhotoRefused` if none.

    The photo lives only in this call's memory: what is kept is the embedding,
    the aligned chip and the hash (which tells the same file from a new one).
    """
    if not data:
        raise PhotoRefused("unreadable", "no photo was sent")
    try:
        # The import's gate, before any decoder runs: JPEG/PNG/WebP by content, at most
        # 64 megapixels by the header (a few-KB PNG can declare gigabytes of pixels).
        check_photo(data, name)
    except PhotoError as exc:
        raise PhotoRefused("unreadable", str(exc)) from None
    backend = InProcessBackend(engine_for_model(model_id))
    with _enrol_lock:
        # One photo at a time per process: photos come by hand, seconds apart, and the
        # detector keeps per-size state (insightface caches anchors in a plain dict).
        ((_job, outcome),) = list(backend.run([Job(0, name, data)]))
    if isinstance(outcome, EnrolmentError):
        raise PhotoRefused(outcome.reason, str(outcome))
    return outcome, hashlib.sha256(data).hexdigest()
