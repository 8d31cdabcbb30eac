"""The register pages over HTTP (issue 17 R): scope, search, edit, move out, photos, erase.

Photos are enrolled by the real bundled face engine (buffalo_s) from photos the
installed packages ship (tests/web/faces.py); the site under test uses that
engine's model id, as a site made by the registry import does.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import undefer

from edge.wire import API_PREFIX
from server.audit.models import AuditEvent
from server.cases.models import Case
from server.devices.service import create_device
from server.errors import InvalidInput
from server.occupants import face_engine
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import upsert_occupant
from server.settings import Settings
from server.sites.models import Site
from tests.server.clusters.support import new_session
from tests.web import faces
from tests.web.world import World, csrf_of, login

REAL_MODEL = "buffalo_s/w600k_mbf"


@dataclass(frozen=True)
class Register:
    wang: int
    li: int
    han: int
    """An occupant of site B."""
    token_a: str
    """A camera box of site A, to read the gallery as the doors do."""


@pytest.fixture
def reg(world: World, engine: Engine) -> Register:
    with new_session(engine) as s:
        site = s.get(Site, world.site_a)
        assert site is not None
        site.model_id = REAL_MODEL  # as a site made by the registry import with buffalo_s
        wang = upsert_occupant(
            session=s,
            site_id=world.site_a,
            name="王芳",
            unit_id=world.unit_a,
            role="owner",
            phone="+8613812345678",
            external_id="E1",
        )
        li = upsert_occupant(
            session=s,
            site_id=world.site_a,
            name="李雷",
            unit_id=world.unit_a,
            phone="+8613900001111",
            external_id="E2",
        )
        han = upsert_occupant(
            session=s, site_id=world.site_b, name="韩梅梅", unit_id=world.unit_b, external_id="E3"
        )
        _device, token = create_device(session=s, site_id=world.site_a, name="gate-A2")
        s.commit()
        return Register(wang.id, li.id, han.id, token)


def _gallery(client: httpx.Client, token: str) -> dict[str, object]:
    r = client.get(f"{API_PREFIX}/device/gallery", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    data: dict[str, object] = r.json()
    return data


def _gallery_occupants(client: httpx.Client, token: str) -> tuple[int, set[int]]:
    g = _gallery(client, token)
    templates = g["templates"]
    assert isinstance(templates, list) and isinstance(g["version"], int)
    return g["version"], {int(t["occupant_id"]) for t in templates}


def _templates(engine: Engine, occupant_id: int) -> list[FaceTemplate]:
    with new_session(engine) as s:
        return list(
            s.scalars(
                select(FaceTemplate)
                .where(FaceTemplate.occupant_id == occupant_id)
                .options(undefer(FaceTemplate.chip))
            )
        )


def _audits(engine: Engine, action: str) -> list[AuditEvent]:
    with new_session(engine) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _post_photo(
    client: httpx.Client, occupant_id: int, data: bytes, name: str = "p.jpg"
) -> httpx.Response:
    page = client.get(f"/web/occupants/{occupant_id}")
    return client.post(
        f"/web/occupants/{occupant_id}/photo",
        data={"csrf_token": csrf_of(page.text)},
        files={"photo": (name, data, "image/jpeg")},
    )


def _post(client: httpx.Client, occupant_id: int, action: str, **fields: str) -> httpx.Response:
    page = client.get(f"/web/occupants/{occupant_id}")
    return client.post(
        f"/web/occupants/{occupant_id}/{action}",
        data={"csrf_token": csrf_of(page.text), **fields},
    )


# -- browse, search, scope ------------------------------------------------------------------
def test_buildings_units_occupants_and_search_by_phone_tail_name_and_unit(
    client: httpx.Client, world: World, reg: Register
) -> None:
    login(client, "mgr_a")
    top = client.get("/web/register")
    assert top.status_code == 200
    assert ">A1</a>" in top.text and "Other Court" not in top.text  # site B is not theirs
    building = re.search(r'href="(/web/register\?site=\d+&amp;building=\d+)"', top.text)
    assert building
    units = client.get(building.group(1).replace("&amp;", "&"))
    assert "A1 幢 1 单元 101" in units.text and "2 occupants" in units.text
    unit = client.get(f"/web/register?site={world.site_a}&unit={world.unit_a}")
    assert "王芳" in unit.text and "李雷" in unit.text

    def names(q: str) -> list[str]:
        page = client.get("/web/register", params={"site": world.site_a, "q": q})
        assert page.status_code == 200
        return re.findall(r'<a href="/web/occupants/\d+">([^<]+)</a>', page.text)

    assert names("5678") == ["王芳"]  # the last digits of her phone
    assert names("1111") == ["李雷"]
    assert names("李") == ["李雷"]
    assert sorted(names("101")) == ["李雷", "王芳"]  # the unit
    assert names("%") == []  # a LIKE wildcard is a character, not "everything"
    # A whole phone number is not in the list, only its tail.
    assert (
        "13812345678"
        not in client.get("/web/register", params={"site": world.site_a, "q": "5678"}).text
    )
    # Another site's register and occupants do not exist for this manager.
    assert client.get(f"/web/register?site={world.site_b}").status_code == 404
    assert client.get(f"/web/occupants/{reg.han}").status_code == 404


def test_the_occupant_page_is_audited_and_shows_fields_and_cases(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    with new_session(engine) as s:
        # A desk-check case that names her (the clustering worker sets this link).
        case = s.scalar(select(Case).where(Case.site_id == world.site_a).order_by(Case.id))
        assert case is not None
        case.occupant_id = reg.wang
        case_id = case.id
        s.commit()
    login(client, "viewer_a")
    page = client.get(f"/web/occupants/{reg.wang}")
    assert page.status_code == 200
    assert f'<a href="/web/cases/{case_id}">#{case_id}</a>' in page.text
    assert "+8613812345678" in page.text and "Owner" in page.text
    # A viewer sees, but has no forms to act with.
    assert "/edit" not in page.text and 'type="file"' not in page.text
    views = _audits(engine, "occupant.view")
    assert [(v.object_id, v.site_id) for v in views] == [(str(reg.wang), world.site_a)]
    r = client.post(
        f"/web/occupants/{reg.wang}/edit",
        data={"csrf_token": csrf_of(page.text), "name": "X", "role": "owner"},
    )
    assert r.status_code == 403


# -- edit and move out ----------------------------------------------------------------------
def test_edit_uses_the_imports_field_rules_and_a_bad_field_changes_nothing(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    login(client, "mgr_a")
    fields = {"name": "王芳", "role": "owner", "unit_id": str(world.unit_a), "move_in": ""}
    bad = _post(client, reg.wang, "edit", **fields, phone="12345")
    assert bad.status_code == 422
    assert "Not saved: a field is not valid." in bad.text
    assert "phone &#39;12345&#39; is not an 11-digit mobile number" in bad.text
    with new_session(engine) as s:
        wang = s.get(Occupant, reg.wang)
        assert wang is not None and wang.phone == "+8613812345678"
    # The import's spellings: 租户, a phone with spaces, a Chinese date.
    good = _post(
        client,
        reg.wang,
        "edit",
        **{**fields, "role": "租户", "move_in": "2024年3月1日"},
        phone="139 0000 2222",
    )
    assert good.status_code == 303 and good.headers["location"].endswith("done=edited")
    with new_session(engine) as s:
        wang = s.get(Occupant, reg.wang)
        assert wang is not None
        assert (wang.role, wang.phone, wang.move_in) == (
            "tenant",
            "+8613900002222",
            date(2024, 3, 1),
        )
    (event,) = _audits(engine, "occupant.edit")
    assert event.detail == {"fields": ["role", "phone", "move_in"], "via": "web"}
    # The audit page says it in words: what, whom, which fields (not their values).
    audit = client.get("/web/audit").text
    assert "Edited an occupant&#39;s register entry" in audit
    assert "fields: role, phone, move_in; via the web page" in audit
    assert f"occupant #{reg.wang}" in audit
    assert "+8613900002222" not in audit
    # Another site's unit is refused.
    other = _post(client, reg.wang, "edit", **{**fields, "unit_id": str(world.unit_b)})
    assert other.status_code == 422


def test_move_out_takes_their_faces_off_the_gallery_at_the_next_sync(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    login(client, "mgr_a")
    assert _post_photo(client, reg.wang, faces.one_face()).status_code == 303
    version, people = _gallery_occupants(client, reg.token_a)
    assert reg.wang in people
    future = (date.today() + timedelta(days=3)).isoformat()
    refused = _post(client, reg.wang, "move-out", move_out=future)
    assert refused.status_code == 422 and "is in the future" in refused.text
    assert _gallery_occupants(client, reg.token_a) == (version, people)

    moved = _post(client, reg.wang, "move-out", move_out=date.today().isoformat())
    assert moved.status_code == 303
    after, people_after = _gallery_occupants(client, reg.token_a)
    assert after > version and reg.wang not in people_after
    assert _templates(engine, reg.wang) == []  # deleted, not only hidden
    (event,) = _audits(engine, "occupant.move_out")
    assert event.detail is not None and event.detail["templates"] == 1
    page = client.get(f"/web/occupants/{reg.wang}")
    assert "Moved out" in page.text and 'type="file"' not in page.text
    # A search finds her again only when asked to include people who moved out.
    found = client.get("/web/register", params={"site": world.site_a, "q": "5678"})
    assert "王芳" not in found.text
    found = client.get("/web/register", params={"site": world.site_a, "q": "5678", "moved": "true"})
    assert "王芳" in found.text and "Moved out" in found.text


# -- photos ---------------------------------------------------------------------------------
def test_a_photo_becomes_a_template_with_its_chip_and_the_photo_is_not_kept(
    client: httpx.Client, world: World, reg: Register, engine: Engine, settings: Settings
) -> None:
    login(client, "mgr_a")
    version, _ = _gallery_occupants(client, reg.token_a)
    photo = faces.one_face()
    r = _post_photo(client, reg.wang, photo)
    assert r.status_code == 303 and r.headers["location"].endswith("done=photo_added")
    (template,) = _templates(engine, reg.wang)
    assert template.source.startswith("web:") and template.model_id == REAL_MODEL
    assert template.chip is not None
    # The photo itself is nowhere: not in the database file (nor its WAL), not in the
    # server's data folder. A slice from its middle (entropy-coded JPEG data) would show.
    piece = photo[len(photo) // 2 : len(photo) // 2 + 48]
    database = Path(str(engine.url.database))
    stored = [database, database.with_name(database.name + "-wal"), *settings.data_dir.rglob("*")]
    for path in stored:
        if path.is_file():
            assert piece not in path.read_bytes(), path
    after, people = _gallery_occupants(client, reg.token_a)
    assert after == version + 1 and reg.wang in people
    page = client.get(r.headers["location"])
    assert "Photo enrolled" in page.text
    assert f'<img src="/web/chips/{template.id}"' in page.text
    chip = client.get(f"/web/chips/{template.id}")
    assert chip.status_code == 200 and chip.content.startswith(b"\xff\xd8\xff")
    assert [e.object_id for e in _audits(engine, "chip.view")] == [str(template.id)]
    (added,) = _audits(engine, "occupant.photo_add")
    assert added.detail is not None and added.detail["template_id"] == template.id
    # The same file again is refused; so is his face filed under another occupant.
    again = _post_photo(client, reg.wang, photo)
    assert again.status_code == 422 and "already one of their faces" in again.text
    other = _post_photo(client, reg.li, faces.one_face())
    assert other.status_code == 422
    assert "This face is already another registered occupant" in other.text
    assert _templates(engine, reg.li) == []


@pytest.mark.parametrize(
    ("photo", "words"),
    [
        (faces.no_face, "No face was found in the photo"),
        (faces.two_faces, "The photo shows several faces"),
        (lambda: b"\xff\xd8\xff\xe0 not really a jpeg", "The file is not a readable image"),
        (faces.small_face, "The face is too small in the photo"),
        (lambda: b"", "The file is not a readable image"),
        (faces.bmp, "is a BMP file; use JPEG, PNG or WebP"),
        (faces.png_bomb, "is 30000x30000 pixels, more than 64 megapixels"),
    ],
    ids=["no-face", "two-faces", "corrupt", "too-small", "empty", "bmp", "pixel-bomb"],
)
def test_a_photo_the_engine_refuses_says_why_and_changes_nothing(
    client: httpx.Client,
    world: World,
    reg: Register,
    engine: Engine,
    photo: object,
    words: str,
) -> None:
    login(client, "mgr_a")
    version, _ = _gallery_occupants(client, reg.token_a)
    assert callable(photo)
    r = _post_photo(client, reg.wang, photo())
    assert r.status_code == 422
    assert words in r.text and "nothing was changed" in r.text.lower()
    assert 'id="photo-error"' in r.text
    assert _templates(engine, reg.wang) == []
    assert _gallery_occupants(client, reg.token_a)[0] == version
    assert _audits(engine, "occupant.photo_add") == []


def test_a_photo_in_chinese_says_why_in_chinese(
    client: httpx.Client, world: World, reg: Register
) -> None:
    login(client, "mgr_a")
    client.cookies.set("lintel_lang", "zh-CN")
    r = _post_photo(client, reg.wang, faces.two_faces())
    assert r.status_code == 422 and "照片中有多张人脸" in r.text


def test_without_the_face_engine_the_photo_form_says_so_cleanly(
    client: httpx.Client,
    world: World,
    reg: Register,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def no_onnxruntime(name: str, package: str | None = None) -> object:
        return None if name == "onnxruntime" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", no_onnxruntime)
    login(client, "mgr_a")
    r = _post_photo(client, reg.wang, faces.one_face())
    assert r.status_code == 422
    assert "photo enrolment needs the face engine on this server" in r.text
    assert "Photo enrolment needs the face engine on this server" in r.text
    assert _templates(engine, reg.wang) == []


def test_a_site_of_another_model_refuses_the_photo(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    """Site B keeps the test model id: the server's engine cannot make its templates."""
    login(client, "admin")
    r = _post_photo(client, reg.han, faces.one_face())
    assert r.status_code == 422
    assert "the site&#39;s gallery uses model &#39;buffalo_s&#39;" in r.text
    assert _templates(engine, reg.han) == []


def test_delete_a_template_leaves_the_gallery(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    login(client, "mgr_a")
    assert _post_photo(client, reg.wang, faces.one_face()).status_code == 303
    (template,) = _templates(engine, reg.wang)
    version, _ = _gallery_occupants(client, reg.token_a)
    page = client.get(f"/web/occupants/{reg.wang}")
    assert 'data-confirm="Confirm: delete face' in page.text  # the second tap
    r = client.post(
        f"/web/occupants/{reg.wang}/templates/{template.id}/delete",
        data={"csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    after, people = _gallery_occupants(client, reg.token_a)
    assert after == version + 1 and reg.wang not in people
    (event,) = _audits(engine, "face_template.delete")
    assert event.detail == {"occupant_id": reg.wang, "origin": "web", "via": "web"}
    # Another occupant's template id under this occupant does not exist.
    assert (
        client.post(
            f"/web/occupants/{reg.li}/templates/{template.id}/delete",
            data={"csrf_token": csrf_of(page.text)},
        ).status_code
        == 404
    )


# -- subject export and erase ---------------------------------------------------------------
def test_subject_export_and_erase_are_for_admins(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    login(client, "mgr_a")
    assert _post(client, reg.wang, "export").status_code == 403
    assert _post(client, reg.wang, "erase").status_code == 403
    assert "/export" not in client.get(f"/web/occupants/{reg.wang}").text
    client.cookies.clear()
    login(client, "admin")
    exported = _post(client, reg.wang, "export")
    assert exported.status_code == 200
    assert exported.headers["content-disposition"].startswith("attachment;")
    assert "王芳" in exported.text and "+8613812345678" in exported.text
    erased = _post(client, reg.wang, "erase")
    assert erased.status_code == 303 and "done=erased" in erased.headers["location"]
    with new_session(engine) as s:
        assert s.get(Occupant, reg.wang) is None
        n = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.in_(["subject.export", "subject.erase"]))
        )
        assert n == 2
    assert "The person&#39;s data was erased." in client.get(erased.headers["location"]).text


def test_the_server_loads_the_face_engine_once_and_names_the_models_it_has() -> None:
    first = face_engine.engine_for_model(REAL_MODEL)
    assert face_engine.engine_for_model(REAL_MODEL) is first  # once per process
    assert first.model_id == REAL_MODEL
    with pytest.raises(InvalidInput, match="offers buffalo_s/w600k_mbf") as info:
        face_engine.pack_for_model("antelopev2/glintr100")
    assert "'antelopev2/glintr100'" in info.value.detail


def test_a_poor_but_usable_photo_is_enrolled_with_a_word(
    client: httpx.Client, world: World, reg: Register, engine: Engine
) -> None:
    """As the import does (its poor_photo warning): enrolled, and the manager is told."""
    login(client, "mgr_a")
    r = _post_photo(client, reg.wang, faces.poor_face())
    assert r.status_code == 303 and r.headers["location"].endswith("done=photo_poor")
    assert "Photo enrolled, but it is poor" in client.get(r.headers["location"]).text
    assert len(_templates(engine, reg.wang)) == 1
    (added,) = _audits(engine, "occupant.photo_add")
    assert added.detail is not None and added.detail["warning"] == "small face (29 px)"


def test_the_web_app_does_not_load_the_face_engine_until_a_photo_comes() -> None:
    """A server without the face stack must serve every page: importing the app (and
    the register's routes) loads neither the engine (OpenCV, ONNX Runtime) nor
    insightface; the engine loads on the first photo."""
    code = (
        "import sys, server.app, server.web.register\n"
        "loaded = [m for m in ('onnxruntime', 'insightface', 'cv2', 'edge.face.engine')"
        " if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""
