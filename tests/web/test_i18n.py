"""Languages: Accept-Language, the switch, and complete catalogs."""

from __future__ import annotations

import re
import string
from pathlib import Path

import httpx
import pytest

from server.cases.enums import CaseStatus, Outcome
from server.occupants.service import ROLES as OCCUPANT_ROLES
from server.users.service import ROLES as USER_ROLES
from server.web.i18n import LANGS, catalog, pick_language
from tests.web.world import World, login

WEB = Path(__file__).resolve().parents[2] / "server" / "web"


@pytest.mark.parametrize(
    ("header", "cookie", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh-CN"),
        ("zh-TW", None, "zh-CN"),
        ("en-US,en;q=0.9", None, "en"),
        ("en;q=0.5, zh;q=0.8", None, "zh-CN"),
        ("fr-FR, de", None, "en"),
        ("zh;q=0, en", None, "en"),
        (None, None, "en"),
        ("en", "zh-CN", "zh-CN"),
        ("zh-CN", "klingon", "zh-CN"),
    ],
)
def test_language_choice(header: str | None, cookie: str | None, expected: str) -> None:
    assert pick_language(header, cookie) == expected


def _placeholders(message: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(message) if name}


def test_catalogs_have_the_same_keys_and_placeholders() -> None:
    en, zh = catalog("en"), catalog("zh-CN")
    assert set(en) == set(zh)
    for key in en:
        assert _placeholders(en[key]) == _placeholders(zh[key]), key


def test_every_literal_key_used_by_templates_and_routes_exists() -> None:
    used: set[str] = set()
    for path in (WEB / "templates").glob("*.html"):
        used |= set(re.findall(r"t\('([\w.-]+)'\s*[,)]", path.read_text(encoding="utf-8")))
    routes = (WEB / "routes.py").read_text(encoding="utf-8")
    used |= set(re.findall(r'"((?:error|login)\.[a-z_]+)"', routes)) - {"error.html", "login.html"}
    assert len(used) > 50
    # Keys built from domain values ('status.' ~ case.status and the like).
    used |= {f"status.{x}" for x in (*CaseStatus, "active")}
    used |= {f"outcome.{x}" for x in (*Outcome, "none")}
    used |= {f"role.{x}" for x in USER_ROLES} | {f"occupant.{x}" for x in OCCUPANT_ROLES}
    used |= {f"lang.{x}" for x in LANGS}
    used |= {f"event.{x}" for x in ("opened", "assigned", "call", "visit", "closed")}
    for lang in LANGS:
        missing = used - set(catalog(lang))
        assert not missing, (lang, sorted(missing))


def test_pages_follow_accept_language_and_the_switch(client: httpx.Client, world: World) -> None:
    zh = client.get("/web/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in zh.text and "用户名" in zh.text
    login(client, "mgr_a")
    queue = client.get("/web/queue", headers={"Accept-Language": "zh-CN"})
    assert "待核查任务" in queue.text and "出现天数" in queue.text
    r = client.get("/web/lang", params={"to": "en", "next": "/web/queue"})
    assert r.status_code == 303 and r.headers["location"] == "/web/queue"
    queue = client.get("/web/queue", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in queue.text and "Cases to check" in queue.text
    assert (
        client.get("/web/lang", params={"to": "en", "next": "https://x.example"}).headers[
            "location"
        ]
        == "/web/queue"
    )
