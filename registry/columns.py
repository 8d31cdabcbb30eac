"""The registry file's columns: canonical keys, Chinese and English headers, docs.

One table drives the header mapping, the template and its documentation, so
they cannot drift apart.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from registry.errors import InputError


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    zh: str
    aliases: tuple[str, ...]
    required: str
    """'yes', 'no', or a short rule ('if no external_id')."""
    doc_zh: str
    doc_en: str
    example: tuple[str, str]
    """Two example values (the template's two sample rows)."""


COLUMNS: tuple[Column, ...] = (
    Column(
        "name",
        "姓名",
        ("名字", "住户姓名", "full name"),
        "yes",
        "住户姓名",
        "Occupant's name",
        ("张三", "李四"),
    ),
    Column(
        "id_number",
        "证件号码",
        ("身份证号", "身份证号码", "身份证", "证件号", "id", "id no", "id_no"),
        "if no external_id",
        "18位居民身份证号码（校验位可为X）；只保存加密哈希和后四位",
        "18-character resident ID number (last char may be X); stored only as a keyed "
        "hash plus the last 4 characters",
        ("11010519491231002X", ""),
    ),
    Column(
        "phone",
        "手机",
        ("手机号", "手机号码", "电话", "联系电话", "mobile", "phone number"),
        "no",
        "11位手机号，可带+86",
        "11-digit mainland mobile number, +86 optional",
        ("13812345678", "+86 139 0000 1234"),
    ),
    Column(
        "address",
        "地址或房号",
        ("地址", "住址", "房屋地址", "门牌", "门牌号", "unit", "unit address"),
        "if no building/room",
        "如 3幢2单元1203室、3号楼2单元1203、3-2-1203；或改填楼栋/单元/房号三列",
        "e.g. 3幢2单元1203室, 3号楼2单元1203, 3-2-1203; or fill building/entrance/room",
        ("3幢2单元1203室", ""),
    ),
    Column(
        "building",
        "楼栋",
        ("楼号", "楼幢", "幢", "栋", "幢号"),
        "if no address",
        "楼栋号，如 3、三幢、3号楼、A座",
        "Building, e.g. 3, 三幢, 3号楼, A座",
        ("", "3号楼"),
    ),
    Column(
        "entrance",
        "单元",
        ("单元号", "门洞"),
        "no",
        "单元号，如 2、二单元；无单元可空",
        "Entrance (单元), empty if the building has none",
        ("", "2单元"),
    ),
    Column(
        "room",
        "房号",
        ("室", "房间号", "户号", "房间"),
        "if no address",
        "房号，如 1203、1203室",
        "Room, e.g. 1203",
        ("", "1203"),
    ),
    Column(
        "role",
        "身份",
        ("类型", "人员类型", "住户类型", "关系", "住户身份"),
        "yes",
        "业主 / 租户 / 家属",
        "owner / tenant / family (or 业主/租户/家属)",
        ("业主", "tenant"),
    ),
    Column(
        "move_in",
        "入住日期",
        ("入住时间", "入住", "move in", "move_in_date"),
        "no",
        "入住日期 YYYY-MM-DD",
        "Move-in date, YYYY-MM-DD",
        ("2024-03-01", "2024/10/15"),
    ),
    Column(
        "photo",
        "照片",
        ("照片文件", "照片路径", "人脸照片", "photo file", "picture"),
        "no",
        "照片文件名或相对路径（在 --photos 目录或 zip 中）；每张照片须恰好一张清晰正脸；"
        "建议每人 2 张（1 张也可），最多 3 张，用 ; 分隔（如 a.jpg;b.jpg），多张照片可减少误报",
        "Photo file name or relative path inside --photos (folder or zip); exactly one "
        "clear face per photo; two photos of the person are recommended (one works), up to "
        "3, separated by ';' (a.jpg;b.jpg), each its own template: fewer residents missed",
        # Two photos per person: the recommended standard (one still works).
        ("zhangsan-1.jpg;zhangsan-2.jpg", "photos/lisi-1.png;photos/lisi-2.png"),
    ),
    Column(
        "external_id",
        "外部编号",
        ("编号", "人员编号", "住户编号", "external id", "ext_id"),
        "if no id_number",
        "物业系统中的住户编号；有则按它匹配更新",
        "The occupant's id in the property system; rows are matched on it first",
        ("P-0001", "P-0002"),
    ),
)

BY_KEY: dict[str, Column] = {c.key: c for c in COLUMNS}


def _norm_header(text: str) -> str:
    """Fold a header for matching: width, case, spaces, '*' marks, '(必填)' notes."""
    value = unicodedata.normalize("NFKC", text).strip().lower()
    value = re.sub(r"[(\[].*?[)\]]", "", value)  # "姓名(必填)", "name [required]"
    value = value.replace("*", "").replace("_", " ")
    return re.sub(r"\s+", " ", value).strip()


_LOOKUP: dict[str, str] = {}
for _col in COLUMNS:
    for _name in (_col.key, _col.zh, *_col.aliases):
        _LOOKUP[_norm_header(_name)] = _col.key


def match_header(text: str) -> str | None:
    """The canonical key for one header cell, or None when it is not a registry column.

    A bilingual header such as ``姓名 name`` or ``姓名/name`` is accepted too.
    """
    norm = _norm_header(text)
    if norm in _LOOKUP:
        return _LOOKUP[norm]
    parts = [p for p in re.split(r"[/|\s]+", norm) if p]
    keys = {_LOOKUP.get(p) for p in parts}
    if len(keys) == 1 and None not in keys:
        return keys.pop()
    return None


def map_headers(headers: Sequence[str]) -> tuple[dict[int, str], tuple[str, ...]]:
    """Map header cells to keys: ``({column index: key}, ignored headers)``.

    Raises InputError when a column appears twice or required columns are missing.
    """
    mapping: dict[int, str] = {}
    seen: dict[str, str] = {}
    ignored: list[str] = []
    for index, header in enumerate(headers):
        if not header.strip():
            continue
        key = match_header(header)
        if key is None:
            ignored.append(header)
            continue
        if key in seen:
            raise InputError(
                f"columns {seen[key]!r} and {header!r} both mean {key!r}; keep one of them"
            )
        seen[key] = header
        mapping[index] = key
    check_required(mapping.values(), headers)
    return mapping, tuple(ignored)


def check_required(keys: Iterable[str], headers: Sequence[str]) -> None:
    """Raise InputError naming every required column that is missing."""
    present = set(keys)
    missing: list[str] = []
    for key in ("name", "role"):
        if key not in present:
            missing.append(f"{BY_KEY[key].zh}/{key}")
    if "address" not in present and not {"building", "room"} <= present:
        missing.append("地址或房号/address (or 楼栋/building + 房号/room)")
    if "id_number" not in present and "external_id" not in present:
        missing.append("证件号码/id_number or 外部编号/external_id")
    if missing:
        found = ", ".join(repr(h) for h in headers if h.strip()) or "none"
        raise InputError(
            f"missing column(s): {'; '.join(missing)}. Headers found: {found}. "
            "Run 'lintel-registry template' for an example file."
        )
