"""Credentials: token and ID-number hashing, passwords (request authentication: server/deps.py).

Device and API tokens are 256-bit random strings, so a plain SHA-256 is
enough to store them (nothing to brute-force); passwords are low-entropy and
get argon2. ID numbers get a keyed HMAC: an 18-digit ID has too little
entropy for an unkeyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

DEVICE_TOKEN_PREFIX = "ltd_"
API_TOKEN_PREFIX = "ltu_"

_hasher = PasswordHasher()


def new_token(prefix: str) -> str:
    """A fresh bearer token (prefix tells a leaked token's kind at a glance)."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what the database stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    """Argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_id_number(id_number: str, *, key: str) -> tuple[str, str]:
    """(keyed HMAC-SHA256 hex, last 4 characters) of a normalised ID number."""
    norm = "".join(id_number.split()).upper()
    digest = hmac.new(key.encode("utf-8"), norm.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest, norm[-4:]
