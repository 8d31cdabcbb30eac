"""Notification domain errors (mapped to HTTP by :mod:`server.errors`' one handler)."""

from __future__ import annotations

from server.errors import InvalidInput, LintelError, NotFound


class ChannelInvalid(InvalidInput):
    """A channel's settings break a rule (unknown kind or event, bad URL, bad quiet hours)."""


class ChannelNotFound(NotFound):
    """No channel with that id (in that site)."""


class SendFailed(LintelError):
    """A channel refused or did not answer a message; ``detail`` says what it answered."""

    status_code = 502
    code = "notify_send_failed"
