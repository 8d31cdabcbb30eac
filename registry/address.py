"""Standard unit addresses: one unit, one key, however the user wrote it.

A unit is ``building / entrance / room`` (幢 / 单元 / 室). People write the same
unit many ways -- ``三幢二单元1203室``, ``3号楼2单元1203``, ``3栋2-1203``,
``３幢２单元１２０３``, ``3-2-1203`` -- and all of them must collapse to one
:class:`UnitAddress` whose :attr:`UnitAddress.key` is ``3-2-1203``, so that a
re-import, or two occupants of one flat written differently, land on one unit.

Rules (documented in the template too):

* Full-width characters are folded (NFKC); letters are upper-cased.
* Numbers may be Arabic or Chinese (``十二``, ``一二零三`` digit by digit);
  leading zeros are dropped (``0301`` == ``301``).
* Building markers: 幢 栋 座 号楼 号栋 号幢 ``#`` ``#楼``; entrance: 单元;
  room: optional 室 / 号 / 户.
* Dashed form ``B-E-R`` or ``B-R`` (no entrance). A building marker may be
  followed by a dashed ``E-R`` (``3栋2-1203``).
* A leading estate name without digits (``幸福小区3幢…``) is ignored.
* Anything else is an error with the text, never a guess: a bare 楼 is refused
  because ``3楼`` usually means the third *floor*, and text with digits before
  the building (``88号3幢…``, ``二期3幢…``) could be a different estate or phase.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from registry.errors import FieldError

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN = "零〇一二两三四五六七八九十百千"

_NUM = rf"[0-9]+|[{_CN}]+"
_BUILDING = rf"(?P<b>[0-9]+[A-Z]?|[A-Z][0-9]*|[{_CN}]+)\s*(?:号楼|号栋|号幢|幢|栋|座|#楼?)"
_ENTRANCE = rf"(?P<e>{_NUM})\s*单元"
_ROOM = rf"(?P<r>[0-9]+[A-Z]?|[{_CN}]+)\s*(?:室|号|户)?"

_MARKED = re.compile(
    rf"^(?P<prefix>.*?){_BUILDING}\s*-?\s*"
    rf"(?:{_ENTRANCE}\s*-?\s*|(?P<e2>[0-9]+)\s*-\s*)?"
    rf"{_ROOM}$"
)
_DASHED = re.compile(
    r"^(?P<prefix>.*?)(?P<b>[0-9]+[A-Z]?|[A-Z][0-9]*)\s*-\s*(?:(?P<e>[0-9]+)\s*-\s*)?"
    r"(?P<r>[0-9]+[A-Z]?)\s*(?:室|号|户)?$"
)
_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―−﹣－_/"})
# A prefix may name the estate, but must not carry anything that could be part of
# another address (a number, a phase, a building marker).
_BAD_PREFIX = re.compile(rf"[0-9{_CN}]|期|区.*[号#]|幢|栋|单元|座|楼|#")


@dataclass(frozen=True, slots=True)
class UnitAddress:
    """A normalised unit address; ``entrance`` is None for buildings without 单元."""

    building: str
    entrance: str | None
    room: str

    @property
    def key(self) -> str:
        """Stable key, unique per site: ``3-2-1203`` or ``3-1203`` without an entrance."""
        if self.entrance is None:
            return f"{self.building}-{self.room}"
        return f"{self.building}-{self.entrance}-{self.room}"

    @property
    def display(self) -> str:
        """The canonical Chinese form, e.g. ``3幢2单元1203室``."""
        entrance = f"{self.entrance}单元" if self.entrance is not None else ""
        return f"{self.building}幢{entrance}{self.room}室"


def fold(text: str) -> str:
    """NFKC-fold (full-width digits and letters), unify dashes, upper-case, trim."""
    folded = unicodedata.normalize("NFKC", text).translate(_DASHES).upper()
    return re.sub(r"\s+", " ", folded).strip()


def chinese_number(text: str) -> str:
    """Chinese numerals to Arabic digits: ``十二`` -> ``12``, ``一二零三`` -> ``1203``.

    Without 十/百/千 the characters are read digit by digit (how room numbers
    are spoken); with them, positionally.
    """
    if not text or any(ch not in _CN_DIGITS and ch not in _CN_UNITS for ch in text):
        raise FieldError(f"{text!r} is not a number")
    if not any(ch in _CN_UNITS for ch in text):
        return "".join(str(_CN_DIGITS[ch]) for ch in text)
    total, digit = 0, None
    last_unit = 10_000
    for ch in text:
        if ch in _CN_DIGITS:
            if digit not in (None, 0):
                raise FieldError(f"{text!r} is not a well-formed Chinese number")
            digit = _CN_DIGITS[ch]
        else:
            unit = _CN_UNITS[ch]
            if unit >= last_unit:
                raise FieldError(f"{text!r} is not a well-formed Chinese number")
            total += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
    return str(total + (digit or 0))


def _component(raw: str) -> str:
    """One building/entrance/room part: digits without leading zeros, or letters kept."""
    if raw and raw[0] in _CN:
        return chinese_number(raw)
    match = re.fullmatch(r"([0-9]*)([A-Z]*)([0-9]*)", raw)
    if match is None:
        return raw
    head, letters, tail = match.groups()
    head = str(int(head)) if head else ""
    return f"{head}{letters}{tail}"


def _check_prefix(prefix: str, original: str) -> None:
    if prefix.strip() and _BAD_PREFIX.search(prefix):
        raise FieldError(
            f"address {original!r} is ambiguous: the text before the building "
            f"({prefix.strip()!r}) holds a number or a marker"
        )


def parse_address(text: str) -> UnitAddress:
    """Parse one address cell; raises FieldError (with the text) when unparseable."""
    original = text
    folded = fold(text)
    if not folded:
        raise FieldError("address is empty")
    for pattern in (_MARKED, _DASHED):
        match = pattern.match(folded)
        if match is None:
            continue
        _check_prefix(match.group("prefix"), original)
        groups = match.groupdict()
        entrance_raw = groups.get("e") or groups.get("e2")
        return UnitAddress(
            building=_component(match.group("b")),
            entrance=_component(entrance_raw) if entrance_raw else None,
            room=_component(match.group("r")),
        )
    if re.search(r"[0-9" + _CN + r"]\s*楼", folded) and not re.search("号楼", folded):
        raise FieldError(
            f"address {original!r} is ambiguous: '楼' alone may mean a floor; "
            "write 3幢, 3栋 or 3号楼 for the building"
        )
    raise FieldError(
        f"address {original!r} is not a unit address "
        "(expected e.g. 3幢2单元1203室, 3号楼2单元1203 or 3-2-1203)"
    )


def _part(text: str, markers: str, what: str) -> str:
    folded = fold(text)
    match = re.fullmatch(rf"([0-9]+[A-Z]?|[A-Z][0-9]*|[{_CN}]+)\s*(?:{markers})?", folded)
    if match is None:
        raise FieldError(f"{what} {text!r} is not understood")
    return _component(match.group(1))


def address_from_parts(building: str | None, entrance: str | None, room: str | None) -> UnitAddress:
    """Build an address from separate 楼栋 / 单元 / 房号 cells (markers optional)."""
    if not building or not room:
        raise FieldError("building and room are both needed when the address is split")
    return UnitAddress(
        building=_part(building, "号楼|号栋|号幢|幢|栋|座|#楼?", "building"),
        entrance=_part(entrance, "单元", "entrance") if entrance else None,
        room=_part(room, "室|号|户", "room"),
    )
