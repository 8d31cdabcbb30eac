"""The pipeline's, daemon's and tools' errors; the face engine's are in :mod:`edge.face.errors`.

Every error the edge raises on purpose is a :class:`~edge.face.errors.LintelEdgeError`
(the CLI prints them without a traceback); its base lives on the bottom floor so
the face engine can raise it without importing anything above itself.
"""

from __future__ import annotations

from edge.face.errors import LintelEdgeError


class GalleryError(LintelEdgeError):
    """A gallery folder or synced gallery is unusable (names the file and reason)."""


class CaptureError(LintelEdgeError):
    """A video source cannot be opened or read."""


class CalibrationError(LintelEdgeError):
    """A site calibration cannot be computed (e.g. too few stranger probes)."""
