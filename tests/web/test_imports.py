"""The register import pages over HTTP: upload, dry run, apply, report, template, access."""

from __future__ import annotations

import csv
import io
import re

import httpx
import pytest
from fastapi import FastAPI
from openpyxl import load_workbook
from sqlalchemy import Engine, func, select

from server.app import create_app
from server.imports import runner as runner_module
from server.imports.models import ImportJob
from server.occupants.models import Occupant
from server.settings import Settings
from server.sites.models import Site
from tests.server.asgi import SyncASGITransport
from tests.server.clusters.support import new_session
from tests.server.imports.data import BAD_ROW, GOOD_ROWS, PLAIN_ROW, photos_zip, register_csv
from tests.web.imports_world import ImportWorld, build_import_world, wait_for
from tests.web.world import csrf_of, login

JOB_RE = re.compile(r"/web/imports/(\d+)$")


@pytest.fixture
def iworld(engine: Engine) -> ImportWorld:
    return build_import_world(engine)


def _upload(
    client: httpx.Client,
    site: int,
    register: bytes,
    name: str = "登记表.csv",
    photos: bytes | None = None,
    **flags: str,
) -> httpx.Response:
    token = csrf_of(client.get("/web/imports").text)
    files = {"register": (name, register, "text/csv")}
    if photos is not None:
        files["photos"] = ("photos.zip", photos, "application/zip")
    return client.post(
        "/web/imports",
        data={"csrf_token": token, "site": str(site), **flags},
        files=files,
    )


def _started(response: httpx.Response) -> int:
    assert response.status_code == 303, response.text
    m = JOB_RE.search(response.headers["location"])
    assert m, response.headers["location"]
    return int(m.group(1))


def test_dry_run_shows_the_bad_row_then_a_good_file_applies(
    client: httpx.Client, iworld: ImportWorld, engine: Engine
) -> None:
    login(client, "mgr")
    job = _started(
        _upload(client, iworld.site, register_csv([*GOOD_ROWS, BAD_ROW]), photos=photos_zip())
    )
    assert wait_for(client, job)["status"] == "checked"
    html = client.get(f"/web/imports/{job}").text
    issue = html.split('class="issue" data-row="4"')[1].split("</tr>")[0]
    assert "bad_role" in issue and "房东的朋友" in issue and "王五" in issue
    assert 'id="n-create">2<' in html and 'id="n-failed">1<' in html
    assert 'id="apply"' not in html and 'id="cannot-apply"' in html  # all or nothing
    added = html.split('id="changes-add"')[1].split("</details>")[0]
    assert "张三 · 3幢2单元1203室" in added and "李四" in added and "王五" not in added
    report = client.get(f"/web/imports/{job}/report.csv")
    assert report.content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel
    rows = list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert rows[0] == ["row", "column", "reason", "message", "name"]
    assert rows[1][:3] == ["4", "身份", "bad_role"]
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Occupant)) == 0

    good = _started(_upload(client, iworld.site, register_csv(GOOD_ROWS), photos=photos_zip()))
    assert wait_for(client, good)["status"] == "checked"
    page = client.get(f"/web/imports/{good}").text
    token = csrf_of(page.split(f'action="/web/imports/{good}/apply"')[1])
    with new_session(engine) as s:
        before = s.scalar(select(Site.gallery_version).where(Site.id == iworld.site))
    applied = client.post(f"/web/imports/{good}/apply", data={"csrf_token": token})
    assert applied.status_code == 303
    assert wait_for(client, good)["status"] == "applied"
    done = client.get(f"/web/imports/{good}").text
    assert 'id="gallery-version"' in done
    with new_session(engine) as s:
        names = sorted(s.scalars(select(Occupant.name).where(Occupant.site_id == iworld.site)))
        version = s.scalar(select(Site.gallery_version).where(Site.id == iworld.site))
    assert names == ["张三", "李四"]
    assert before is not None and version == before + 1
    # Applying twice is refused.
    again = client.post(f"/web/imports/{good}/apply", data={"csrf_token": token})
    assert again.status_code == 409


def test_report_cells_from_the_register_are_never_formulas(
    client: httpx.Client, iworld: ImportWorld
) -> None:
    login(client, "mgr")
    hostile = BAD_ROW.replace("王五", '=HYPERLINK("http://x")')
    job = _started(_upload(client, iworld.site, register_csv([hostile])))
    assert wait_for(client, job)["status"] == "checked"
    rows = list(csv.reader(io.StringIO(client.get(f"/web/imports/{job}/report.csv").text)))
    assert rows[1][4].startswith("'=")


def test_viewers_and_other_sites_managers_cannot_import(
    client: httpx.Client, iworld: ImportWorld
) -> None:
    login(client, "mgr")
    job = _started(_upload(client, iworld.site, register_csv([PLAIN_ROW])))
    wait_for(client, job)
    client.post("/web/logout", data={"csrf_token": csrf_of(client.get("/web/imports").text)})
    client.cookies.clear()
    login(client, "viewer")
    assert client.get("/web/imports").status_code == 403
    assert client.get(f"/web/imports/{job}").status_code == 403
    assert "/web/imports" not in client.get("/web/queue").text  # no nav link either
    client.cookies.clear()
    login(client, "mgr_other")
    assert client.get(f"/web/imports/{job}").status_code == 404
    assert client.get(f"/web/imports/{job}/report.csv").status_code == 404
    refused = _upload(client, iworld.site, register_csv([PLAIN_ROW]))
    assert refused.status_code == 404  # another tenant's site does not exist


def test_upload_needs_the_csrf_token(client: httpx.Client, iworld: ImportWorld) -> None:
    login(client, "mgr")
    response = client.post(
        "/web/imports",
        data={"csrf_token": "forged", "site": str(iworld.site)},
        files={"register": ("r.csv", register_csv([PLAIN_ROW]), "text/csv")},
    )
    assert response.status_code == 403


def test_bad_upload_gets_a_clear_error_and_no_job(
    client: httpx.Client, iworld: ImportWorld, engine: Engine
) -> None:
    login(client, "mgr")
    response = _upload(client, iworld.site, b"%PDF-1.4", name="scan.pdf")
    assert response.status_code == 422
    assert "must be a .csv or .xlsx file" in response.text
    token = csrf_of(client.get("/web/imports").text)
    plain = client.post("/web/imports", data={"csrf_token": token, "site": str(iworld.site)})
    assert plain.status_code == 422 and "choose the register file" in plain.text
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(ImportJob)) == 0


def test_an_upload_above_the_cap_is_refused_before_it_is_read(
    settings: Settings, engine: Engine, iworld: ImportWorld
) -> None:
    small = settings.model_copy(
        update={"max_body_bytes": 16 * 1024, "max_import_body_bytes": 64 * 1024}
    )
    app: FastAPI = create_app(small, engine=engine)
    transport = SyncASGITransport(app)
    mid = register_csv([PLAIN_ROW] * 400)
    big = register_csv([PLAIN_ROW] * 2000)
    # mid: above the general cap, within the import cap; big: above both
    assert small.max_body_bytes < len(mid) < small.max_import_body_bytes
    assert len(big) > small.max_import_body_bytes
    with httpx.Client(transport=transport, base_url="http://lintel.test") as client:
        login(client, "mgr")
        assert _upload(client, iworld.site, big).status_code == 413
        # Above the general cap, within the import cap: a manager's upload is taken.
        job = _started(_upload(client, iworld.site, mid))
        assert wait_for(client, job)["status"] == "checked"
        # Anybody without a manager's session keeps the general cap.
        client.cookies.clear()
        anonymous = client.post("/web/imports", files={"register": ("r.csv", mid, "text/csv")})
        assert anonymous.status_code == 413
    transport.close()


def test_templates_download_as_the_cli_writes_them(
    client: httpx.Client, iworld: ImportWorld
) -> None:
    login(client, "mgr")
    xlsx = client.get("/web/imports/template.xlsx?lang=zh")
    assert xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(xlsx.content)).worksheets[0]
    assert sheet.cell(row=1, column=1).value == "姓名"
    text = client.get("/web/imports/template.csv?lang=en").content.decode("utf-8-sig")
    assert "name" in text.splitlines()[-3]


def test_discard_drops_the_dry_run(client: httpx.Client, iworld: ImportWorld) -> None:
    login(client, "mgr")
    job = _started(_upload(client, iworld.site, register_csv([PLAIN_ROW])))
    wait_for(client, job)
    page = client.get(f"/web/imports/{job}").text
    token = csrf_of(page.split(f'action="/web/imports/{job}/discard"')[1])
    assert client.post(f"/web/imports/{job}/discard", data={"csrf_token": token}).status_code == 303
    assert wait_for(client, job)["status"] == "discarded"
    refused = client.post(f"/web/imports/{job}/apply", data={"csrf_token": token})
    assert refused.status_code == 409


def test_a_server_without_the_face_engine_says_so_and_imports_a_plain_register(
    client: httpx.Client, iworld: ImportWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on a lean [server] install: ONNX Runtime is not there to find
    monkeypatch.setattr(runner_module.face.importlib.util, "find_spec", lambda name: None)
    login(client, "mgr")
    page = client.get("/web/imports").text
    assert "Importing photos needs the face engine on this server" in page
    refused = _upload(client, iworld.site, register_csv(GOOD_ROWS), photos=photos_zip())
    assert refused.status_code == 422 and "needs the face engine" in refused.text
    job = _started(_upload(client, iworld.site, register_csv([PLAIN_ROW])))
    assert wait_for(client, job)["status"] == "checked"
