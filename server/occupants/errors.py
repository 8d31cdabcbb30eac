"""Errors of the register's web actions (photos need the face engine; photos get refused)."""

from __future__ import annotations

from server.errors import InvalidInput, LintelError


class PhotoRefused(InvalidInput):
    """A photo that cannot become a template: ``reason`` is the engine's or the
    register's code (no_face, several_faces, too_small, unreadable, same_face...)."""

    code = "photo_refused"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class FaceEngineMissing(LintelError):
    """This server was installed without the face engine (a lean ``[server]`` install)."""

    status_code = 503
    code = "face_engine_missing"
