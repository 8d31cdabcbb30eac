"""``lintel-server stats``: the cluster and case counts are real counts, per site."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from server.stats import site_stats
from tests.server.clusters.support import new_session, person, seen_on, work
from tests.server.conftest import DeviceCreds


def test_stats_count_clusters_and_open_cases_per_site(
    engine: Engine, device: DeviceCreds, make_device: Callable[..., DeviceCreds]
) -> None:
    other = make_device(site="Other Court", name="gate-b")
    seen_on(engine, device.device_id, (person(1), 1), [0, 1, 2])  # a case
    seen_on(engine, device.device_id, (person(2), 2), [0])  # a one-off visitor
    seen_on(engine, other.device_id, (person(3), 3), [0, 1])  # not yet a case
    work(engine)
    with new_session(engine) as s:
        here = site_stats(session=s, site_id=device.site_id)
        there = site_stats(session=s, site_id=other.site_id)
        everywhere = site_stats(session=s)
    assert (here["clusters"], here["open_cases"], here["likely_occupant_clusters"]) == (2, 1, 0)
    assert (there["clusters"], there["open_cases"]) == (1, 0)
    assert (everywhere["clusters"], everywhere["open_cases"]) == (3, 1)
    assert everywhere["site_id"] == "all"
    assert here["sightings_unknown"] == 4
