"""Edge exception tree: every error the edge raises on purpose is one of these."""

from __future__ import annotations


class LintelEdgeError(Exception):
    """Base of all deliberate edge errors; the CLI prints them without a traceback."""


class ModelPackError(LintelEdgeError):
    """A model pack is missing, incomplete or unloadable (names the file)."""


class ImageError(LintelEdgeError):
    """An image could not be read or decoded (names the file)."""


class EnrolmentError(LintelEdgeError):
    """A photo does not hold exactly one usable face.

    ``reason`` is a stable code: ``unreadable``, ``no_face``, ``several_faces``,
    ``too_small``, ``too_blurry``, ``bad_pose``, ``low_score``, ``low_quality``
    (the recogniser's embedding norm: it found too little identity in the face).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class GalleryError(LintelEdgeError):
    """A gallery folder or synced gallery is unusable (names the file and reason)."""


class CaptureError(LintelEdgeError):
    """A video source cannot be opened or read."""


class CalibrationError(LintelEdgeError):
    """A site calibration cannot be computed (e.g. too few stranger probes)."""
