"""Register import in the browser: upload, dry run with the row-level report, apply.

The page takes the register (CSV in UTF-8 or GBK, or XLSX) and the photos zip,
and runs the dry run in the background (:mod:`server.imports.runner`); the job
page shows its progress (a ``<progress>`` a small script polls; without
script the page refreshes itself), then the same report as ``lintel-registry
import --dry-run``: every bad row with its reason, what would be created,
updated, left unchanged and moved out. Apply writes exactly that plan, or
refuses if the register changed meanwhile. The report downloads as the CLI's
CSV; the template downloads as the CLI's ``template`` writes it.

Managers of the site and admins only (viewers and other sites' managers get
403/404); every POST carries the session's CSRF token. The upload is capped at
``max_import_body_bytes`` (the JSON import's cap), checked before any byte of
the body is read, and only for a logged-in manager's or admin's session.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Scope

from registry.report import ImportReport
from registry.template import write_template
from server.deps import FormDep, SessionDep, UploadDep, UserDep, WebUser, app_settings
from server.errors import InvalidInput, NotFound
from server.imports import service
from server.imports.enums import RUNNING, ImportStatus
from server.imports.models import ImportJob
from server.imports.runner import ImportRunner, engine_available
from server.settings import Settings
from server.sites.models import Site
from server.users.models import User
from server.web import queries
from server.web.errors import ReadOnly
from server.web.routes import PREFIX, WebRoute, page, zone_names
from server.web.session import read_session, session_user

router = APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)

UPLOAD_PATH = f"{PREFIX}/imports"
"""The upload route's path (its own, larger body limit: server/limits.py)."""
RECENT = 20
"""Imports listed on the page (newest first)."""


def install_imports(app: FastAPI) -> None:
    """The pages, and the process's import runner (one worker thread, started on use)."""
    settings: Settings = app.state.settings
    app.state.imports = ImportRunner(
        app.state.session_factory,
        secret=settings.secret_key.get_secret_value().encode("utf-8"),
        model_id=settings.default_model_id,
    )
    app.include_router(router)


def uploader_check(
    session_factory: Callable[[], Session], settings: Settings
) -> Callable[[Scope], bool]:
    """Whether a request may send an import-sized body: its session cookie is a logged-in
    manager's or admin's (the CSRF token and the site are checked by the route)."""

    def allow(scope: Scope) -> bool:
        if scope.get("method") != "POST":
            return False
        web = read_session(StarletteRequest(scope), settings)
        if web is None or web.sid is None:
            return False
        with session_factory() as session:
            user: User | None = session_user(session=session, web=web)
            session.rollback()
            return user is not None and user.role in ("manager", "admin")

    return allow


def _runner(request: Request) -> ImportRunner:
    runner: ImportRunner = request.app.state.imports
    return runner


def _importer(user: WebUser) -> WebUser:
    if not user.can_act:
        raise ReadOnly("only managers and admins import the register")
    return user


def _job(session: Session, user: WebUser, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None or not user.sees(job.site_id):
        raise NotFound(f"import {job_id} does not exist")
    return job


def _to_job(job_id: int) -> Response:
    return RedirectResponse(f"{PREFIX}/imports/{job_id}", status_code=303)


def _flag(fields: dict[str, str], name: str) -> bool:
    return fields.get(name) in ("1", "on", "true")


@router.get("/imports")
def imports_page(request: Request, session: SessionDep, user: UserDep) -> Response:
    """The upload form, the template downloads and the recent imports of the user's sites."""
    _importer(user)
    service.expire(session=session)
    session.commit()
    sites = queries.visible_sites(session=session, scope=user.scope)
    names = {s.id: s.name for s in sites}
    jobs = list(
        session.scalars(
            select(ImportJob)
            .where(ImportJob.site_id.in_(names))
            .order_by(ImportJob.id.desc())
            .limit(RECENT)
        )
    )
    settings = app_settings(request)
    zones = queries.site_timezones(session=session, site_ids=list(names))
    return page(
        request,
        "imports.html",
        user=user,
        active="imports",
        sites=sites,
        names=names,
        jobs=jobs,
        zones=zones,
        zone_names=zone_names(zones),
        max_mib=settings.max_import_body_bytes // (1024 * 1024),
        engine=engine_available(),
    )


def _template(ext: Literal["csv", "xlsx"], lang: Literal["zh", "en"]) -> Response:
    """The CLI's template (``lintel-registry template``): every column, two example rows."""
    with tempfile.TemporaryDirectory(prefix="lintel-template-") as folder:
        path = Path(folder) / f"registry-template.{ext}"
        write_template(path, lang)
        data = path.read_bytes()
    media = (
        "text/csv; charset=utf-8"
        if ext == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    return Response(
        data,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="registry-template-{lang}.{ext}"'},
    )


@router.get("/imports/template.xlsx")
def template_xlsx(user: UserDep, lang: Annotated[Literal["zh", "en"], Query()] = "zh") -> Response:
    """The template as an XLSX workbook (ID and phone columns formatted as text)."""
    _importer(user)
    return _template("xlsx", lang)


@router.get("/imports/template.csv")
def template_csv(user: UserDep, lang: Annotated[Literal["zh", "en"], Query()] = "zh") -> Response:
    """The template as CSV (UTF-8 with BOM, columns documented in # lines)."""
    _importer(user)
    return _template("csv", lang)


@router.post("/imports")
def start_import(request: Request, form: UploadDep, session: SessionDep, user: UserDep) -> Response:
    """Create the job and start its dry run; the job page shows it running."""
    _importer(user)
    try:
        site_id = int(form.fields.get("site", ""))
    except ValueError:
        raise InvalidInput("choose the site to import into") from None
    if not user.sees(site_id) or session.get(Site, site_id) is None:
        raise NotFound(f"site {site_id} does not exist")
    register = form.files.get("register")
    photos = form.files.get("photos")
    if register is None:
        raise InvalidInput("choose the register file (.csv or .xlsx)")
    upload = service.Upload(
        registry_name=register[0],
        registry=register[1],
        photos_name=photos[0] if photos else None,
        photos=photos[1] if photos else None,
    )
    job = service.create_job(
        session=session,
        site_id=site_id,
        user_id=user.user_id,
        actor=user.actor,
        upload=upload,
        partial=_flag(form.fields, "partial"),
        sync=_flag(form.fields, "sync"),
        allow_same_face=_flag(form.fields, "allow_same_face"),
        engine_available=engine_available(),
    )
    session.commit()
    _runner(request).start_check(job.id, upload)
    return _to_job(job.id)


def _report(data: dict[str, Any] | None) -> ImportReport | None:
    return ImportReport.from_dict(data) if data is not None else None


@router.get("/imports/{job_id}")
def job_page(request: Request, job_id: int, session: SessionDep, user: UserDep) -> Response:
    """A job: its progress while it runs, then the dry run's report and the apply."""
    _importer(user)
    job = _job(session, user, job_id)
    if job.status == ImportStatus.CHECKED and _runner(request).held(job.id) is None:
        service.lost(session=session, job=job)  # restarted, expired, or another process's
        session.commit()
    dry = _report(job.dry_report)
    zones = queries.site_timezones(session=session, site_ids=[job.site_id])
    return page(
        request,
        "import_job.html",
        user=user,
        active="imports",
        job=job,
        site_name=session.scalar(select(Site.name).where(Site.id == job.site_id)),
        dry=dry,
        zone=zones[job.site_id],
        zone_names=zone_names(zones),
        done_report=_report(job.report),
        running=job.status in RUNNING,
        can_apply=job.status == ImportStatus.CHECKED and dry is not None and service.can_apply(dry),
    )


@router.get("/imports/{job_id}/progress")
def job_progress(job_id: int, session: SessionDep, user: UserDep) -> JSONResponse:
    """What the page's script polls: the state and the photos read so far."""
    _importer(user)
    job = _job(session, user, job_id)
    return JSONResponse(
        {"status": job.status, "done": job.done, "total": job.total},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/imports/{job_id}/apply")
def apply_import(
    request: Request, job_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """Write the dry run's plan (in the background: the page shows it applying)."""
    _importer(user)
    job = _job(session, user, job_id)
    runner = _runner(request)
    if job.status == ImportStatus.CHECKED and runner.held(job.id) is None:
        service.lost(session=session, job=job)
        session.commit()
    service.claim_apply(session=session, job=job)
    session.commit()
    runner.start_apply(job.id)
    return _to_job(job.id)


@router.post("/imports/{job_id}/discard")
def discard_import(
    request: Request, job_id: int, form: FormDep, session: SessionDep, user: UserDep
) -> Response:
    """Drop a dry run without applying it (its rows and faces are forgotten at once)."""
    _importer(user)
    job = _job(session, user, job_id)
    service.discard(session=session, job=job)
    session.commit()
    _runner(request).drop(job.id)
    return _to_job(job.id)


@router.get("/imports/{job_id}/report.csv")
def report_csv(
    job_id: int,
    session: SessionDep,
    user: UserDep,
    which: Annotated[Literal["dry", "applied"], Query()] = "dry",
) -> Response:
    """The report as ``lintel-registry import --report FILE.csv`` writes it (formula-escaped)."""
    _importer(user)
    job = _job(session, user, job_id)
    report = _report(job.report if which == "applied" else job.dry_report)
    if report is None:
        raise NotFound(f"import {job_id} has no {which} report")
    # UTF-8 with BOM, as the CLI writes it, so Excel shows the Chinese.
    return Response(
        report.to_csv().encode("utf-8-sig"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="import-{job.id}-{which}.csv"',
            "Cache-Control": "no-store",
        },
    )
