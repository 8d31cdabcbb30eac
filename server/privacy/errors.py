"""Privacy domain errors (mapped to HTTP by :mod:`server.errors`' one handler)."""

from __future__ import annotations

from server.errors import LintelError


class CropKeyError(LintelError):
    """A crop key is missing, malformed, unknown, or does not open a crop.

    A server-side configuration fault (500), never the caller's: the message
    names the key id and the settings to check, never key material.
    """

    status_code = 500
    code = "crop_key"


class CropKeyMissing(CropKeyError):
    """No crop key is configured where one is required (outside dev/test)."""


class CropKeyUnknown(CropKeyError):
    """A crop is sealed with a key id that is not configured."""


class CropDecryptFailed(CropKeyError):
    """The key is known but the crop does not open (altered bytes or wrong row)."""
