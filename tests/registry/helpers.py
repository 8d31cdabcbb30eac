"""Shared test data for the registry tests (fixtures live in conftest.py)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
from openpyxl import Workbook

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


# Hostile workbooks, made by hand: the sheet XML of a real workbook is replaced.
XLSX_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
XLSX_HEADER = ["姓名", "外部编号", "地址", "身份"]


def _inline_cell(ref: str, text: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def xlsx_row(number: int, cells: list[str], extra: str = "") -> str:
    letters = "ABCD"
    inner = "".join(_inline_cell(f"{letters[i]}{number}", v) for i, v in enumerate(cells))
    return f'<row r="{number}">{inner}{extra}</row>'


def hostile_xlsx(
    path: Path, sheet_data: str, *, dimension: str | None = "A1:D3", prolog: str = ""
) -> Path:
    """A workbook whose first sheet's XML is ``prolog`` + a worksheet of ``sheet_data``."""
    workbook = Workbook()
    workbook.active.append(XLSX_HEADER)
    plain = path.with_suffix(".plain.xlsx")
    workbook.save(plain)
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    xml = (
        f'{prolog}<worksheet xmlns="{XLSX_NS}">{dim}<sheetData>{sheet_data}</sheetData></worksheet>'
    )
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = xml.encode()
            dst.writestr(info.filename, data)
    return path


XLSX_TWO_ROWS = xlsx_row(1, XLSX_HEADER) + xlsx_row(2, ["张三", "E1", "3-2-1203", "业主"])


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    + "]>"
)
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
