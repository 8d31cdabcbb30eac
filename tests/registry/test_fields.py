"""ID numbers (GB 11643), phones, dates, roles."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import pytest

from registry.errors import FieldError
from registry.fields import Role, normalise_date, normalise_phone, normalise_role
from registry.idnumber import check_char, normalise_id, protect_id

SECRET = b"test-secret-0123456789"
VALID = "11010519491231002X"  # the standard's worked example


def make_id(first17: str) -> str:
    return first17 + check_char(first17)


def test_worked_example_checksum() -> None:
    assert check_char(VALID[:17]) == "X"
    assert normalise_id(VALID) == VALID


def test_lowercase_x_spaces_and_full_width_are_folded() -> None:
    assert normalise_id("110105 19491231 002x") == VALID
    assert normalise_id("１１０１０５１９４９１２３１００２Ｘ") == VALID


def test_bad_checksum_is_refused_without_echoing_the_number() -> None:
    wrong = VALID[:17] + "1"
    with pytest.raises(FieldError, match="check digit") as info:
        normalise_id(wrong)
    assert wrong not in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("110105491231002", "15-digit"),
        ("11010519491231002", "17 digits"),
        ("1101051949123100AX", "17 digits"),
        (make_id("11010519491331002"), "birth date"),
        ("1.10105194912310E+17", "lost digits"),
    ],
)
def test_malformed_ids(text: str, fragment: str) -> None:
    with pytest.raises(FieldError, match=fragment):
        normalise_id(text)


def test_protect_is_keyed_hmac_and_last4() -> None:
    protected = protect_id(VALID, SECRET)
    assert protected.last4 == "002X"
    expected = hmac.new(SECRET, VALID.encode(), hashlib.sha256).hexdigest()
    assert protected.id_hash == expected
    assert protect_id(VALID, b"another-secret-0123456").id_hash != expected
    assert VALID not in repr(protected)
    with pytest.raises(ValueError, match="secret"):
        protect_id(VALID, b"short")


def test_hash_matches_the_servers_helper() -> None:
    # The server hashes ID numbers typed into the admin UI the same way; a
    # mismatch would make imported occupants unfindable.
    from server.security import hash_id_number

    assert hash_id_number(VALID.lower(), key=SECRET.decode()) == (
        protect_id(VALID, SECRET).id_hash,
        "002X",
    )


@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+86-13812345678",
        "008613812345678",
        "8613812345678",
        "13812345678.0",
        "１３８１２３４５６７８",
        "(138)12345678",
    ],
)
def test_phone_variants(text: str) -> None:
    assert normalise_phone(text) == "+8613812345678"


@pytest.mark.parametrize(
    "text", ["12812345678", "1381234567", "+1 415 555 0100", "010-88886666", "1.38123E+10"]
)
def test_bad_phones(text: str) -> None:
    with pytest.raises(FieldError):
        normalise_phone(text)


@pytest.mark.parametrize(
    "value",
    ["2024-03-05", "2024/3/5", "2024.03.05", "2024年3月5日", "20240305", "2024-03-05 00:00:00"],
)
def test_dates(value: str) -> None:
    assert normalise_date(value) == date(2024, 3, 5)


def test_excel_serial_dates() -> None:
    assert normalise_date(45356) == date(2024, 3, 5)
    assert normalise_date("45356") == date(2024, 3, 5)


@pytest.mark.parametrize("value", ["2024-02-30", "next week", "3/5/2024", "12"])
def test_bad_dates(value: str) -> None:
    with pytest.raises(FieldError):
        normalise_date(value)


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("业主", Role.OWNER),
        ("Owner", Role.OWNER),
        ("租户", Role.TENANT),
        ("tenant ", Role.TENANT),
        ("家属", Role.FAMILY),
        ("FAMILY", Role.FAMILY),
        ("租客", Role.TENANT),
    ],
)
def test_roles(text: str, role: Role) -> None:
    assert normalise_role(text) == role


def test_bad_role() -> None:
    with pytest.raises(FieldError, match="业主"):
        normalise_role("房东的朋友")
