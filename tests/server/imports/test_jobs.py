"""Web import jobs on SQLite and PostgreSQL: dry run, apply, refusals, the real face engine."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from openpyxl import Workbook
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from registry.report import ImportReport
from server.audit.models import AuditEvent
from server.db import make_session_factory, utcnow
from server.errors import Conflict, InvalidInput
from server.imports import runner as runner_module
from server.imports import service
from server.imports.enums import ImportStatus
from server.imports.models import ImportJob
from server.imports.runner import ImportRunner
from server.notify.models import NotifyEvent
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import upsert_occupant
from server.sites.models import Site
from server.sites.service import create_site
from tests.server.conftest import TEST_SECRET
from tests.server.imports.data import (
    BAD_ROW,
    ENGINE_MODEL,
    GOOD_ROWS,
    PLAIN_ROW,
    photos_zip,
    register_csv,
)

SECRET = TEST_SECRET.encode()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def site_id(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        site = create_site(session=s, name="幸福小区", model_id=ENGINE_MODEL)
        s.commit()
        return site.id


@pytest.fixture
def runner(factory: sessionmaker[Session]) -> Iterator[ImportRunner]:
    r = ImportRunner(factory, secret=SECRET, model_id=ENGINE_MODEL)
    yield r
    r.close()


def _check(
    factory: sessionmaker[Session],
    runner: ImportRunner,
    site_id: int,
    upload: service.Upload,
    **options: bool,
) -> ImportJob:
    """Create the job as the web route does, run its dry run, return the job as stored."""
    with factory() as s:
        job = service.create_job(
            session=s, site_id=site_id, user_id=None, actor="user:7", upload=upload, **options
        )
        s.commit()
        job_id = job.id
    runner.start_check(job_id, upload).result(timeout=300)
    return _job(factory, job_id)


def _job(factory: sessionmaker[Session], job_id: int) -> ImportJob:
    with factory() as s:
        job = s.get(ImportJob, job_id)
        assert job is not None
        s.expunge(job)
        return job


def _apply(factory: sessionmaker[Session], runner: ImportRunner, job_id: int) -> ImportJob:
    with factory() as s:
        job = s.get(ImportJob, job_id)
        assert job is not None
        service.claim_apply(session=s, job=job)
        s.commit()
    runner.start_apply(job_id).result(timeout=120)
    return _job(factory, job_id)


def _occupants(factory: sessionmaker[Session], site_id: int) -> list[str]:
    with factory() as s:
        return sorted(s.scalars(select(Occupant.name).where(Occupant.site_id == site_id)))


def test_gbk_dry_run_shows_the_bad_row_and_writes_nothing(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    upload = service.Upload(
        "登记表.csv", register_csv([*GOOD_ROWS, BAD_ROW]), "p.zip", photos_zip()
    )
    job = _check(factory, runner, site_id, upload)
    assert job.status == ImportStatus.CHECKED, job.error
    assert job.dry_report is not None
    report = ImportReport.from_dict(job.dry_report)
    assert [(i.row, i.reason, i.name) for i in report.issues] == [(4, "bad_role", "王五")]
    assert "房东的朋友" in report.issues[0].message
    assert report.summary.created == 2 and report.summary.failed == 1
    assert report.enrolled_photos == 2 and job.done == job.total == 2
    assert report.dry_run and not report.written and report.source == "登记表.csv"
    assert _occupants(factory, site_id) == []
    with factory() as s:
        detail = s.scalars(select(AuditEvent.detail).where(AuditEvent.action == "registry.import"))
        assert [(d["dry_run"], d["web_job"]) for d in detail] == [(True, job.id)]
    # All or nothing: a dry run with a bad row cannot be applied unless partial was chosen.
    with factory() as s, pytest.raises(Conflict, match="partial"):
        service.claim_apply(session=s, job=s.get(ImportJob, job.id))  # type: ignore[arg-type]
    # The report the page offers for download is the CLI's CSV, formula-escaped.
    assert report.to_csv().splitlines()[1].startswith("4,身份,bad_role,")


def test_apply_writes_what_the_dry_run_showed_and_bumps_the_gallery(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    upload = service.Upload("reg.csv", register_csv(GOOD_ROWS, "utf-8"), "p.zip", photos_zip())
    job = _check(factory, runner, site_id, upload)
    assert job.status == ImportStatus.CHECKED, job.error
    assert runner.held(job.id) is not None
    with factory() as s:
        before = s.scalar(select(Site.gallery_version).where(Site.id == site_id))
    job = _apply(factory, runner, job.id)
    assert job.status == ImportStatus.APPLIED, job.error
    assert job.report is not None and job.report["written"] and not job.report["dry_run"]
    assert job.report["summary"] == job.dry_report["summary"]  # type: ignore[index]
    assert _occupants(factory, site_id) == ["张三", "李四"]
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(FaceTemplate)) == 2
        version = s.scalar(select(Site.gallery_version).where(Site.id == site_id))
        assert before is not None and version == before + 1 == job.gallery_version
        kinds = s.scalars(select(NotifyEvent.kind).where(NotifyEvent.site_id == site_id))
        assert list(kinds) == ["import.finished"]
        applied = s.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.action == "registry.import")
            .order_by(AuditEvent.id)
        ).all()
        assert applied[-1]["created"] == 2 and applied[-1]["templates"] == 2
    assert runner.held(job.id) is None  # the faces are dropped once applied
    with factory() as s, pytest.raises(Conflict):
        service.claim_apply(session=s, job=s.get(ImportJob, job.id))  # type: ignore[arg-type]


def test_a_register_changed_after_the_dry_run_is_refused(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    upload = service.Upload("reg.csv", register_csv([PLAIN_ROW]))
    job = _check(factory, runner, site_id, upload)
    assert job.status == ImportStatus.CHECKED, job.error
    with factory() as s:  # someone edits the register meanwhile
        upsert_occupant(session=s, site_id=site_id, name="钱七", role="owner", external_id="X9")
        s.commit()
    job = _apply(factory, runner, job.id)
    assert job.status == ImportStatus.STALE
    assert job.error is not None and "new dry run" in job.error
    assert _occupants(factory, site_id) == ["钱七"]  # nothing written


def test_partial_applies_the_good_rows_only(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    upload = service.Upload("reg.csv", register_csv([PLAIN_ROW, BAD_ROW]))
    job = _check(factory, runner, site_id, upload, partial=True)
    assert job.status == ImportStatus.CHECKED, job.error
    job = _apply(factory, runner, job.id)
    assert job.status == ImportStatus.APPLIED, job.error
    assert _occupants(factory, site_id) == ["赵六"]
    assert job.report is not None and job.report["summary"]["failed"] == 1


def test_without_the_face_engine_photos_are_refused_and_a_plain_register_imports(
    factory: sessionmaker[Session],
    runner: ImportRunner,
    site_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as on a lean [server] install: ONNX Runtime is not there to find
    monkeypatch.setattr(runner_module.face.importlib.util, "find_spec", lambda name: None)
    assert not runner_module.engine_available()
    with factory() as s, pytest.raises(InvalidInput, match="needs the face engine"):
        service.create_job(
            session=s,
            site_id=site_id,
            user_id=None,
            actor="user:7",
            upload=service.Upload("reg.csv", register_csv(GOOD_ROWS), "p.zip", photos_zip()),
            engine_available=runner_module.engine_available(),
        )
    # A register naming photos without a zip fails in the importer's words, nothing written.
    named = _check(factory, runner, site_id, service.Upload("reg.csv", register_csv(GOOD_ROWS)))
    assert named.status == ImportStatus.FAILED and "photos" in (named.error or "")
    plain = _check(factory, runner, site_id, service.Upload("reg.csv", register_csv([PLAIN_ROW])))
    assert _apply(factory, runner, plain.id).status == ImportStatus.APPLIED
    assert _occupants(factory, site_id) == ["赵六"]


def test_bad_uploads_are_refused_before_anything_runs(
    factory: sessionmaker[Session], site_id: int
) -> None:
    with factory() as s:
        for upload, words in (
            (service.Upload("reg.pdf", b"%PDF"), ".csv or .xlsx"),
            (service.Upload("", b""), "choose the register"),
        ):
            with pytest.raises(InvalidInput, match=words):
                service.create_job(
                    session=s, site_id=site_id, user_id=None, actor="user:7", upload=upload
                )
        assert s.scalar(select(func.count()).select_from(ImportJob)) == 0


def test_an_unreadable_register_fails_the_job_with_the_readers_words(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    job = _check(factory, runner, site_id, service.Upload("reg.xlsx", b"not a workbook"))
    assert job.status == ImportStatus.FAILED
    assert job.error is not None and "reg.xlsx" in job.error and "XLSX" in job.error
    assert "lintel-import-" not in job.error  # the temporary path is not shown


def test_an_unapplied_dry_run_expires_and_its_faces_are_dropped(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    upload = service.Upload("reg.csv", register_csv([PLAIN_ROW]))
    job = _check(factory, runner, site_id, upload)
    assert runner.held(job.id) is not None
    later = utcnow() + service.HOLD + timedelta(seconds=1)
    with factory() as s:
        assert service.expire(session=s, now=later) == 1
        s.commit()
    assert _job(factory, job.id).status == ImportStatus.EXPIRED
    held = runner.held(job.id)
    assert held is not None
    runner._held[job.id] = type(held)(**{**_fields(held), "expires_at": utcnow()})
    assert runner.held(job.id) is None


def _fields(checked: service.Checked) -> dict[str, object]:
    return {f: getattr(checked, f) for f in checked.__slots__}  # type: ignore[attr-defined]


def test_a_job_whose_process_died_is_failed_not_left_running(
    factory: sessionmaker[Session], site_id: int
) -> None:
    with factory() as s:
        job = service.create_job(
            session=s,
            site_id=site_id,
            user_id=None,
            actor="user:7",
            upload=service.Upload("reg.csv", register_csv([PLAIN_ROW])),
        )
        s.commit()  # never started: as if the process ended before its thread ran
        assert service.expire(session=s, now=utcnow() + service.SILENT / 2) == 0
        assert service.expire(session=s, now=utcnow() + service.SILENT * 2) == 1
        s.commit()
    stored = _job(factory, job.id)
    assert stored.status == ImportStatus.FAILED and "nothing was written" in (stored.error or "")


def test_sync_moves_out_who_the_file_leaves_out_as_the_dry_run_said(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    with factory() as s:
        upsert_occupant(session=s, site_id=site_id, name="钱七", role="owner", external_id="X9")
        s.commit()
    job = _check(
        factory, runner, site_id, service.Upload("r.csv", register_csv([PLAIN_ROW])), sync=True
    )
    assert job.dry_report is not None and job.dry_report["summary"]["moved_out"] == 1
    assert job.changes is not None
    assert job.changes["move_out"] == [["钱七", ""]] and job.changes["n_move_out"] == 1
    assert job.changes["add"] == [[2, "赵六", "3幢2单元1206室"]] and job.changes["n_change"] == 0
    assert _apply(factory, runner, job.id).status == ImportStatus.APPLIED
    with factory() as s:
        status = dict(s.execute(select(Occupant.name, Occupant.status)).all())
    assert status == {"钱七": "moved_out", "赵六": "active"}


def test_an_xlsx_register_imports_like_a_csv(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for line in register_csv([PLAIN_ROW], "utf-8").decode().splitlines():
        sheet.append(line.split(","))
    buf = io.BytesIO()
    workbook.save(buf)
    job = _check(factory, runner, site_id, service.Upload("登记表.xlsx", buf.getvalue()))
    assert job.status == ImportStatus.CHECKED, job.error
    assert _apply(factory, runner, job.id).status == ImportStatus.APPLIED
    assert _occupants(factory, site_id) == ["赵六"]


def test_a_known_photo_filed_under_another_person_is_enrolled_again(
    factory: sessionmaker[Session],
    runner: ImportRunner,
    site_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = _check(
        factory,
        runner,
        site_id,
        service.Upload("r.csv", register_csv([GOOD_ROWS[0]]), "p.zip", photos_zip()),
    )
    assert _apply(factory, runner, first.id).status == ImportStatus.APPLIED
    # The office swaps: 张三 now has Yao's photo and a new person 李四 has the photo
    # the site knows as 张三's. The known photo was skipped, so its face is needed after
    # all (FacesNeeded): the dry run enrols every photo again, as the CLI does.
    swapped = [
        GOOD_ROWS[0].replace("hanks.jpg", "yao.jpg"),
        GOOD_ROWS[1].replace("yao.jpg", "hanks.jpg"),
    ]
    upload = service.Upload("r.csv", register_csv(swapped), "p.zip", photos_zip())
    with caplog.at_level(logging.INFO, logger="server.imports.service"):
        job = _check(factory, runner, site_id, upload)
    assert "need their faces" in caplog.text
    assert job.status == ImportStatus.CHECKED, job.error
    assert job.dry_report is not None and not job.dry_report["issues"]
    summary = job.dry_report["summary"]
    assert (summary["created"], summary["updated"]) == (1, 1)
    assert job.dry_report["enrolled_photos"] == 2
    assert _apply(factory, runner, job.id).status == ImportStatus.APPLIED
    with factory() as s:
        count = s.scalar(select(func.count()).select_from(FaceTemplate))
    assert count == 2  # 张三's old template replaced, 李四's added


def test_a_process_holds_a_bounded_number_of_dry_runs(
    factory: sessionmaker[Session], runner: ImportRunner, site_id: int
) -> None:
    upload = service.Upload("reg.csv", register_csv([PLAIN_ROW]))
    jobs = [_check(factory, runner, site_id, upload).id for _ in range(runner_module.MAX_HELD + 1)]
    assert runner.held(jobs[0]) is None  # the oldest was dropped
    assert all(runner.held(j) is not None for j in jobs[1:])


def test_two_dry_runs_of_one_register_applied_at_once_write_only_one(
    factory: sessionmaker[Session], site_id: int
) -> None:
    # Two server processes (two runners), each holding a dry run made from the same register.
    runners = [ImportRunner(factory, secret=SECRET, model_id=ENGINE_MODEL) for _ in range(2)]
    try:
        jobs = []
        for runner, row in zip(
            runners, (PLAIN_ROW, BAD_ROW.replace("房东的朋友", "租户")), strict=True
        ):
            job = _check(factory, runner, site_id, service.Upload("r.csv", register_csv([row])))
            assert job.status == ImportStatus.CHECKED, job.error
            jobs.append(job.id)
        with factory() as s:
            for job_id in jobs:
                service.claim_apply(session=s, job=s.get(ImportJob, job_id))  # type: ignore[arg-type]
            s.commit()
        futures = [r.start_apply(j) for r, j in zip(runners, jobs, strict=True)]
        for f in futures:
            f.result(timeout=120)
        states = sorted(_job(factory, j).status for j in jobs)
        assert states == [ImportStatus.APPLIED, ImportStatus.STALE]
        assert len(_occupants(factory, site_id)) == 1
    finally:
        for r in runners:
            r.close()
