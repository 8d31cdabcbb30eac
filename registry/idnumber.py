"""Resident identity card numbers (居民身份证号码, GB 11643-1999).

An ID number is validated (18 characters, a real birth date, the ISO 7064
MOD 11-2 check character, which may be ``X``) and then kept only as a keyed
hash plus its last four characters. The plain number never leaves this module:
:func:`protect_id` is the only thing the importer stores.

The hash is HMAC-SHA256 with a server secret, so a leaked database cannot be
reversed by hashing the (small, structured) space of all ID numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from registry.errors import FieldError

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class ProtectedId:
    """What is stored of an ID number: a keyed hash and the last 4 characters."""

    id_hash: str
    last4: str

    def __repr__(self) -> str:  # keep logs short; the hash is not secret but noisy
        return f"ProtectedId(***{self.last4})"


def check_char(first17: str) -> str:
    """The GB 11643 check character of the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalise_id(text: str) -> str:
    """Validate an 18-character ID number; return it upper-cased without spaces.

    The error messages never echo the full number (it is personal data that
    would end up in report files); they show its last four characters.
    """
    value = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).upper()
    tail = value[-4:]
    if re.fullmatch(r"[0-9]+\.0+|[0-9](\.[0-9]+)?E\+?[0-9]+", value):
        raise FieldError(
            "ID number was stored as a number and lost digits; "
            "format the column as text in Excel and enter it again"
        )
    if len(value) == 15 and value.isdigit():
        raise FieldError(f"ID number ***{tail} is an old 15-digit number; give the 18-digit one")
    if not re.fullmatch(r"[0-9]{17}[0-9X]", value):
        raise FieldError(f"ID number ***{tail} must be 17 digits and a digit or X")
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise FieldError(f"ID number ***{tail} holds no valid birth date") from None
    if check_char(value[:17]) != value[17]:
        raise FieldError(f"ID number ***{tail} has a wrong check digit (typo?)")
    return value


def protect_id(normalised: str, secret: bytes) -> ProtectedId:
    """HMAC-SHA256 of a normalised ID number with ``secret``, plus its last 4 characters."""
    if len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(f"the ID hash secret must be at least {_MIN_SECRET_BYTES} bytes")
    digest = hmac.new(secret, normalised.encode("ascii"), hashlib.sha256).hexdigest()
    return ProtectedId(id_hash=digest, last4=normalised[-4:])
