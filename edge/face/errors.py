"""The face engine's errors, and the base of every deliberate edge error.

Text only (no cv2, no onnxruntime): the registry and the server import these
classes without the face engine installed. The pipeline's and daemon's own
errors subclass :class:`LintelEdgeError` in :mod:`edge.errors`.
"""

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
