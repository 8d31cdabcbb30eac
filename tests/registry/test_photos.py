"""Photo sources: folder and zip, path traversal and zip bombs refused."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from registry.errors import InputError, PhotoError, UnsafeArchiveError
from registry.photos import (
    FolderSource,
    PhotoLimits,
    ZipSource,
    check_photo,
    clean_name,
    image_dimensions,
    open_photos,
)


def _jpeg(shade: int) -> bytes:
    """A real 8x8 JPEG (sources hand out only JPEG, PNG or WebP); ``shade`` tells them apart."""
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), shade, np.uint8))
    assert ok
    return buf.tobytes()


A, C, Z = _jpeg(10), _jpeg(100), _jpeg(200)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b.jpg", "/etc/passwd", "C:\\x.jpg"])
def test_names_leaving_the_source_are_refused(name: str) -> None:
    with pytest.raises(PhotoError):
        clean_name(name)


def test_clean_names() -> None:
    assert clean_name("./photos\\a.jpg") == "photos/a.jpg"
    assert clean_name("a/./b.jpg") == "a/b.jpg"


def test_folder_lookup(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "张三.JPG").write_bytes(Z)
    (tmp_path / "a.jpg").write_bytes(A)
    source = open_photos(tmp_path)
    assert source.read("a.jpg") == A
    assert source.read("sub/张三.JPG") == Z
    assert source.read("张三.jpg") == Z  # by base name, case-insensitive
    with pytest.raises(PhotoError, match="not found"):
        source.read("nobody.jpg")
    with pytest.raises(PhotoError, match="outside"):
        source.read("../a.jpg")


def test_folder_ambiguous_base_name(tmp_path: Path) -> None:
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.jpg").write_bytes(A)
    with pytest.raises(PhotoError, match="ambiguous"):
        FolderSource(tmp_path).read("a.jpg")
    assert FolderSource(tmp_path).read("x/a.jpg") == A


def test_folder_symlink_escape(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"s")
    root = tmp_path / "photos"
    root.mkdir()
    os.symlink(secret, root / "link.jpg")
    with pytest.raises(PhotoError, match="outside"):
        FolderSource(root).read("link.jpg")


def test_folder_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.jpg").write_bytes(b"x" * 2048)
    with pytest.raises(PhotoError, match="KiB"):
        FolderSource(tmp_path, PhotoLimits(max_photo_bytes=1024)).read("big.jpg")


def _zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_zip_lookup_with_top_folder(tmp_path: Path) -> None:
    path = _zip(tmp_path / "p.zip", {"photos/a.jpg": A, "photos/b/c.png": C})
    source = open_photos(path)
    try:
        assert source.read("a.jpg") == A
        assert source.read("photos/b/c.png") == C
        assert source.read("c.png") == C
        with pytest.raises(PhotoError, match="not found"):
            source.read("d.jpg")
        with pytest.raises(PhotoError, match="outside"):
            source.read("../a.jpg")
    finally:
        source.close()


@pytest.mark.parametrize("name", ["../evil.jpg", "photos/../../evil.jpg", "/abs.jpg"])
def test_zip_with_traversal_entry_is_refused(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / "p.zip", {"ok.jpg": b"a", name: b"x"})
    with pytest.raises(UnsafeArchiveError, match="outside the archive"):
        ZipSource(path)


def test_zip_with_symlink_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("link.jpg")
        info.external_attr = (0o120777 << 16) | 0
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        ZipSource(path)


def test_zip_bomb_by_ratio_is_refused(tmp_path: Path) -> None:
    # 5 MiB of zeros deflate to ~5 KiB: ratio ~1000:1, far beyond any photo.
    path = _zip(tmp_path / "bomb.zip", {"a.jpg": bytes(5 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(UnsafeArchiveError, match="ratio"):
        ZipSource(path)


def test_zip_declared_sizes_over_caps_are_refused(tmp_path: Path) -> None:
    big = os.urandom(300 * 1024)
    path = _zip(tmp_path / "p.zip", {"a.jpg": big, "b.jpg": big})
    with pytest.raises(UnsafeArchiveError, match="inflate to"):
        ZipSource(path, PhotoLimits(max_photo_bytes=200 * 1024))
    with pytest.raises(UnsafeArchiveError, match="more than"):
        ZipSource(path, PhotoLimits(max_total_bytes=500 * 1024))
    with pytest.raises(UnsafeArchiveError, match="entries"):
        ZipSource(path, PhotoLimits(max_entries=1))
    ZipSource(path).close()  # fine with the default limits


def test_zip_lying_header_cannot_inflate_further(tmp_path: Path) -> None:
    data = os.urandom(4096)
    path = _zip(tmp_path / "p.zip", {"a.jpg": data}, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    # Shrink the declared size in the central directory (what ZipFile trusts).
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    source = ZipSource(path)
    try:
        with pytest.raises(PhotoError):
            source.read("a.jpg")
    finally:
        source.close()


def test_zip_gbk_names_from_chinese_windows(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    gbk = "张三.jpg".encode("gbk")
    placeholder = b"X" * (len(gbk) - 4) + b".jpg"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(placeholder.decode(), Z)
    # What a Chinese Windows zip tool writes: GBK bytes, no UTF-8 flag.
    path.write_bytes(path.read_bytes().replace(placeholder, gbk))
    source = ZipSource(path)
    try:
        assert source.read("张三.jpg") == Z
    finally:
        source.close()


def test_not_a_zip_or_folder(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"nope")
    with pytest.raises(InputError):
        open_photos(tmp_path / "x.zip")
    with pytest.raises(InputError):
        open_photos(tmp_path / "missing")


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_image_dimensions_from_headers(ext: str) -> None:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(ext, np.zeros((30, 50, 3), np.uint8))
    assert ok
    assert image_dimensions(buf.tobytes()) == (50, 30)
    assert image_dimensions(b"not an image") is None


def test_pixel_bombs_are_refused(tmp_path: Path) -> None:
    # A PNG header declaring 30000x30000 pixels: tiny on disk, 2.7 GB decoded.
    (tmp_path / "huge.png").write_bytes(_png_header(30_000, 30_000) + b"\x00" * 64)
    with pytest.raises(PhotoError, match="megapixels"):
        FolderSource(tmp_path).read("huge.png")
    archive = _zip(tmp_path / "p.zip", {"huge.png": _png_header(30_000, 30_000)})
    source = ZipSource(archive)
    try:
        with pytest.raises(PhotoError, match="megapixels"):
            source.read("huge.png")
    finally:
        source.close()


def _bmp_header(width: int, height: int) -> bytes:
    """A 1 KB BMP: 24-bit, ``width`` x ``height`` declared, almost no pixel data."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + len(info) + width * height * 3, 0, 0, 54)
    return (head + info).ljust(1024, b"\x00")


def _jpeg_header(width: int, height: int, junk: bytes = b"") -> bytes:
    """SOI, APP0, ``junk``, then a baseline SOF0 declaring ``width`` x ``height``."""
    import struct

    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3)
    sof += b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + junk + sof + b"\x00" * 64


def _webp_vp8x_header(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + b"\x00" * 4
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + (4 + len(vp8x)).to_bytes(4, "little") + b"WEBP" + vp8x + b"\x00" * 16


def _read_from_both(tmp_path: Path, name: str, data: bytes) -> list[Exception]:
    """What a folder and a zip each raise when handing out ``data`` as ``name``."""
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    errors: list[Exception] = []
    with pytest.raises(PhotoError) as from_folder:
        FolderSource(folder).read(name)
    errors.append(from_folder.value)
    source = ZipSource(_zip(tmp_path / "p.zip", {name: data}))
    try:
        with pytest.raises(PhotoError) as from_zip:
            source.read(name)
        errors.append(from_zip.value)
    finally:
        source.close()
    return errors


def test_a_bmp_named_jpg_is_refused_by_content(tmp_path: Path) -> None:
    # 1 KB declaring 12000x12000: OpenCV would decode it (432 MB) as if it were a photo.
    bomb = _bmp_header(12_000, 12_000)
    assert len(bomb) == 1024
    for error in _read_from_both(tmp_path, "a.jpg", bomb):
        assert "BMP" in str(error) and "JPEG, PNG or WebP" in str(error)


@pytest.mark.parametrize("data", [b"", b"hello", b"GIF89a" + bytes(20), b"II*\x00" + bytes(20)])
def test_other_content_is_refused_whatever_the_name(tmp_path: Path, data: bytes) -> None:
    for error in _read_from_both(tmp_path, "photo.png", data):
        assert "JPEG, PNG or WebP" in str(error)


@pytest.mark.parametrize(
    "data",
    [
        _jpeg_header(30_000, 30_000),
        # Stray bytes before the SOF: libjpeg skips them and decodes, so the size must
        # still be found (before, the parser gave up and let the photo through).
        _jpeg_header(30_000, 30_000, junk=b"\x00\x11junk"),
        _jpeg_header(30_000, 30_000, junk=b"\xff\xd3"),  # a parameterless RST marker
        _webp_vp8x_header(16_000, 16_000),
        _png_header(30_000, 30_000),
    ],
    ids=["jpeg", "jpeg-junk", "jpeg-rst", "webp", "png"],
)
def test_pixel_caps_hold_for_every_format(tmp_path: Path, data: bytes) -> None:
    for error in _read_from_both(tmp_path, "big.jpg", data):
        assert "megapixels" in str(error)


def test_headers_that_give_no_size_are_refused(tmp_path: Path) -> None:
    ihdr_not_first = _png_header(10, 10).replace(b"IHDR", b"tEXt")
    for data in (ihdr_not_first, b"\xff\xd8\xff\xd9", b"RIFF\x00\x00\x00\x00WEBP"):
        for error in _read_from_both(tmp_path, "x.jpg", data):
            assert "gives no image size" in str(error)


@pytest.mark.parametrize("junk", [b"\x00\x11junk", b"\xff\xd3"])
def test_jpeg_size_is_the_one_the_decoder_uses(junk: bytes) -> None:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))
    assert ok
    data = buf.tobytes()
    sof = data.index(b"\xff\xc0")
    odd = data[:sof] + junk + data[sof:]
    decoded = cv2.imdecode(np.frombuffer(odd, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[:2] == (30, 50)
    assert image_dimensions(odd) == (50, 30)
    check_photo(odd, "odd.jpg")
