"""Shared test data for the registry tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from registry.idnumber import check_char

SECRET = b"test-secret-0123456789"

HEADER = "姓名,证件号码,手机,地址或房号,身份,入住日期,照片,外部编号\n"


def make_id(n: int) -> str:
    first17 = f"3301061985{(n % 12) + 1:02d}{(n % 28) + 1:02d}{n % 1000:03d}"
    return first17 + check_char(first17)


ROWS = [
    f"张三,{make_id(1)},13800000001,3幢2单元1203室,业主,2024-03-01,p0.jpg,E1\n",
    f"李四,{make_id(2)},13800000002,三幢二单元1203,家属,2024-03-01,p1.jpg,E2\n",
    f"王五,{make_id(3)},13800000003,3号楼2单元1204,租户,2024-05-01,p2.jpg,\n",
    f"赵六,{make_id(4)},,3-2-1205,tenant,,hanks.jpg,E4\n",
]


def empty_tables(url: str) -> None:
    """Delete every row (children first), keeping the migrated schema."""
    from sqlalchemy import MetaData

    from server.db import make_engine

    engine = make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in reversed(meta.sorted_tables):
            if table.name != "alembic_version":
                conn.execute(table.delete())
    engine.dispose()


def add_second_photos(folder: Path, photo_bytes: dict[str, bytes]) -> Path:
    """Second photos of one person (another file): p0b (p0 mirrored), p0c (p0 darker),
    p1b (p1 mirrored)."""
    variants = (
        ("p0.jpg", "p0b.jpg", lambda im: cv2.flip(im, 1)),
        ("p0.jpg", "p0c.jpg", lambda im: (im * 0.75).astype(np.uint8)),
        ("p1.jpg", "p1b.jpg", lambda im: cv2.flip(im, 1)),
    )
    for src, variant, change in variants:
        image = cv2.imdecode(np.frombuffer(photo_bytes[src], np.uint8), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", change(image), [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        (folder / variant).write_bytes(buf.tobytes())
    return folder
