"""The devices page's words for what is wrong: the pure rules of server/devices/health.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from server.devices.health import (
    WORST_FIRST,
    CameraHealth,
    DeviceHealth,
    needs_attention,
    problems,
)
from server.web.i18n import catalog

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def _cam(**kw: object) -> CameraHealth:
    base = CameraHealth(
        id=1,
        name="gate-2",
        entrance_id=None,
        entrance=None,
        enabled=True,
        analyse_fps=None,
        roi=None,
        state="running",
        fps=25.0,
        analysed_fps=5.0,
        frames=1000,
        dropped_frames=0,
        frames_at=NOW,
        last_sighting=None,
        pinned=(),
        runs_enabled=True,
        snapshot_at=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _dev(*cams: CameraHealth, **kw: object) -> DeviceHealth:
    base = DeviceHealth(
        id=1,
        name="box",
        site_id=1,
        site_name="S",
        disabled=False,
        online=True,
        last_heartbeat=NOW - timedelta(seconds=10),
        software_version="1",
        outbox=0,
        outbox_lost=0,
        gallery_version=3,
        site_gallery_version=3,
        config_version=2,
        server_config_version=2,
        future_refused=0,
        cameras=cams or (_cam(),),
        problems=(),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def keys(d: DeviceHealth) -> list[str]:
    return [p.key for p in problems(d, NOW)]


def test_a_healthy_box_has_nothing_to_say() -> None:
    assert keys(_dev()) == []


def test_each_rule_in_words_with_its_numbers() -> None:
    dark = _cam(state="reconnecting", fps=0.0, frames_at=NOW - timedelta(hours=2, minutes=1))
    found = problems(
        _dev(
            dark,
            _cam(name="lobby", dropped_frames=80),
            outbox=3400,
            outbox_lost=2,
            config_version=3,
            server_config_version=4,
            gallery_version=5,
            site_gallery_version=6,
            future_refused=7,
        ),
        NOW,
    )
    assert [(p.key, dict(p.values)) for p in found] == [
        ("health.no_frames", {"camera": "gate-2", "h": 2, "m": 1}),
        ("health.dropping", {"camera": "lobby", "pct": 8}),
        ("health.backlog", {"n": "3,400"}),
        ("health.lost", {"n": 2}),
        ("health.config_behind", {"box": 3, "server": 4}),
        ("health.gallery_behind", {"box": 5, "server": 6}),
        ("health.clock", {"n": 7}),
    ]


def test_a_brief_reconnect_names_the_state_and_an_off_camera_is_not_a_problem() -> None:
    brief = _cam(state="reconnecting", frames_at=NOW - timedelta(seconds=20))
    assert keys(_dev(brief)) == ["health.cam_reconnecting"]
    assert keys(_dev(_cam(enabled=False, state="stopped"))) == []
    assert keys(_dev(_cam(state="stalled", frames_at=None))) == ["health.cam_stalled"]


def test_offline_never_disabled_and_old_software() -> None:
    late = _dev(online=False, last_heartbeat=NOW - timedelta(minutes=95))
    first = problems(late, NOW)[0]
    assert (first.key, dict(first.values)) == ("health.offline", {"h": 1, "m": 35})
    assert keys(_dev(last_heartbeat=None, online=False)) == ["health.never"]
    assert keys(_dev(disabled=True, outbox=5000)) == ["health.disabled"]
    assert keys(_dev(config_version=None)) == ["health.no_config"]


def _with_problems(d: DeviceHealth) -> DeviceHealth:
    return replace(d, problems=tuple(problems(d, NOW)))


def test_the_dashboard_lists_problems_worst_first_across_devices() -> None:
    rows = [
        _with_problems(_dev(id=1, name="a-lobby", future_refused=3, outbox=5000)),
        _with_problems(_dev(_cam(state="stalled", frames_at=None), id=2, name="b-gate")),
        _with_problems(
            _dev(id=3, name="c-back", online=False, last_heartbeat=NOW - timedelta(hours=3))
        ),
        _with_problems(_dev(id=4, name="d-fine")),
        _with_problems(_dev(id=5, name="e-retired", disabled=True)),
        _with_problems(_dev(id=6, name="f-new", online=False, last_heartbeat=None)),
    ]
    found = [(d.name, p.key) for d, p in needs_attention(rows)]
    assert found == [
        ("c-back", "health.offline"),
        ("f-new", "health.never"),
        ("b-gate", "health.cam_stalled"),
        ("a-lobby", "health.backlog"),
        ("a-lobby", "health.clock"),
    ]


def test_every_health_message_has_a_place_in_the_order() -> None:
    # A new rule with words but no rank would raise on the dashboard; this says so first.
    words = {k for k in catalog("en") if k.startswith("health.")}
    assert words - {"health.ok", "health.disabled"} == set(WORST_FIRST)
    assert len(WORST_FIRST) == len(set(WORST_FIRST))
