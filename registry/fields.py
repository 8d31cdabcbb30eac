"""Parsers for the simpler cells: phone, role, date, name, external id.

Each takes the cell text and returns the normalised value or raises
:class:`registry.errors.FieldError` with a message for the user.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta
from enum import StrEnum

from registry.errors import FieldError

# Excel's day 0 (its 1900 leap-year bug makes 1899-12-30 the right origin).
_EXCEL_EPOCH = date(1899, 12, 30)


class Role(StrEnum):
    OWNER = "owner"
    TENANT = "tenant"
    FAMILY = "family"


_ROLE_WORDS: dict[str, Role] = {
    "业主": Role.OWNER,
    "房主": Role.OWNER,
    "产权人": Role.OWNER,
    "owner": Role.OWNER,
    "租户": Role.TENANT,
    "租客": Role.TENANT,
    "承租人": Role.TENANT,
    "tenant": Role.TENANT,
    "家属": Role.FAMILY,
    "家庭成员": Role.FAMILY,
    "family": Role.FAMILY,
}


def normalise_role(text: str) -> Role:
    """业主/租户/家属 or owner/tenant/family (a few synonyms accepted)."""
    key = unicodedata.normalize("NFKC", text).strip().lower()
    try:
        return _ROLE_WORDS[key]
    except KeyError:
        raise FieldError(
            f"role {text!r} is not one of 业主/租户/家属 (owner/tenant/family)"
        ) from None


def normalise_phone(text: str) -> str:
    """A mainland mobile number as ``+86`` and 11 digits.

    Accepts spaces, dashes, brackets, full-width digits, a ``+86``/``0086``/``86``
    prefix and the ``13812345678.0`` that Excel makes of numeric cells.
    """
    value = unicodedata.normalize("NFKC", text).strip()
    if re.fullmatch(r"[0-9.]+E\+?[0-9]+", value.upper()):
        raise FieldError(
            f"phone {text!r} was stored as a number in scientific notation and lost digits"
        )
    value = re.sub(r"\.0+$", "", value)
    digits = re.sub(r"[\s\-()（）.]", "", value)
    if digits.startswith("+"):
        digits = digits[1:]
        if not digits.startswith("86"):
            raise FieldError(f"phone {text!r} is not a mainland China (+86) number")
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if not re.fullmatch(r"1[3-9][0-9]{9}", digits):
        raise FieldError(f"phone {text!r} is not an 11-digit mobile number")
    return f"+86{digits}"


def normalise_date(value: str | date | datetime | float) -> date:
    """YYYY-MM-DD, YYYY/M/D, YYYY.M.D, YYYY年M月D日, YYYYMMDD, an XLSX date or Excel serial."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float):
        return _from_serial(float(value), str(value))
    text = unicodedata.normalize("NFKC", value).strip()
    match = re.fullmatch(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?", text)
    if match is None:
        match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
    if match is None:
        # A date-time as Excel or pandas writes it: keep the date part.
        match = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T]\d{1,2}:\d{2}(:\d{2})?", text)
    if match is None:
        if re.fullmatch(r"\d{5}(\.0+)?", text):
            return _from_serial(float(text), text)
        raise FieldError(f"date {value!r} is not understood (use YYYY-MM-DD)")
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise FieldError(f"date {value!r} does not exist") from None


def _from_serial(serial: float, shown: str) -> date:
    # Excel serials for plausible move-in dates (1950..2100).
    if not 18_264 <= serial <= 73_051:
        raise FieldError(f"date {shown!r} is not understood (use YYYY-MM-DD)")
    return _EXCEL_EPOCH + timedelta(days=int(serial))


def normalise_name(text: str) -> str:
    """Trim and fold full-width spaces; a name must not be empty or absurdly long."""
    name = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()
    if not name:
        raise FieldError("name is empty")
    if len(name) > 64:
        raise FieldError(f"name {name[:16]!r}... is longer than 64 characters")
    return name


def normalise_external_id(text: str) -> str:
    """An external (property-system) id: trimmed, at most 64 characters."""
    value = unicodedata.normalize("NFKC", text).strip()
    value = re.sub(r"\.0+$", "", value) if re.fullmatch(r"[0-9]+\.0+", value) else value
    if len(value) > 64:
        raise FieldError("external id is longer than 64 characters")
    return value
