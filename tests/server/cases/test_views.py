"""Cases API: auth and site scope, priority order, detail with history, actions."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import Engine, select

from edge.wire import API_PREFIX, encode_embedding
from server.audit.models import AuditEvent
from server.db import make_session_factory
from server.users.service import create_api_token, create_user
from tests.server.clusters.support import look, new_session, person, seen_on, work
from tests.server.conftest import DeviceCreds


def _token(engine: Engine, username: str, role: str, site_ids: list[int]) -> dict[str, str]:
    with make_session_factory(engine)() as s:
        user = create_user(session=s, username=username, role=role, site_ids=site_ids)
        _row, token = create_api_token(session=s, user_id=user.id)
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def test_queue_is_in_priority_order_and_scoped_to_the_callers_sites(
    engine: Engine,
    client: httpx.Client,
    device: DeviceCreds,
    make_device: Callable[..., DeviceCreds],
) -> None:
    other = make_device(site="Other Court", name="gate")
    seen_on(engine, device.device_id, (person(31), 31), [0, 1, 2])
    seen_on(engine, device.device_id, (person(32), 32), [0, 1, 2, 3, 4])  # more days: first
    work(engine)
    manager = _token(engine, "manager", "manager", [device.site_id])
    stranger = _token(engine, "stranger", "manager", [other.site_id])

    assert client.get(f"{API_PREFIX}/cases", params={"site": device.site_id}).status_code == 401
    r = client.get(f"{API_PREFIX}/cases", params={"site": device.site_id}, headers=stranger)
    assert r.status_code == 404  # another tenant's site does not exist for this caller
    r = client.get(
        f"{API_PREFIX}/cases", params={"site": "Sunny Court", "status": "open"}, headers=manager
    )
    assert r.status_code == 200, r.text
    cases = r.json()
    assert [c["days_seen"] for c in cases] == [5, 3]
    assert cases[0]["priority"] > cases[1]["priority"]
    assert len(cases[0]["best_sighting_ids"]) == 5
    r = client.get(f"{API_PREFIX}/cases/{cases[0]['id']}", headers=stranger)
    assert r.status_code == 404  # other sites' cases do not exist for this caller
    bad = client.get(
        f"{API_PREFIX}/cases", params={"site": device.site_id, "status": "nope"}, headers=manager
    )
    assert bad.status_code == 422


def test_actions_close_cases_and_are_audited_viewers_cannot_act(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    seen_on(engine, device.device_id, (person(33), 33), [0, 1, 2])
    work(engine)
    manager = _token(engine, "manager", "manager", [device.site_id])
    viewer = _token(engine, "viewer", "viewer", [device.site_id])
    case_id = client.get(
        f"{API_PREFIX}/cases", params={"site": device.site_id}, headers=viewer
    ).json()[0]["id"]
    url = f"{API_PREFIX}/cases/{case_id}/actions"

    assert client.post(url, json={"action": "visitor"}, headers=viewer).status_code == 403
    r = client.post(url, json={"action": "assign"}, headers=manager)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "assigned"
    r = client.post(url, json={"action": "visit", "result": "nobody home"}, headers=manager)
    assert [e["kind"] for e in r.json()["events"]] == ["opened", "assigned", "visit"]
    assert client.post(url, json={"action": "fly"}, headers=manager).status_code == 422
    r = client.post(url, json={"action": "visitor", "notes": "cousin"}, headers=manager)
    body = r.json()
    assert (body["status"], body["outcome"], body["suppression"]) == (
        "closed",
        "visitor",
        "visitor",
    )
    assert client.post(url, json={"action": "false_match"}, headers=manager).status_code == 409

    detail = client.get(f"{API_PREFIX}/cases/{case_id}", headers=viewer).json()
    assert detail["events"][-1]["kind"] == "closed"
    assert detail["events"][-1]["actor"].startswith("user:")
    with new_session(engine) as s:
        actions = set(s.scalars(select(AuditEvent.action)))
    assert {"case.assigned", "case.visit", "case.closed", "case.view"} <= actions
    closed = client.get(
        f"{API_PREFIX}/cases", params={"site": device.site_id, "status": "closed"}, headers=viewer
    ).json()
    assert [c["id"] for c in closed] == [case_id]


def test_whitelist_endpoint(engine: Engine, client: httpx.Client, device: DeviceCreds) -> None:
    manager = _token(engine, "manager", "manager", [device.site_id])
    body = {
        "site": str(device.site_id),
        "kind": "courier",
        "label": "JD",
        "embeddings_b64": [encode_embedding(look(person(34), 1))],
    }
    r = client.post(f"{API_PREFIX}/whitelist", json=body, headers=manager)
    assert r.status_code == 200, r.text
    seen_on(engine, device.device_id, (person(34), 34), [0, 1, 2, 3])
    work(engine)
    cases = client.get(
        f"{API_PREFIX}/cases", params={"site": device.site_id}, headers=manager
    ).json()
    assert cases == []
    bad = {**body, "embeddings_b64": ["not base64!"]}
    assert client.post(f"{API_PREFIX}/whitelist", json=bad, headers=manager).status_code == 422


def test_case_crops_are_served_and_audited(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    import base64
    from datetime import timedelta

    from tests.server.clusters.support import DAY0, ingest, item
    from tests.server.helpers import jpeg_bytes

    jpeg = jpeg_bytes(seed=1)
    items = []
    for d in range(3):
        it = item(look(person(35), d), DAY0 + timedelta(days=d))
        it["crop_jpeg_b64"] = base64.b64encode(jpeg).decode()
        items.append(it)
    ingest(engine, device.device_id, items)
    work(engine)
    viewer = _token(engine, "viewer", "viewer", [device.site_id])
    case = client.get(
        f"{API_PREFIX}/cases", params={"site": device.site_id}, headers=viewer
    ).json()[0]
    sid = case["best_sighting_ids"][0]
    r = client.get(f"{API_PREFIX}/cases/{case['id']}/crops/{sid}", headers=viewer)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg" and r.content == jpeg
    assert (
        client.get(f"{API_PREFIX}/cases/{case['id']}/crops/999999", headers=viewer).status_code
        == 404
    )
    with new_session(engine) as s:
        views = list(
            s.execute(
                select(AuditEvent.object_id, AuditEvent.detail).where(
                    AuditEvent.action == "crop.view"
                )
            )
        )
    # The same audit action and detail as the web UI's crop view (tests/web/test_actions.py).
    assert [tuple(v) for v in views] == [(str(sid), {"case_id": case["id"]})]


def test_case_settings_per_site(engine: Engine, client: httpx.Client, device: DeviceCreds) -> None:
    manager = _token(engine, "manager", "manager", [device.site_id])
    viewer = _token(engine, "viewer", "viewer", [device.site_id])
    url = f"{API_PREFIX}/case-settings"
    got = client.get(url, params={"site": device.site_id}, headers=viewer).json()
    assert got["timezone"] == "Asia/Shanghai" and got["case_rule"]["min_days"] == 3
    body = {"timezone": "Europe/Berlin", "case_rule": {"min_days": 2, "window_days": 7}}
    assert (
        client.put(url, params={"site": device.site_id}, json=body, headers=viewer).status_code
        == 403
    )
    r = client.put(url, params={"site": device.site_id}, json=body, headers=manager)
    assert r.status_code == 200, r.text
    assert r.json()["case_rule"]["min_days"] == 2 and r.json()["timezone"] == "Europe/Berlin"
    bad = {"timezone": "Mars/Olympus"}
    assert (
        client.put(url, params={"site": device.site_id}, json=bad, headers=manager).status_code
        == 422
    )
    # The new rule is in force: two days now open a case.
    seen_on(engine, device.device_id, (person(36), 36), [0, 1])
    work(engine)
    cases = client.get(f"{API_PREFIX}/cases", params={"site": device.site_id}, headers=viewer)
    assert len(cases.json()) == 1


def test_case_settings_turn_registry_chips_off_and_on(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    manager = _token(engine, "manager", "manager", [device.site_id])
    url = f"{API_PREFIX}/case-settings"
    got = client.get(url, params={"site": device.site_id}, headers=manager).json()
    assert got["registry_chips"] is True  # kept by default
    r = client.put(
        url, params={"site": device.site_id}, json={"registry_chips": False}, headers=manager
    )
    assert r.status_code == 200, r.text
    assert r.json()["registry_chips"] is False
    got = client.get(url, params={"site": device.site_id}, headers=manager).json()
    assert got["registry_chips"] is False


def test_reopen_through_the_api_undoes_a_visitor_and_viewers_cannot(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    seen_on(engine, device.device_id, (person(34), 34), [0, 1, 2])
    work(engine)
    manager = _token(engine, "manager", "manager", [device.site_id])
    viewer = _token(engine, "viewer", "viewer", [device.site_id])
    case_id = client.get(
        f"{API_PREFIX}/cases", params={"site": device.site_id}, headers=viewer
    ).json()[0]["id"]
    url = f"{API_PREFIX}/cases/{case_id}/actions"
    assert client.post(url, json={"action": "reopen"}, headers=manager).status_code == 409
    closed = client.post(url, json={"action": "visitor"}, headers=manager).json()
    assert closed["suppression"] == "visitor"
    assert client.post(url, json={"action": "reopen"}, headers=viewer).status_code == 403
    r = client.post(url, json={"action": "reopen"}, headers=manager)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["outcome"], body["suppression"]) == ("open", None, None)
    assert body["events"][-1]["kind"] == "reopened"
