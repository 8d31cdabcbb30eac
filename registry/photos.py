"""Photo sources: a folder or a zip archive, both refusing anything unsafe.

A row's 照片 cell names a file *inside* the source. Names that try to leave it
(absolute paths, ``..``, drive letters) are refused per row. A zip archive is
checked as a whole when opened, before any byte is inflated: an entry that
escapes the archive root or is a symlink, too many entries, a declared size
above the per-file cap, a compression ratio typical of zip bombs, or a total
uncompressed size above the cap make the whole archive an
:class:`~registry.errors.UnsafeArchiveError`. Reads are capped again at the
declared size, so a header that lies about its size cannot inflate further.

Every photo read from either source passes :func:`check_photo` before any
decoder sees it: JPEG, PNG or WebP by content (never by name), with a size in
its header of at most ``max_pixels``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import unicodedata
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from registry.errors import InputError, PhotoError, UnsafeArchiveError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PhotoLimits:
    """Caps for photo sources; the defaults fit 10,000+ phone photos."""

    max_photo_bytes: int = 15 * 1024 * 1024
    max_entries: int = 200_000
    max_total_bytes: int = 8 * 1024 * 1024 * 1024
    # Photos (JPEG/PNG) hardly compress; a ratio like this is a zip bomb.
    max_ratio: float = 50.0
    # Below this size ratios are meaningless (a tiny text file compresses well).
    ratio_min_bytes: int = 64 * 1024
    # A 50 MP phone photo decodes to 150 MB; a crafted 30000x30000 PNG of a few KiB
    # would decode to 2.7 GB (a decompression bomb of its own).
    max_pixels: int = 64_000_000


PHOTO_FORMATS = ("JPEG", "PNG", "WebP")
"""What a registry photo may be, by content: the formats phones and cameras write and
whose header gives the size. Anything else (BMP, TIFF, PPM, GIF...) is refused before
OpenCV sees it: a 1 KB BMP header can declare 144 MP (1.09 GB decoded)."""

# JPEG markers without a length field (RSTn, TEM): skipped as libjpeg skips them.
_JPEG_PARAMETERLESS = frozenset(range(0xD0, 0xD8)) | {0x01}


def photo_format(data: bytes) -> str | None:
    """'JPEG', 'PNG' or 'WebP' from the file's first bytes (never its name); None otherwise."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """The size in the first SOF marker, walking the markers the way libjpeg does."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            # libjpeg skips stray bytes between markers (with a warning): so do we, so
            # that the SOF found here is the one the decoder will use.
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_PARAMETERLESS or marker == 0x00:  # 0x00: a stuffed byte, junk
            i += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            return None  # a second SOI, EOI or a scan before any frame header: libjpeg fails
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if length < 2:
            return None
        i += 2 + length
    return None


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or WebP header without decoding; None if unknown."""
    kind = photo_format(data)
    if kind == "PNG":
        # IHDR must be the first chunk (PNG spec 5.6); libpng refuses anything else.
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if kind == "JPEG":
        return _jpeg_dimensions(data)
    if kind == "WebP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
            return width, height
        if chunk == b"VP8 ":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(
                data[28:30], "little"
            ) & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def check_photo(data: bytes, name: str, limits: PhotoLimits | None = None) -> None:
    """Refuse anything but a JPEG, PNG or WebP (by content) whose header gives a size
    of at most ``limits.max_pixels``: checked BEFORE any decoder runs.

    The one gate for registry photos: :class:`FolderSource` and :class:`ZipSource`
    call it on every read, so local and ``--server`` imports (which enrol on the
    client) refuse the same files. Raises :class:`~registry.errors.PhotoError` only.
    """
    lim = limits or PhotoLimits()
    kind = photo_format(data)
    if kind is None:
        found = _other_format(data)
        what = f"a {found} file" if found else "not an image we know"
        raise PhotoError(
            f"photo {name!r} is {what}; use {', '.join(PHOTO_FORMATS[:-1])} or "
            f"{PHOTO_FORMATS[-1]} (the file name does not matter, its content does)"
        )
    size = image_dimensions(data)
    if size is None:
        raise PhotoError(f"photo {name!r} is a damaged {kind}: its header gives no image size")
    width, height = size
    if width < 1 or height < 1:
        raise PhotoError(f"photo {name!r} is a {kind} of {width}x{height} pixels (empty)")
    if width * height > lim.max_pixels:
        raise PhotoError(
            f"photo {name!r} is {width}x{height} pixels, more than "
            f"{lim.max_pixels // 1_000_000} megapixels"
        )


def _other_format(data: bytes) -> str | None:
    """Name a common format we refuse, for the message only."""
    for magic, label in (
        (b"BM", "BMP"),
        (b"GIF8", "GIF"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"%PDF", "PDF"),
        (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
    ):
        if data.startswith(magic):
            return label
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF"
    if data[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"):
        return "PNM"
    return None


class PhotoSource(Protocol):
    """Where rows' photos come from; ``read`` raises PhotoError for one bad name."""

    description: str

    def read(self, name: str) -> bytes: ...

    def close(self) -> None: ...


def clean_name(name: str) -> str:
    """Validate a photo name from a row: a relative path that stays inside the source."""
    value = unicodedata.normalize("NFC", name.strip()).replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    if not value:
        raise PhotoError("photo name is empty")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise PhotoError(f"photo {name!r} is an absolute path; give a name inside --photos")
    parts = PurePosixPath(value).parts
    if ".." in parts:
        raise PhotoError(f"photo {name!r} points outside the photo folder ('..')")
    return posixpath.normpath(value)


def _index_key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class _Index:
    """Exact, case-insensitive and base-name lookup over relative paths."""

    def __init__(self, names: list[str]) -> None:
        self.exact = set(names)
        self.folded: dict[str, list[str]] = defaultdict(list)
        self.base: dict[str, list[str]] = defaultdict(list)
        for n in names:
            self.folded[_index_key(n)].append(n)
            self.base[_index_key(posixpath.basename(n))].append(n)

    def find(self, wanted: str) -> str:
        if wanted in self.exact:
            return wanted
        for table, key in (
            (self.folded, _index_key(wanted)),
            (self.base, _index_key(posixpath.basename(wanted))),
        ):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise PhotoError(
                    f"photo {wanted!r} is ambiguous: {len(hits)} files match "
                    f"({', '.join(sorted(hits)[:3])}); give the path"
                )
        raise PhotoError(f"photo {wanted!r} not found")


class FolderSource:
    """Photos under one folder; symlinks that lead outside it are refused."""

    def __init__(self, root: Path, limits: PhotoLimits | None = None) -> None:
        if not root.is_dir():
            raise InputError(f"photo folder {root} does not exist")
        self.root = root.resolve()
        self.limits = limits or PhotoLimits()
        self.description = str(root)
        self._index: _Index | None = None

    def _lookup(self, wanted: str) -> Path:
        direct = self.root / wanted
        if direct.is_file():
            return direct
        if self._index is None:
            names: list[str] = []
            for dirpath, _dirs, files in os.walk(self.root):
                rel = Path(dirpath).relative_to(self.root)
                names.extend((rel / f).as_posix() for f in files)
                if len(names) > self.limits.max_entries:
                    raise InputError(
                        f"photo folder {self.root} holds more than {self.limits.max_entries} files"
                    )
            self._index = _Index(names)
        return self.root / self._index.find(wanted)

    def read(self, name: str) -> bytes:
        path = self._lookup(clean_name(name))
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise PhotoError(f"photo {name!r} is a link that leads outside the photo folder")
        size = resolved.stat().st_size
        if size > self.limits.max_photo_bytes:
            raise PhotoError(
                f"photo {name!r} is {size // 1024} KiB, more than "
                f"{self.limits.max_photo_bytes // 1024} KiB"
            )
        data = resolved.read_bytes()
        check_photo(data, name, self.limits)
        return data

    def close(self) -> None:
        return None


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's real name: zips from Chinese Windows store GBK without the UTF-8 flag."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            raw = name.encode("cp437")
        except UnicodeEncodeError:
            return name
        for encoding in ("utf-8", "gb18030"):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError:
                continue
    return name


def _unsafe_entry(name: str) -> bool:
    value = name.replace("\\", "/")
    return (
        value.startswith("/")
        or (len(value) > 1 and value[1] == ":")
        or ".." in PurePosixPath(value).parts
    )


class ZipSource:
    """Photos inside a zip archive, checked as a whole before anything is inflated."""

    def __init__(
        self, path: Path | IO[bytes], limits: PhotoLimits | None = None, *, label: str = ""
    ) -> None:
        """``path`` may be an open binary file (an upload the server keeps in memory:
        photos are biometric and never touch its disk); ``label`` names it in messages."""
        self.limits = limits or PhotoLimits()
        self.description = label or str(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(
                f"photo archive {self.description}: not a readable zip ({exc})"
            ) from None
        try:
            self._entries = self._check(self.description)
        except BaseException:
            self._zip.close()
            raise
        self._index = _Index(list(self._entries))

    def _check(self, path: str) -> dict[str, zipfile.ZipInfo]:
        lim = self.limits
        infos = self._zip.infolist()
        if len(infos) > lim.max_entries:
            raise UnsafeArchiveError(
                f"photo archive {path} has {len(infos)} entries, more than {lim.max_entries}"
            )
        entries: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = _entry_name(info)
            if _unsafe_entry(name):
                raise UnsafeArchiveError(
                    f"photo archive {path} is refused: entry {name!r} points outside the archive"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(
                    f"photo archive {path} is refused: entry {name!r} is a symbolic link"
                )
            if info.is_dir():
                continue
            if info.file_size > lim.max_photo_bytes:
                raise UnsafeArchiveError(
                    f"photo archive {path} is refused: entry {name!r} would inflate to "
                    f"{info.file_size} bytes, more than {lim.max_photo_bytes}"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= lim.ratio_min_bytes and ratio > lim.max_ratio:
                raise UnsafeArchiveError(
                    f"photo archive {path} is refused: entry {name!r} has a compression ratio "
                    f"of {ratio:.0f}:1 (a zip bomb?)"
                )
            total += info.file_size
            if total > lim.max_total_bytes:
                raise UnsafeArchiveError(
                    f"photo archive {path} is refused: it would inflate to more than "
                    f"{lim.max_total_bytes} bytes"
                )
            entries[posixpath.normpath(name.replace("\\", "/"))] = info
        return entries

    def read(self, name: str) -> bytes:
        info = self._entries[self._index.find(clean_name(name))]
        try:
            with self._zip.open(info) as handle:
                # Never trust the header: read one byte past the declared size.
                data = handle.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
            raise PhotoError(f"photo {name!r} cannot be read from the archive ({exc})") from None
        if len(data) > info.file_size:
            raise PhotoError(f"photo {name!r} is larger than its archive header says")
        check_photo(data, name, self.limits)
        return data

    def close(self) -> None:
        self._zip.close()


def open_photos(path: Path, limits: PhotoLimits | None = None) -> PhotoSource:
    """A folder or a ``.zip`` file as a photo source."""
    if path.is_dir():
        return FolderSource(path, limits)
    if path.is_file() and zipfile.is_zipfile(path):
        return ZipSource(path, limits)
    if not path.exists():
        raise InputError(f"photos: {path} does not exist")
    raise InputError(f"photos: {path} is neither a folder nor a zip archive")
