"""Errors of the registry import API (mapped to HTTP by ``server.errors``)."""

from __future__ import annotations

from server.errors import LintelError


class Misconfigured(LintelError):
    """The server cannot import registers as configured (e.g. a too short secret key)."""

    status_code = 503
    code = "misconfigured"
