"""The face engine of web imports: the one module of server/imports that needs it.

A server may be installed without the face stack (the lean ``.[server]``
extra); only :mod:`server.imports.runner` imports this module, in a ``try``,
and a register with photos is then refused with :data:`ENGINE_MISSING` words
(a register without photos still imports). The engine is loaded the way
``lintel-registry import`` loads it (registry/cli.py: ``FaceEngine.load`` of a
pack, handed to :func:`registry.importer.enrol_for_upload` as a factory, which
loads it only when a photo needs enrolling and checks its model against the
site's gallery), once per dry run: a second per job, nothing cached between
jobs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

from edge.engine import FaceEngine
from edge.models import ModelConfig
from registry.enrol import EnrolBackend, Enroller

THREADS = min(4, os.cpu_count() or 1)
"""ONNX Runtime threads (the CLI's default): an import shares the server's cores."""


def installed() -> bool:
    """Whether ONNX Runtime is installed (``edge.engine`` imports it only when loading)."""
    return importlib.util.find_spec("onnxruntime") is not None


def engine_factory(model_id: str) -> Callable[[], Enroller | EnrolBackend]:
    """A factory of the engine whose pack makes ``model_id`` (``buffalo_s/w600k_mbf`` ->
    pack ``buffalo_s``); the importer refuses it if the ids still differ."""
    pack = model_id.split("/", 1)[0]

    def load() -> Enroller | EnrolBackend:
        return FaceEngine.load(ModelConfig(pack=pack, threads=THREADS))

    return load
