"""``lintel-registry import --server URL``: send an import to a Lintel server's API.

Photos are read and enrolled here, on the machine that has them; only the
rows (as read from the file, ID numbers included: only the server holds the
key that hashes them, and TLS protects them in transit) and the faces
(embeddings, model id, quality, the photo's SHA-256) travel, in ONE request to
``POST /api/v1/sites/{site}/registry/import``. The server plans and writes with
the same code as the local ``--db`` import and answers with the report, which
the CLI prints and writes exactly as in local mode. Photos the site already
holds (by SHA-256, asked first) are not enrolled again, as in local mode. A
row of several photos sends one face per photo, each naming its file (a
server older than multi-photo rows refuses that field rather than keep one).

No chunking: one file is one request and one transaction, so all-or-nothing,
duplicate checks across rows and ``--sync`` keep their meaning. The server's
``max_import_body_bytes`` bounds the request (about 3.1 KB a row with a face:
~20,000 such rows at the default 64 MiB); a larger register needs a larger
limit on the server (``LINTEL_MAX_IMPORT_BODY_BYTES``) or the local import on
the server host.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from edge.wire import API_PREFIX, encode_embedding
from registry.errors import FacesNeeded, RemoteError
from registry.importer import KnownPhoto, PhotoFailure, PhotoOutcome
from registry.reader import CellValue, Sheet
from registry.report import ImportReport, RowIssue, Summary

log = logging.getLogger(__name__)

TOKEN_ENV = "LINTEL_API_TOKEN"
# Connecting is quick or hopeless; the server plans and writes a whole register.
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


@dataclass(frozen=True, slots=True)
class RemoteResult:
    report: ImportReport
    gallery_version: int | None


def import_url(server: str, site: str) -> str:
    """The import endpoint of ``server`` for ``site`` (any site name, slashes included)."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(
            f"--server {server!r}: give the server's URL, e.g. https://lintel.example"
        )
    return f"{server.rstrip('/')}{API_PREFIX}/sites/{quote(site, safe='')}/registry/import"


def _cell(value: CellValue) -> str | int | float | bool | None:
    """A cell as JSON; dates as the text :func:`registry.reader.cell_text` would give."""
    if isinstance(value, datetime):
        return (
            value.date().isoformat()
            if value.time() == time()
            else value.isoformat(timespec="seconds")
        )
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class SitePhotos:
    """What the server already holds of a site: its gallery model and registry photos."""

    model_id: str | None
    photo_sha256: frozenset[str]


def site_photos(
    *, server: str, token: str, site: str, transport: httpx.BaseTransport | None = None
) -> SitePhotos:
    """``GET .../registry/photos``: the photos not worth enrolling again (empty: new site)."""
    url = import_url(server, site).removesuffix("/import") + "/photos"
    response = _request("GET", url, server, token, transport)
    if response.status_code == 404 and _code(response) != "not_found":
        return SitePhotos(None, frozenset())  # an older server: enrol every photo
    if response.status_code != 200:
        raise RemoteError(_explain(response, server, site))
    try:
        data = response.json()
        return SitePhotos(data["model_id"], frozenset(str(s) for s in data["photo_sha256"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"{server}: the answer is not a list of photos ({exc})") from None


def build_payload(
    sheet: Sheet,
    faces: Mapping[int, Sequence[PhotoOutcome]],
    *,
    model_id: str,
    allow_same_face: bool,
) -> dict[str, Any]:
    """The request body (see ``server.registry_api.schemas.RegistryImportIn``)."""
    templates: list[dict[str, Any]] = []
    issues: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for row, outcomes in sorted(faces.items()):
        failures = [o for o in outcomes if isinstance(o, PhotoFailure)]
        if failures:  # the row fails: its faces are not worth sending
            issues.extend({"row": row, "reason": f.reason, "message": f.message} for f in failures)
            continue
        # Rows of several photos name each file: a server older than multi-photo rows
        # refuses the unknown field instead of keeping one photo of the row.
        several = len(outcomes) > 1
        for outcome in outcomes:
            if isinstance(outcome, PhotoFailure):
                continue
            name = {"photo": outcome.photo} if several else {}
            if isinstance(outcome, KnownPhoto):
                known.append({"row": row, "photo_sha256": outcome.photo_sha256, **name})
            else:
                templates.append(
                    {
                        "row": row,
                        "embedding_b64": encode_embedding(outcome.embedding),
                        "model_id": outcome.model_id,
                        "quality": min(1.0, max(0.0, float(outcome.quality))),
                        "photo_sha256": outcome.photo_sha256,
                        **name,
                        # The face chip for the server's desk check (an older server
                        # refuses the unknown field: leave it out when there is none).
                        **(
                            {"chip_b64": base64.b64encode(outcome.chip).decode()}
                            if outcome.chip
                            else {}
                        ),
                    }
                )
    return {
        "source": sheet.source,
        "columns": dict(sheet.columns),
        "rows": [
            {"number": r.number, "cells": {k: _cell(v) for k, v in r.cells.items()}}
            for r in sheet.rows
        ],
        "templates": templates,
        "photo_issues": issues,
        "known_photos": known,
        "model_id": model_id,
        "allow_same_face": allow_same_face,
    }


def upload(
    payload: Mapping[str, Any],
    *,
    server: str,
    token: str,
    site: str,
    dry_run: bool,
    partial: bool,
    sync: bool,
    transport: httpx.BaseTransport | None = None,
) -> RemoteResult:
    """POST the import; the server's report, or :class:`RemoteError` with a clear reason.

    :class:`~registry.errors.FacesNeeded` when the server needs the faces of photos
    the client skipped as known (nothing was written; enrol them and send again).
    """
    url = import_url(server, site)
    params = {"dry_run": _flag(dry_run), "partial": _flag(partial), "sync": _flag(sync)}
    response = _request("POST", url, server, token, transport, params=params, json=payload)
    if response.status_code == 409 and _code(response) == "faces_needed":
        rows = response.json().get("rows", [])
        raise FacesNeeded(tuple(int(r) for r in rows))
    if response.status_code != 200:
        raise RemoteError(_explain(response, server, site))
    try:
        return _result(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise RemoteError(f"{server}: the answer is not an import report ({exc})") from None


def _request(
    method: str,
    url: str,
    server: str,
    token: str,
    transport: httpx.BaseTransport | None,
    **kwargs: Any,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    client = httpx.Client(timeout=TIMEOUT, transport=transport)
    try:
        return client.request(method, url, headers=headers, **kwargs)
    except httpx.TimeoutException:
        raise RemoteError(
            f"{server}: no answer in time; the import may still finish on the server "
            "(re-running it is safe: an unchanged file changes nothing)"
        ) from None
    except httpx.HTTPError as exc:  # refused, DNS, TLS
        raise RemoteError(f"cannot reach the server {server}: {exc}") from None
    finally:
        if transport is None:  # closing the client closes a caller's transport too
            client.close()


def _code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors
        parts = [
            f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg', '')}"
            for d in detail[:3]
            if isinstance(d, dict)
        ]
        return "; ".join(parts) or "invalid request"
    return str(detail) if detail else response.reason_phrase


def _explain(response: httpx.Response, server: str, site: str) -> str:
    status, detail = response.status_code, _detail(response)
    if status == 401:
        return (
            f"{server} refused the API token ({detail}); give a valid one with --token or "
            f"{TOKEN_ENV} (`lintel-server user add` prints one)"
        )
    if status == 403:
        return f"not allowed to import into site {site!r}: {detail}"
    if status == 404 and _code(response) == "not_found":
        # The server answers a missing site and another tenant's site alike.
        return (
            f"not allowed to import into site {site!r}: it does not exist, or your account "
            f"may not see it ({detail})"
        )
    if status == 404:
        return f"{server} has no registry import endpoint (an older Lintel?) or: {detail}"
    if status == 413:
        size = len(response.request.content) / (1024 * 1024)
        return (
            f"the import ({size:.1f} MiB) is larger than {server} accepts ({detail}); raise "
            "LINTEL_MAX_IMPORT_BODY_BYTES on the server, or run the import on the server host "
            "with --db"
        )
    if status == 422 and ".photo:" in detail and "xtra" in detail:
        # A server older than multi-photo rows refuses the file name of each photo.
        return (
            f"{server} refused the import: several photos per row need a local import or "
            f"a newer server ({detail})"
        )
    if status in (409, 422):
        return f"{server} refused the import: {detail}"
    return f"{server} answered HTTP {status}: {detail}"


def _result(data: dict[str, Any]) -> RemoteResult:
    issues = tuple(
        RowIssue(i["row"], i["column"], i["reason"], i["message"], i.get("name", ""))
        for i in data["issues"]
    )
    warnings = tuple(  # an older server sends none
        RowIssue(i["row"], i["column"], i["reason"], i["message"], i.get("name", ""))
        for i in data.get("warnings", [])
    )
    report = ImportReport(
        source=data["source"],
        site=data["site"],
        rows=data["rows"],
        dry_run=data["dry_run"],
        partial=data["partial"],
        written=data["written"],
        summary=Summary(**data["summary"]),
        issues=issues,
        enrolled_photos=data["enrolled_photos"],
        new_site=data["new_site"],
        # An older server does not count photos.
        unchanged_photos=int(data.get("unchanged_photos", 0)),
        failed_photos=int(data.get("failed_photos", 0)),
        warnings=warnings,
    )
    version = data.get("gallery_version")
    return RemoteResult(report, int(version) if version is not None else None)
