"""Each case outcome's effects, suppression, and retroactive resolution (both databases)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.cases import outcomes, service, whitelist
from server.cases.errors import BadOutcome, CaseClosed
from server.cases.models import Case, CaseEvent, WhitelistEntry
from server.clusters.models import UnknownCluster
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, upsert_occupant
from server.sites.models import Site
from server.sites.service import get_or_create_unit
from server.users.service import create_user
from tests.server.clusters.support import (
    DAY0,
    MODEL,
    ingest,
    item,
    look,
    new_session,
    person,
    seen_on,
    work,
)
from tests.server.conftest import DeviceCreds

ACTOR = "user:1"


def _open_case(engine: Engine, device: DeviceCreds, seed: int, days: list[int]) -> int:
    """A case for person ``seed`` seen on ``days``; returns the case id."""
    seen_on(engine, device.device_id, (person(seed), seed), days)
    work(engine)
    with new_session(engine) as s:
        case = s.scalars(select(Case).where(Case.status == "open").order_by(Case.id.desc())).first()
        assert case is not None
        return case.id


def _case(s: Session, case_id: int) -> Case:
    case = s.get(Case, case_id)
    assert case is not None
    return case


def _cluster(s: Session, case_id: int) -> UnknownCluster:
    cluster = s.get(UnknownCluster, _case(s, case_id).cluster_id)
    assert cluster is not None
    return cluster


def _gallery_version(s: Session, site_id: int) -> int:
    v = s.scalar(select(Site.gallery_version).where(Site.id == site_id))
    assert v is not None
    return v


def test_assign_and_contact_keep_the_case_and_are_audited(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 11, [0, 1, 2])
    with new_session(engine) as s:
        viewer = create_user(session=s, username="v", role="viewer", site_ids=[device.site_id])
        manager = create_user(session=s, username="m", role="manager", site_ids=[device.site_id])
        s.commit()
        with pytest.raises(BadOutcome):
            service.assign_case(session=s, case_id=cid, user_id=viewer.id, actor=ACTOR)
        service.assign_case(session=s, case_id=cid, user_id=manager.id, actor=ACTOR)
        service.record_contact(
            session=s, case_id=cid, kind="call", result="no answer", notes="rang 101", actor=ACTOR
        )
        s.commit()
    with new_session(engine) as s:
        case = _case(s, cid)
        assert (case.status, case.assigned_to, case.notes) == ("assigned", manager.id, "rang 101")
        kinds = list(
            s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == cid).order_by(CaseEvent.id))
        )
        assert kinds == ["opened", "assigned", "call"]
        audit = list(
            s.scalars(
                select(AuditEvent.action).where(AuditEvent.actor == ACTOR).order_by(AuditEvent.id)
            )
        )
        assert audit == ["case.assigned", "case.call"]
        with pytest.raises(BadOutcome):
            service.record_contact(
                session=s, case_id=cid, kind="sms", result="x", notes="", actor=ACTOR
            )


def test_enrol_makes_templates_bumps_gallery_and_resolves_the_persons_other_cluster(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 12, [0, 1, 2])
    # The same person's second cluster, not yet a case (a different camera look).
    other = np.asarray(look(person(12), 99, noise=0.035))
    with new_session(engine) as s:
        unit = get_or_create_unit(session=s, site_id=device.site_id, address_key="1-101")
        s.commit()
        before = _gallery_version(s, device.site_id)
        occupant = outcomes.enrol_from_case(
            session=s, case_id=cid, unit_id=unit.id, name="Zhang San", actor=ACTOR
        )
        s.commit()
        case = _case(s, cid)
        assert (case.status, case.outcome, case.occupant_id) == ("closed", "enrolled", occupant.id)
        assert case.unit_id == unit.id
        templates = s.scalar(select(func.count()).where(FaceTemplate.occupant_id == occupant.id))
        assert templates == 3  # one per best sighting
        assert _gallery_version(s, device.site_id) == before + templates
        cluster = _cluster(s, cid)
        assert (cluster.suppression, cluster.occupant_id) == ("occupant", occupant.id)
    # Further unknown sightings of them (an edge that has not synced yet) make no case.
    ingest(engine, device.device_id, [item(other, DAY0 + timedelta(days=d)) for d in (3, 4, 5)])
    work(engine)
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case).where(Case.status == "open")) == 0


def test_merge_into_existing_occupant(engine: Engine, device: DeviceCreds) -> None:
    cid = _open_case(engine, device, 13, [0, 1, 2])
    with new_session(engine) as s:
        occ = upsert_occupant(session=s, site_id=device.site_id, name="Li Si")
        s.commit()
        outcomes.merge_into_occupant(session=s, case_id=cid, occupant_id=occ.id, actor=ACTOR)
        s.commit()
        assert _case(s, cid).outcome == "merged_into_occupant"
        assert s.scalar(select(func.count()).where(FaceTemplate.occupant_id == occ.id)) == 3
        with pytest.raises(CaseClosed):
            outcomes.close_as_visitor(session=s, case_id=cid, notes="", actor=ACTOR)


def test_visitor_is_suppressed_then_needs_three_new_days(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 14, [0, 1, 2])
    with new_session(engine) as s:
        outcomes.close_as_visitor(session=s, case_id=cid, notes="sister", actor=ACTOR)
        s.commit()
        cluster = _cluster(s, cid)
        assert cluster.suppressed_until == DAY0 + timedelta(days=32)
    guest = (person(14), 14)
    seen_on(engine, device.device_id, guest, [5, 6, 7])  # within 30 days: no case
    work(engine)
    seen_on(engine, device.device_id, guest, [40, 41])  # after: old days do not count
    work(engine)
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 1
    seen_on(engine, device.device_id, guest, [42])
    work(engine)
    with new_session(engine) as s:
        cases = list(s.scalars(select(Case).order_by(Case.id)))
        assert [(c.status, c.outcome) for c in cases] == [("closed", "visitor"), ("open", None)]
        assert cases[0].cluster_id == cases[1].cluster_id


def test_moved_out_suppresses_for_its_own_period(engine: Engine, device: DeviceCreds) -> None:
    cid = _open_case(engine, device, 15, [0, 1, 2])
    with new_session(engine) as s:
        outcomes.close_as_moved_out(session=s, case_id=cid, notes="left in March", actor=ACTOR)
        s.commit()
        cluster = _cluster(s, cid)
        assert cluster.suppression == "moved_out"
        assert cluster.suppressed_until == DAY0 + timedelta(days=92)


def test_courier_is_whitelisted_and_a_new_cluster_of_them_makes_no_case(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 16, [0, 1, 2])
    with new_session(engine) as s:
        entry = whitelist.whitelist_from_case(
            session=s, case_id=cid, kind="courier", label="SF Express", actor=ACTOR
        )
        s.commit()
        assert (entry.kind, entry.cluster_id) == ("courier", _case(s, cid).cluster_id)
        assert _case(s, cid).outcome == "courier"
        # Retire the cluster so the next sightings must form a new one.
        _cluster(s, cid).status = "retired"
        s.commit()
    seen_on(engine, device.device_id, (person(16), 16), [3, 4, 5])
    work(engine)
    with new_session(engine) as s:
        clusters = list(s.scalars(select(UnknownCluster).where(UnknownCluster.status == "active")))
        assert len(clusters) == 1 and clusters[0].suppression == "whitelist"
        assert s.scalar(select(func.count()).select_from(Case).where(Case.status == "open")) == 0


def test_false_match_retires_the_cluster_and_counting_restarts(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 17, [0, 1, 2])
    with new_session(engine) as s:
        outcomes.close_as_false_match(session=s, case_id=cid, notes="two people", actor=ACTOR)
        s.commit()
        assert _cluster(s, cid).status == "retired"
    seen_on(engine, device.device_id, (person(17), 17), [3, 4])
    work(engine)
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case).where(Case.status == "open")) == 0
        active = s.scalars(select(UnknownCluster).where(UnknownCluster.status == "active")).one()
        assert active.days == ["2026-03-05", "2026-03-06"]


def test_failed_action_changes_nothing(
    engine: Engine, device: DeviceCreds, make_device: Callable[..., DeviceCreds]
) -> None:
    cid = _open_case(engine, device, 18, [0, 1, 2])
    elsewhere = make_device(site="Other Court", name="gate")
    with new_session(engine) as s:
        unit = get_or_create_unit(session=s, site_id=elsewhere.site_id, address_key="9-909")
        s.commit()
        with pytest.raises(BadOutcome):
            outcomes.enrol_from_case(session=s, case_id=cid, unit_id=unit.id, name="X", actor=ACTOR)
        s.rollback()
        assert _case(s, cid).status == "open"
        assert s.scalar(select(func.count()).select_from(Occupant)) == 0
        assert s.scalar(select(func.count()).where(AuditEvent.actor == ACTOR)) == 0


def test_registry_enrolment_resolves_open_cases_retroactively(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 19, [0, 1, 2])
    with new_session(engine) as s:
        # What a registry import does: an occupant and a template from their photo.
        occ = upsert_occupant(session=s, site_id=device.site_id, name="Wang Wu")
        add_template(
            session=s, occupant_id=occ.id, embedding=look(person(19), 4242), model_id=MODEL
        )
        s.commit()
    stats = work(engine)
    assert stats.resolved == 1
    with new_session(engine) as s:
        case = _case(s, cid)
        assert (case.status, case.outcome, case.occupant_id) == (
            "closed",
            "resolved_by_enrolment",
            occ.id,
        )
        assert _cluster(s, cid).suppression == "occupant"


def test_visiting_neighbour_and_registered_resident_never_become_cases(
    engine: Engine, device: DeviceCreds, make_device: Callable[..., DeviceCreds]
) -> None:
    other = make_device(site="Hill Court", name="gate")
    with new_session(engine) as s:
        neighbour = upsert_occupant(session=s, site_id=other.site_id, name="Neighbour")
        add_template(
            session=s, occupant_id=neighbour.id, embedding=look(person(20), 1), model_id=MODEL
        )
        resident = upsert_occupant(session=s, site_id=device.site_id, name="Resident")
        add_template(
            session=s, occupant_id=resident.id, embedding=look(person(21), 1), model_id=MODEL
        )
        s.commit()
    work(engine)  # templates seen before any sighting
    seen_on(engine, device.device_id, (person(20), 20), [0, 1, 2, 3])
    seen_on(engine, device.device_id, (person(21), 21), [0, 1, 2, 3])
    work(engine)
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 0
        got = {c.occupant_id: c.suppression for c in s.scalars(select(UnknownCluster))}
        assert got == {neighbour.id: "neighbour", resident.id: "occupant"}


def test_whitelist_by_embedding_before_they_ever_come(engine: Engine, device: DeviceCreds) -> None:
    with new_session(engine) as s:
        whitelist.add_whitelist(
            session=s,
            site_id=device.site_id,
            kind="staff",
            label="cleaner",
            model_id=MODEL,
            embeddings=np.vstack([look(person(22), 5)]),
            actor=ACTOR,
        )
        s.commit()
        assert s.scalar(select(func.count()).select_from(WhitelistEntry)) == 1
    seen_on(engine, device.device_id, (person(22), 22), [0, 1, 2, 3, 4])
    work(engine)
    with new_session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 0


def test_a_weak_match_with_an_occupant_is_named_on_the_new_case(
    engine: Engine, device: DeviceCreds
) -> None:
    from server.cases.rules import CaseRule
    from server.clusters.service import configure_site
    from tests.server.clusters.support import at_cos

    face = person(23)
    with new_session(engine) as s:
        # Attribution off: with it, members this consistent would label the cluster a
        # likely occupant instead of opening a case (tests/server/cases/test_attribution.py).
        configure_site(
            session=s, site_id=device.site_id, case_rule=CaseRule(attribute_weak_matches=False)
        )
        occ = upsert_occupant(session=s, site_id=device.site_id, name="Poor Photo")
        # The enrolment photo is far from how they look at the door (cosine 0.38).
        add_template(session=s, occupant_id=occ.id, embedding=at_cos(face, 0.38, 5), model_id=MODEL)
        s.commit()
    ingest(engine, device.device_id, [item(face, DAY0 + timedelta(days=d)) for d in range(3)])
    work(engine)
    with new_session(engine) as s:
        case = s.scalars(select(Case)).one()
        opened = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.kind == "opened")
        ).one()
        assert opened.detail is not None
        assert opened.detail["possible_occupant_id"] == occ.id
        assert opened.detail["similarity"] == pytest.approx(0.38, abs=1e-3)
