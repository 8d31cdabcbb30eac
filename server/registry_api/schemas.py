"""Wire schemas of the remote registry import (client: ``lintel-registry import --server``).

The client sends the registry file as read (column headers and raw cells,
ID numbers included: only the server holds the key that hashes them) and the
faces it enrolled from the photos, which never leave the property office.
The response is the same report the local import prints.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from edge.wire import decode_embedding
from registry.columns import COLUMNS
from registry.reader import MAX_ROWS
from registry.validate import MAX_PHOTOS
from server.embeddings import check_embedding
from server.errors import InvalidInput
from server.occupants.chips import MAX_CHIP_BYTES, check_chip

COLUMN_KEYS = frozenset(c.key for c in COLUMNS)
CHIP_B64_CHARS = (MAX_CHIP_BYTES + 2) // 3 * 4
MAX_CELL_CHARS = 1000

Text = Annotated[str, StringConstraints(max_length=MAX_CELL_CHARS)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MAX_FACES = MAX_ROWS * MAX_PHOTOS


def _no_nul(text: str) -> str:
    # PostgreSQL refuses NUL in text (a 500); no registry value has one.
    if "\x00" in text:
        raise ValueError("NUL characters are not allowed")
    return text


class RowIn(BaseModel):
    """One data row: ``number`` as Excel shows it, ``cells`` keyed by column key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(ge=1, le=10_000_000)
    cells: dict[str, bool | int | float | Text | None] = Field(
        description="Column key -> cell value (dates as ISO text)."
    )

    @field_validator("cells")
    @classmethod
    def _known_keys(
        cls, cells: dict[str, bool | int | float | str | None]
    ) -> dict[str, bool | int | float | str | None]:
        unknown = set(cells) - COLUMN_KEYS
        if unknown:
            raise ValueError(f"unknown column keys: {sorted(unknown)[:5]}")
        for value in cells.values():
            if isinstance(value, str):
                _no_nul(value)
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError("cells hold no NaN or infinite numbers")
        return cells


class TemplateIn(BaseModel):
    """The face the client enrolled from one photo of a row (one entry per photo)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=1)
    embedding_b64: str = Field(
        max_length=8192, description="edge.wire.encode_embedding: float32 LE, unit length."
    )
    model_id: str = Field(min_length=1, max_length=128)
    quality: float = Field(ge=0.0, le=1.0)
    photo_sha256: Sha256 = Field(description="SHA-256 of the photo file (re-imports skip it).")
    photo: str | None = Field(
        default=None,
        max_length=MAX_CELL_CHARS,
        description="The file name as the row gives it (sent for rows of several photos).",
    )
    chip_b64: str | None = Field(
        default=None,
        max_length=CHIP_B64_CHARS,
        description="Base64 of the aligned face as a JPEG (edge.face.engine.face_chip): kept "
        "sealed for the desk check unless the site keeps photos in the office only.",
    )

    @field_validator("chip_b64")
    @classmethod
    def _chip(cls, text: str | None) -> str | None:
        if text is None:
            return None
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("chip_b64 is not valid base64") from exc
        try:
            check_chip(raw)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from exc
        return text

    @field_validator("embedding_b64")
    @classmethod
    def _embedding(cls, text: str) -> str:
        # Finite and unit length here (ValueError -> 422); the size against the
        # model's is checked by the route, which knows the site (check_templates).
        check_embedding(decode_embedding(text), dim=None)
        return text

    @field_validator("model_id")
    @classmethod
    def _model(cls, text: str) -> str:
        return _no_nul(text)

    @field_validator("photo")
    @classmethod
    def _photo(cls, text: str | None) -> str | None:
        return None if text is None else _no_nul(text)


class PhotoIssueIn(BaseModel):
    """A row whose photo the client could not enrol (unreadable, no face, two faces...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=1)
    reason: str = Field(pattern=r"^[a-z_]{1,40}$")
    message: str = Field(max_length=MAX_CELL_CHARS)

    @field_validator("message")
    @classmethod
    def _message(cls, text: str) -> str:
        return _no_nul(text)


class KnownPhotoIn(BaseModel):
    """A photo of a row the client did not enrol: the site already had that photo."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=1)
    photo_sha256: Sha256
    photo: str | None = Field(
        default=None,
        max_length=MAX_CELL_CHARS,
        description="The file name as the row gives it (sent for rows of several photos).",
    )

    @field_validator("photo")
    @classmethod
    def _photo(cls, text: str | None) -> str | None:
        return None if text is None else _no_nul(text)


class RegistryPhotosOut(BaseModel):
    """The site's gallery model and the SHA-256 of every photo its registry templates
    come from (of that model): photos the client need not enrol again."""

    model_config = ConfigDict(extra="forbid")

    model_id: str | None = Field(description="None: the site does not exist yet.")
    photo_sha256: list[str]


class RegistryImportIn(BaseModel):
    """One whole registry file and its enrolled faces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(max_length=500, description="The file name, for the report and audit.")
    columns: dict[str, Text] = Field(
        description="Column key -> header as written in the file (row issues name it)."
    )
    rows: list[RowIn] = Field(min_length=1, max_length=MAX_ROWS)
    templates: list[TemplateIn] = Field(
        default_factory=list,
        max_length=MAX_FACES,
        description="One entry per enrolled photo (a row of several photos has several).",
    )
    photo_issues: list[PhotoIssueIn] = Field(default_factory=list, max_length=MAX_FACES)
    known_photos: list[KnownPhotoIn] = Field(
        default_factory=list,
        max_length=MAX_FACES,
        description="Photos the site already holds (GET .../registry/photos); a row whose "
        "occupant has no template of that photo answers 409 faces_needed.",
    )
    model_id: str = Field(
        min_length=1,
        max_length=128,
        description="The client's face model: a new site's gallery model when no face is sent.",
    )
    allow_same_face: bool = Field(
        default=False, description="Accept a face (nearly) another occupant's (refused by default)."
    )

    @field_validator("source", "model_id")
    @classmethod
    def _text(cls, text: str) -> str:
        return _no_nul(text)

    @field_validator("columns")
    @classmethod
    def _columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = set(columns) - COLUMN_KEYS
        if unknown:
            raise ValueError(f"unknown column keys: {sorted(unknown)[:5]}")
        for header in columns.values():
            _no_nul(header)
        return columns

    @field_validator("rows")
    @classmethod
    def _rows(cls, rows: list[RowIn]) -> list[RowIn]:
        if len({r.number for r in rows}) != len(rows):
            raise ValueError("row numbers must be unique")
        return rows


class RowIssueOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    row: int
    column: str
    reason: str
    message: str
    name: str = ""


class SummaryOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    moved_out: int = 0
    failed: int = 0


class ImportReportOut(BaseModel):
    """:meth:`registry.report.ImportReport.to_dict` plus the gallery version after it."""

    model_config = ConfigDict(extra="forbid")

    source: str
    site: str
    rows: int
    dry_run: bool
    partial: bool
    written: bool
    enrolled_photos: int
    new_site: bool
    unchanged_photos: int = 0
    failed_photos: int = 0
    summary: SummaryOut
    issues: list[RowIssueOut]
    warnings: list[RowIssueOut] = []
    """Rows imported but worth a look (``poor_photo``); an older server sends none."""
    gallery_version: int | None = None
