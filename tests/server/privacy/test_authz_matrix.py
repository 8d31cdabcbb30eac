"""Authorisation matrix: every route of the app x callers who must not get in.

Routes are enumerated from ``app.routes`` (not a hand-written list), so a new
route is covered the day it is added: it needs a sample value for each new
path parameter (:data:`PATH_VALUES`) and, if it must be open to anyone, an
entry in :data:`PUBLIC`. Each caller tries site A's objects:

============================  ==============================================
caller                        expected
============================  ==============================================
anonymous, bad token,         401 on the JSON API; on /web pages a redirect
device token (of site B)      to the login page (GET) or 401/403 (POST)
viewer of site A              403 on every write and every admin-only route
manager of site B             403 or 404 everywhere (another site's objects
                              do not exist for them); a web page that takes no
                              site (the audit page lists the caller's own
                              sites) may answer 200 without site A on it
user tokens on device routes  401 (a user token is not a device token)
============================  ==============================================

Nothing here may answer 2xx or 5xx. Web logins go through the real form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import Engine

from edge.wire import API_PREFIX, encode_embedding
from server.cases.models import Case
from server.deps import current_admin
from server.devices.models import Camera
from server.imports.service import Upload, create_job
from server.occupants.service import add_template
from server.sightings.models import Sighting
from server.users.service import create_user
from tests.server.clusters.support import MODEL, new_session, person
from tests.server.conftest import DeviceCreds
from tests.server.privacy.support import World, build, user_token, web_login
from tests.web.world import face_jpeg

# Open to anyone, by design (docs, health, metrics, the login form, language, static files).
PUBLIC = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/web"),  # a bare redirect to /web/queue, which checks
    ("GET", "/"),  # the same redirect (issue 14)
    ("GET", "/favicon.ico"),  # the app's icon, no data
    ("GET", "/web/login"),
    ("POST", "/web/login"),
    ("POST", "/web/logout"),
    ("GET", "/web/lang"),
    # A box without a token trades a one-time code for it (issue 17 D): the code is
    # the credential, hashed, single use, 15 minutes, rate-limited per address.
    ("POST", "/api/v1/device/enrol"),
    ("GET", "/web/static"),
}
SITE_A = "Sunny Court"  # the conftest's default site name


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    admin_only: bool = False

    @property
    def kind(self) -> str:
        if self.path.startswith(f"{API_PREFIX}/device/"):
            return "device"
        if self.path.startswith("/web"):
            return "web"
        return "api"

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD")


def _calls(dependant: Any) -> Iterator[Any]:
    """Every dependency callable of a route, depth first."""
    for dep in getattr(dependant, "dependencies", []):
        yield dep.call
        yield from _calls(dep)


def app_routes(app: FastAPI) -> list[Route]:
    """Every (method, path) the app serves, HEAD aside; admin-only if it depends on
    :func:`server.deps.current_admin`."""
    out = set()
    for ctx in iter_route_contexts(app.routes):
        path = ctx.path
        if path is None:
            continue
        methods = ctx.methods or {"GET"}  # a mount (static files) answers GET
        admin = current_admin in set(_calls(getattr(ctx, "dependant", None)))
        out |= {Route(m, path, admin) for m in methods if m != "HEAD"}
    return sorted(out, key=lambda r: (r.path, r.method))


@dataclass(frozen=True)
class Scene:
    world: World
    site_b: int
    device_b: DeviceCreds
    sighting: int
    path_values: dict[str, int | str]


@pytest.fixture
def scene(engine: Engine, device: DeviceCreds, make_device: Any) -> Scene:
    world = build(engine, device.site_id, device.device_id)
    device_b = make_device(site="Other Court", name="gate-b")
    sighting = min(world.open_sightings)
    with new_session(engine) as s:
        assert s.get(Sighting, sighting) is not None
        case = s.get(Case, world.open_case)
        assert case is not None
        cluster_id = case.cluster_id
        # A registry face chip of site A (the /web/chips page).
        template = add_template(
            session=s,
            occupant_id=world.active_occupant,
            embedding=person(77),
            model_id=MODEL,
            source="registry:chip",
            chip=face_jpeg(77),
        )
        template_id = template.id
        # The /web/users/{user_id}/... admin actions (issue 14) aim at a user of site A.
        target = create_user(
            session=s, username="target-a", role="viewer", site_ids=[device.site_id]
        )
        # The device and camera pages (issue 17 D) aim at site A's box and its camera.
        camera = Camera(device_id=device.device_id, name="gate-cam")
        s.add(camera)
        s.commit()
        target_id = target.id
        # A register import of site A (the /web/imports/{job_id} pages, issue 17).
        job = create_job(
            session=s,
            site_id=world.site_id,
            user_id=None,
            actor="user:1",
            upload=Upload("r.csv", b"name\n"),
        )
        s.commit()
        job_id = job.id
        camera_id = camera.id
    return Scene(
        world=world,
        site_b=device_b.site_id,
        device_b=device_b,
        sighting=sighting,
        path_values={
            "case_id": world.open_case,
            "cluster_id": cluster_id,  # the /web/likely pages (a site A cluster)
            "sighting_id": sighting,
            "occupant_id": world.active_occupant,
            "template_id": template_id,
            "site_id": world.site_id,
            "site": "Sunny Court",  # the registry import names its site
            "user_id": target_id,
            "job_id": job_id,
            "device_id": device.device_id,
            "camera_id": camera_id,
        },
    )


def _url(route: Route, scene: Scene) -> str:
    def fill(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        if name not in scene.path_values:
            pytest.fail(f"{route.method} {route.path}: add a sample value for {{{name}}}")
        return str(scene.path_values[name])

    return re.sub(r"\{([^}]+)\}", fill, route.path)


def _json_body(route: Route, scene: Scene) -> dict[str, Any]:
    """A valid body where the route has one, so a refusal is about the caller, not the body."""
    site = str(scene.world.site_id)
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", f"{API_PREFIX}/cases/{{case_id}}/actions"): {"action": "visitor"},
        ("POST", f"{API_PREFIX}/whitelist"): {
            "site": site,
            "kind": "staff",
            "embeddings_b64": [encode_embedding(person(5))],
        },
        ("PUT", f"{API_PREFIX}/case-settings"): {},
        ("PUT", f"{API_PREFIX}/sites/{{site_id}}/retention"): {"crop_retention_days": 1},
        ("POST", f"{API_PREFIX}/sites/{{site:path}}/registry/import"): {
            "source": "r.csv",
            "columns": {},
            "rows": [{"number": 2, "cells": {}}],
            "model_id": "buffalo_s",
        },
    }
    return bodies.get((route.method, route.path), {})


def _form(route: Route, scene: Scene, csrf: str | None) -> dict[str, str]:
    """A valid form for the web action (the forms forbid unknown fields)."""
    forms = {
        "contact": {"kind": "call", "result": "no answer"},
        "enrol": {"unit_id": "1", "name": "Someone"},
        "merge": {"occupant_id": str(scene.world.active_occupant)},
        "close": {"outcome": "visitor"},
        "imports": {"site": str(scene.world.site_id)},  # site A's register import
    }
    data = dict(forms.get(route.path.rsplit("/", 1)[-1], {}))
    if csrf:
        data["csrf_token"] = csrf
    return data


def _call(
    client: httpx.Client, route: Route, scene: Scene, headers: dict[str, str], csrf: str | None
) -> httpx.Response:
    url = _url(route, scene)
    params = {"site": str(scene.world.site_id)}
    if route.kind == "web" and route.writes:
        return client.request(
            route.method, url, params=params, data=_form(route, scene, csrf), headers=headers
        )
    if route.writes:
        return client.request(
            route.method, url, params=params, json=_json_body(route, scene), headers=headers
        )
    return client.request(route.method, url, params=params, headers=headers)


def _protected(app: FastAPI) -> Iterator[Route]:
    for route in app_routes(app):
        if (route.method, route.path) not in PUBLIC:
            yield route


def _check(route: Route, r: httpx.Response, allowed: set[int], who: str) -> None:
    what = f"{who}: {route.method} {route.path} -> {r.status_code} {r.text[:200]!r}"
    assert not 200 <= r.status_code < 300, what
    assert r.status_code < 500, what
    if r.status_code == 303:
        # Only a redirect to the login page counts as a refusal.
        assert "/web/login" in r.headers["location"], what
    assert r.status_code in allowed, what


def _self_scoped(route: Route) -> bool:
    """A web page without path parameters that lists the caller's own sites' data."""
    return route.method == "GET" and "{" not in route.path


def test_every_route_is_enumerated(app: FastAPI) -> None:
    routes = app_routes(app)
    paths = {r.path for r in routes}
    # A smoke check that enumeration sees routers included into the app, not just its own.
    assert {
        f"{API_PREFIX}/device/gallery",
        f"{API_PREFIX}/cases/{{case_id}}",
        "/web/queue",
    } <= paths
    assert {f"{API_PREFIX}/audit", f"{API_PREFIX}/subjects/{{occupant_id}}/erase"} <= paths
    admin_only = {r.path for r in routes if r.admin_only}
    assert f"{API_PREFIX}/audit/export.csv" in admin_only
    assert f"{API_PREFIX}/cases" not in admin_only
    unknown_public = PUBLIC - {(r.method, r.path) for r in routes}
    assert not unknown_public, f"PUBLIC names routes that no longer exist: {unknown_public}"


@pytest.mark.parametrize("who", ["anonymous", "bad token", "device of another site"])
def test_callers_without_a_user_get_nothing(
    app: FastAPI, client: httpx.Client, scene: Scene, who: str
) -> None:
    headers = {
        "anonymous": {},
        "bad token": {"Authorization": "Bearer ltu_not-a-real-token"},
        "device of another site": scene.device_b.headers,
    }[who]
    for route in _protected(app):
        if route.kind == "device":
            if who == "device of another site":
                continue  # its own site's device API; checked in the next test
            allowed = {401}
        elif route.kind == "web":
            allowed = {303, 401, 403}
        else:
            allowed = {401}
        _check(route, _call(client, route, scene, headers, None), allowed, who)


def test_device_routes_serve_only_the_tokens_own_site(client: httpx.Client, scene: Scene) -> None:
    r = client.get(f"{API_PREFIX}/device/gallery", headers=scene.device_b.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["site_id"] == scene.site_b and body["templates"] == []


@pytest.mark.parametrize("role", ["viewer", "manager", "admin"])
def test_user_tokens_are_not_device_tokens(
    app: FastAPI, engine: Engine, client: httpx.Client, scene: Scene, role: str
) -> None:
    sites = [] if role == "admin" else [scene.world.site_id]
    headers = user_token(engine, role, role, sites)
    for route in _protected(app):
        if route.kind == "device":
            _check(route, _call(client, route, scene, headers, None), {401}, role)


def test_viewer_of_the_site_cannot_write_or_administer(
    app: FastAPI, engine: Engine, client: httpx.Client, scene: Scene
) -> None:
    headers = user_token(engine, "viewer", "viewer", [scene.world.site_id])
    with httpx.Client(transport=client._transport, base_url=str(client.base_url)) as web:
        csrf = web_login(web, engine, "viewer-web", "viewer", [scene.world.site_id])
        for route in _protected(app):
            if route.kind == "device":
                continue
            if route.kind == "web":
                if route.writes:
                    _check(route, _call(web, route, scene, {}, csrf), {403}, "web viewer")
                continue
            if route.writes or route.admin_only:
                _check(route, _call(client, route, scene, headers, None), {403}, "viewer")


def test_manager_of_another_site_reaches_nothing_of_this_one(
    app: FastAPI, engine: Engine, client: httpx.Client, scene: Scene
) -> None:
    headers = user_token(engine, "manager-b", "manager", [scene.site_b])
    with httpx.Client(transport=client._transport, base_url=str(client.base_url)) as web:
        csrf = web_login(web, engine, "manager-b-web", "manager", [scene.site_b])
        for route in _protected(app):
            if route.kind == "device":
                continue
            if route.kind == "web":
                r = _call(web, route, scene, {}, csrf)
                if r.status_code == 200 and _self_scoped(route):
                    # A page about the caller's own sites (it takes no site): fine, as
                    # long as nothing of site A is on it.
                    assert SITE_A not in r.text, f"{route.path} shows site A to manager B"
                    assert f"/web/cases/{scene.world.open_case}" not in r.text, route.path
                    continue
                _check(route, r, {403, 404}, "web manager B")
            else:
                _check(route, _call(client, route, scene, headers, None), {403, 404}, "manager B")
