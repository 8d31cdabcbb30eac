"""Queue order, filters and counts; case strip; dashboard; devices page."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine, select

from server.cases.models import Case
from server.db import utcnow
from server.devices.models import Device
from server.devices.service import record_heartbeat
from server.sites.models import Building
from server.sites.service import get_or_create_building, get_or_create_entrance
from tests.server.clusters.support import ingest, item, new_session, person
from tests.web.world import World, csrf_of, login


def _rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-case="(\d+)"', html)]


def test_queue_is_by_priority_with_days_seen_last_seen_and_entrances(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    login(client, "mgr_a")
    page = client.get("/web/queue")
    rows = _rows(page.text)
    with new_session(engine) as s:
        expected = list(
            s.scalars(
                select(Case.id)
                .where(Case.site_id == world.site_a)
                .order_by(Case.priority.desc(), Case.id)
            )
        )
    assert rows == expected and len(rows) == 2
    first = page.text.split('data-case="')[1]
    assert 'data-label="Days seen">5' in first  # the 5-day person is on top
    # Seen at 22:00 Shanghai on day 4 (2026-03-06): last seen in site time.
    assert "2026-03-06 22:00" in first
    assert "A1 east door" in first
    assert re.search(r'id="count-open">2<', page.text)


def test_queue_filters_by_building_and_status(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    with new_session(engine) as s:
        empty = get_or_create_building(session=s, site_id=world.site_a, name="A9")
        get_or_create_entrance(
            session=s, site_id=world.site_a, name="A9 door", building_id=empty.id
        )
        a1 = s.scalar(select(Building.id).where(Building.name == "A1"))
        s.commit()
        empty_id = empty.id
    login(client, "mgr_a")
    assert len(_rows(client.get(f"/web/queue?building={a1}").text)) == 2
    assert _rows(client.get(f"/web/queue?building={empty_id}").text) == []
    page = client.get("/web/queue")
    case_id = _rows(page.text)[0]
    client.post(
        f"/web/cases/{case_id}/close",
        data={"outcome": "false_match", "csrf_token": csrf_of(page.text)},
    )
    closed = client.get("/web/queue?status=closed").text
    assert _rows(closed) == [case_id]
    assert 'data-label="Status">Closed: False match' in closed
    assert case_id not in _rows(client.get("/web/queue?status=open").text)
    assert client.get("/web/queue?status=bogus").status_code == 422


def test_case_page_has_a_days_by_hours_strip_and_history(
    client: httpx.Client, world: World
) -> None:
    login(client, "mgr_a")
    case_id = _rows(client.get("/web/queue").text)[0]
    page = client.get(f"/web/cases/{case_id}")
    strip = page.text.split('class="strip"')[1].split("</table>")[0]
    days = re.findall(r'<th scope="row">(\d{4}-\d\d-\d\d)</th>', strip)
    assert days == [f"2026-03-0{d}" for d in range(2, 7)]
    # One sighting a day, at 22:00 site time, nothing at other hours.
    assert strip.count('class="lv1"') == 5 and strip.count('class="lv0"') == 5 * 23
    assert re.search(r'title="2026-03-02 22:00 — 1">1<', strip)
    assert "A1 east door — 5 times" in page.text
    assert re.findall(r'<img src="/web/crops/\d+\?case=', page.text)  # crops shown
    assert "<strong>opened</strong>" in page.text
    # The history says it in words (issue 14, #6), not as stored detail.
    history = page.text.split('class="history"')[1].split("</ol>")[0]
    assert "Seen on 5 days" in history and "Lintel (automatic)" in history
    assert "system:worker" not in history and "evidence" not in history


def test_dashboard_counts_outcomes_and_devices_online(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    with new_session(engine) as s:
        device = s.get(Device, world.device_a)
        assert device is not None
        record_heartbeat(session=s, device=device, software_version="0.1.0", stats={})
        s.commit()
    login(client, "mgr_a")
    page = client.get("/web/queue")
    case_id = _rows(page.text)[0]
    client.post(
        f"/web/cases/{case_id}/close",
        data={"outcome": "visitor", "csrf_token": csrf_of(page.text)},
    )
    dash = client.get(f"/web/dashboard?site={world.site_a}")
    assert dash.status_code == 200
    assert re.search(r'id="dash-open">1<', dash.text)
    assert re.search(r"<td>Visitor</td><td>1</td>", dash.text)
    assert re.search(r'<span class="n">1/1</span> Devices online', dash.text)
    assert "<svg" in dash.text and "<desc" in dash.text


def test_dashboard_counts_sightings_per_site_day(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    # 23:30 UTC yesterday is already today in Shanghai: the day is the site's.
    now = utcnow()
    late = (now - timedelta(days=1)).replace(hour=23, minute=30, second=0, microsecond=0)
    if late > now:
        late -= timedelta(days=1)
    ingest(engine, world.device_a, [item(person(77), late), item(person(78), late)])
    login(client, "mgr_a")
    dash = client.get("/web/dashboard")
    local_day = late.astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert f"<tr><td>{local_day}</td><td>0</td><td>2</td></tr>" in dash.text
    assert dash.text.count("</td><td>0</td><td>0</td></tr>") == 13  # the other days


def test_devices_page_shows_heartbeat_stats_and_offline_devices(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    stats = {
        "version": "0.1.0",
        "cameras": {
            "gate": {"state": "running", "fps": 7.5, "frames": 900, "dropped_frames": 12},
            "lobby": {"state": "reconnecting", "fps": 2.5, "frames": 10, "dropped_frames": 3},
        },
        "outbox_depth": 4,
    }
    with new_session(engine) as s:
        device = s.get(Device, world.device_a)
        assert device is not None
        record_heartbeat(session=s, device=device, software_version="0.1.0", stats=stats)
        s.commit()
    login(client, "admin")
    page = client.get("/web/devices")
    a = page.text.split(f'data-device="{world.device_a}"')[1].split("</tr>")[0]
    assert ">online<" in a and ">10.0<" in a and ">15<" in a and ">4<" in a
    assert "lobby (reconnecting)" in a
    b = page.text.split(f'data-device="{world.device_b}"')[1].split("</tr>")[0]
    assert ">offline<" in b
    with new_session(engine) as s:
        device = s.get(Device, world.device_a)
        assert device is not None
        device.last_heartbeat_at = utcnow() - timedelta(minutes=10)
        s.commit()
    a = client.get("/web/devices").text.split(f'data-device="{world.device_a}"')[1]
    assert ">offline<" in a.split("</tr>")[0]


def test_devices_page_shows_sightings_refused_for_a_clock_ahead(
    client: httpx.Client, world: World, engine: Engine
) -> None:
    with new_session(engine) as s:
        device = s.get(Device, world.device_a)
        assert device is not None
        device.future_refused = 37
        s.commit()
    login(client, "admin")
    page = client.get("/web/devices").text
    a = page.split(f'data-device="{world.device_a}"')[1].split("</tr>")[0]
    assert ">37<" in a and "set its clock" in a
    b = page.split(f'data-device="{world.device_b}"')[1].split("</tr>")[0]
    assert "set its clock" not in b
    assert "Refused (clock ahead)" in page
