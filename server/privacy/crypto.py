"""Face crops at rest: AES-256-GCM with a key from the environment or a file.

Keys: ``LINTEL_CROP_KEY`` (base64 of 32 bytes) or ``LINTEL_CROP_KEY_FILE``
(base64 keys, one a line; the first seals, the rest only open) plus
``LINTEL_CROP_OLD_KEYS`` (comma-separated, open only). A key's id is derived
from the key itself (a SHA-256 prefix), stored beside each crop, so rotation
needs no bookkeeping: add the new key first, keep the old one as an opening
key, run ``lintel-server crops rotate-key``, then drop the old key.

Outside dev/test a missing key refuses to start (:class:`CropKeyMissing`);
dev/test generate one into ``<data_dir>/crop.key`` (mode 0600) with a warning.

Each crop is sealed with associated data ``sighting:<id>``: a ciphertext
copied onto another sighting's row does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.privacy.errors import CropDecryptFailed, CropKeyError, CropKeyMissing, CropKeyUnknown
from server.settings import Settings

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
DEV_KEY_FILE = "crop.key"


def key_id_of(key: bytes) -> str:
    """The id stored beside crops sealed with ``key`` (16 hex; reveals nothing usable)."""
    return hashlib.sha256(b"lintel-crop-key:" + key).hexdigest()[:16]


def decode_key(text: str, *, source: str) -> bytes:
    """A 32-byte key from base64 text; :class:`CropKeyError` naming ``source`` otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CropKeyError(f"{source}: not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise CropKeyError(f"{source}: a crop key is {KEY_BYTES} bytes, this one is {len(raw)}")
    return raw


def new_key_text() -> str:
    """A fresh random key, base64 (what ``lintel-server crops new-key`` prints)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@dataclass(frozen=True)
class CropKeyring:
    """The sealing key and every key that may open crops, by key id."""

    active_id: str
    keys: dict[str, bytes] = field(repr=False)

    @classmethod
    def from_keys(cls, active: bytes, others: list[bytes] | None = None) -> CropKeyring:
        """A keyring sealing with ``active`` and opening with it and ``others``."""
        keys = {key_id_of(k): k for k in others or []}
        keys[key_id_of(active)] = active
        return cls(active_id=key_id_of(active), keys=keys)

    def seal(self, plaintext: bytes, *, aad: bytes) -> tuple[str, bytes]:
        """``(key_id, nonce + ciphertext)`` of ``plaintext`` under the active key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active_id]).encrypt(nonce, plaintext, aad)
        return self.active_id, nonce + sealed

    def open(self, key_id: str, blob: bytes, *, aad: bytes) -> bytes:
        """The plaintext of a sealed blob; :class:`CropKeyUnknown` / :class:`CropDecryptFailed`."""
        key = self.keys.get(key_id)
        if key is None:
            raise CropKeyUnknown(
                f"crop sealed with key id {key_id}, which is not configured "
                "(LINTEL_CROP_KEY, LINTEL_CROP_KEY_FILE or LINTEL_CROP_OLD_KEYS)"
            )
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise CropDecryptFailed(
                f"crop sealed with key id {key_id} does not open: altered or moved ({aad.decode()})"
            ) from exc

    def merged(self, other: CropKeyring) -> CropKeyring:
        """``other``'s active key sealing, every key of both opening."""
        return CropKeyring(active_id=other.active_id, keys={**self.keys, **other.keys})


def _dev_key(data_dir: Path) -> bytes:
    path = data_dir / DEV_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds the key and the database
    try:
        # O_EXCL: several workers starting at once agree on one key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return decode_key(path.read_text().splitlines()[0], source=str(path))
    text = new_key_text()
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    log.warning(
        "no crop key configured: generated a development key in %s; set LINTEL_CROP_KEY "
        "or LINTEL_CROP_KEY_FILE in production",
        path,
    )
    return decode_key(text, source=str(path))


def load_keyring(settings: Settings) -> CropKeyring:
    """The keyring the settings describe; see the module doc for the sources."""
    active: bytes | None = None
    others: list[bytes] = []
    if settings.crop_key is not None:
        active = decode_key(settings.crop_key.get_secret_value(), source="LINTEL_CROP_KEY")
    if settings.crop_key_file is not None:
        path = settings.crop_key_file
        try:
            lines = [ln.strip() for ln in path.read_text().splitlines()]
        except OSError as exc:
            raise CropKeyError(f"LINTEL_CROP_KEY_FILE {path}: {exc.strerror}") from exc
        keys = [
            decode_key(ln, source=f"{path}:{n}")
            for n, ln in enumerate(lines, 1)
            if ln and not ln.startswith("#")
        ]
        if not keys:
            raise CropKeyError(f"LINTEL_CROP_KEY_FILE {path} holds no key")
        if active is None:
            active, keys = keys[0], keys[1:]
        others.extend(keys)
    if settings.crop_old_keys is not None:
        others.extend(
            decode_key(part, source="LINTEL_CROP_OLD_KEYS")
            for part in settings.crop_old_keys.get_secret_value().split(",")
            if part.strip()
        )
    if active is None:
        if settings.env == "prod":
            raise CropKeyMissing(
                "no crop key: set LINTEL_CROP_KEY (base64 of 32 random bytes, e.g. "
                "`lintel-server crops new-key`) or LINTEL_CROP_KEY_FILE"
            )
        active = _dev_key(settings.data_dir)
    return CropKeyring.from_keys(active, others)


# -- the process's keyring ---------------------------------------------------------------
# The crop seam (server/sightings/crops.py) takes no settings, so the app factory,
# the CLI and the worker install their keyring here once. Keys installed in this
# process stay known for opening (a test process installs many dev keys).
_lock = threading.Lock()
_installed: CropKeyring | None = None


def install_keyring(keyring: CropKeyring) -> None:
    """Make ``keyring`` the process's: its active key seals; all keys seen so far open."""
    global _installed
    with _lock:
        _installed = keyring if _installed is None else _installed.merged(keyring)


def current_keyring() -> CropKeyring:
    """The installed keyring; an ephemeral one (logged) when nothing installed any."""
    global _installed
    with _lock:
        if _installed is None:
            # Only scripts that write crops without the app/CLI get here: their
            # crops open in this process only. Production entry points install one.
            log.warning("no crop keyring installed; using an ephemeral in-memory key")
            _installed = CropKeyring.from_keys(secrets.token_bytes(KEY_BYTES))
        return _installed
