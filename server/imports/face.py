"""The face engine of web imports: the one module of server/imports that loads it.

A server may be installed without the face stack (the lean ``.[server]``
extra). This module imports without it (the engine loads only when a dry run
enrols its first photo, through :func:`registry.enrol.load_engine`, as
``lintel-registry import`` does); :func:`installed` tells the runner whether
photos can be enrolled here, and a register with photos is otherwise refused
with :data:`~server.imports.service.ENGINE_MISSING` words (a register without
photos still imports).

The pack is picked from the site's model id by the register pages' own rule
(:func:`server.occupants.face_engine.pack_for_model`), so both doors of the
server enrol with the same model. A dry run gets an engine of its own, loaded
once for that run (a photo added on an occupant's page uses the per-process
cached one): the import runs in a background thread and must not share the
detector's per-size state with a request thread.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

from registry.enrol import EnrolBackend, Enroller, load_engine
from server.occupants.face_engine import pack_for_model

THREADS = min(4, os.cpu_count() or 1)
"""ONNX Runtime threads (the CLI's default): an import shares the server's cores."""


def installed() -> bool:
    """Whether ONNX Runtime is installed (the engine imports it only when loading)."""
    return importlib.util.find_spec("onnxruntime") is not None


def engine_factory(model_id: str) -> Callable[[], Enroller | EnrolBackend]:
    """A factory of the engine whose pack makes the site's ``model_id``; the importer
    still checks the loaded model against the site's gallery."""

    def load() -> Enroller | EnrolBackend:
        return load_engine(pack_for_model(model_id), threads=THREADS)

    return load
