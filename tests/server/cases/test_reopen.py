"""The register is never changed as a side effect, and every manager outcome can be undone
(issue 14 #1 and #3; both databases)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.cases import outcomes
from server.cases.errors import CaseClosed, ReopenRefused
from server.cases.models import Case, CaseEvent, WhitelistEntry
from server.db import utcnow
from server.occupants.models import FaceTemplate, Occupant
from server.occupants.service import add_template, upsert_occupant
from server.sites.service import get_or_create_unit
from tests.server.cases.test_outcomes import _case, _cluster, _gallery_version, _open_case
from tests.server.clusters.support import MODEL, new_session, person, seen_on, work
from tests.server.conftest import DeviceCreds

ACTOR = "user:1"
COS = 0.9


def _case_of(
    engine: Engine, device: DeviceCreds, base: npt.NDArray[np.float32], seed: int, days: list[int]
) -> int:
    """A case for identity ``base`` (looks seeded by ``seed``) seen on ``days``."""
    seen_on(engine, device.device_id, (base, seed), days)
    work(engine)
    with new_session(engine) as s:
        case = s.scalars(select(Case).where(Case.status == "open").order_by(Case.id.desc())).first()
        assert case is not None
        return case.id


def _templates(s: Session, occupant_id: int) -> int:
    n = s.scalar(select(func.count()).where(FaceTemplate.occupant_id == occupant_id))
    assert n is not None
    return n


def _registered_wang_fang(s: Session, site_id: int) -> tuple[int, int]:
    """The register's owner of 502, with one registry template: (occupant id, unit id)."""
    unit = get_or_create_unit(session=s, site_id=site_id, address_key="3-1-502")
    wang = upsert_occupant(
        session=s,
        site_id=site_id,
        name="王芳",
        unit_id=unit.id,
        role="owner",
        move_in=date(2019, 5, 1),
    )
    add_template(
        session=s, occupant_id=wang.id, embedding=person(900), model_id=MODEL, source="registry"
    )
    s.commit()
    return wang.id, unit.id


def test_enrol_under_a_registered_name_makes_a_new_person_and_leaves_the_register_alone(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 31, [0, 1, 2])
    with new_session(engine) as s:
        wang_id, unit_id = _registered_wang_fang(s, device.site_id)
        new = outcomes.enrol_from_case(
            session=s, case_id=cid, unit_id=unit_id, name="王芳", role="tenant", actor=ACTOR
        )
        s.commit()
        assert new.id != wang_id
    with new_session(engine) as s:
        wang = s.get(Occupant, wang_id)
        assert wang is not None
        assert (wang.name, wang.role, wang.move_in) == ("王芳", "owner", date(2019, 5, 1))
        assert _templates(s, wang_id) == 1  # the stranger's faces went to the new person
        assert _templates(s, new.id) == 3
        assert _case(s, cid).occupant_id == new.id


def test_reopened_enrol_removes_its_templates_and_the_new_occupant_and_bumps_the_gallery(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 32, [0, 1, 2])
    with new_session(engine) as s:
        unit = get_or_create_unit(session=s, site_id=device.site_id, address_key="1-101")
        s.commit()
        occupant = outcomes.enrol_from_case(
            session=s, case_id=cid, unit_id=unit.id, name="Zhang San", actor=ACTOR
        )
        s.commit()
        occupant_id = occupant.id
        after_enrol = _gallery_version(s, device.site_id)
        outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=False)
        s.commit()
    with new_session(engine) as s:
        case = _case(s, cid)
        assert (case.status, case.outcome, case.occupant_id) == ("open", None, None)
        assert case.undo is None
        assert _templates(s, occupant_id) == 0
        assert s.get(Occupant, occupant_id) is None  # nothing else referred to them
        assert _gallery_version(s, device.site_id) == after_enrol + 1
        cluster = _cluster(s, cid)
        assert (cluster.suppression, cluster.occupant_id) == (None, None)
        # In event order: without ORDER BY, PostgreSQL may return reused heap slots first.
        events = list(
            s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == cid).order_by(CaseEvent.id))
        )
        assert events[-1] == "reopened"
        assert s.scalar(select(AuditEvent.id).where(AuditEvent.action == "case.reopened"))
    # Reopened means open: the same case can take another outcome.
    with new_session(engine) as s:
        outcomes.close_as_visitor(session=s, case_id=cid, notes="", actor=ACTOR)
        s.commit()
        assert _case(s, cid).outcome == "visitor"


def test_reopened_merge_keeps_the_existing_occupant_and_their_own_templates(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 33, [0, 1, 2])
    with new_session(engine) as s:
        wang_id, _ = _registered_wang_fang(s, device.site_id)
        outcomes.merge_into_occupant(session=s, case_id=cid, occupant_id=wang_id, actor=ACTOR)
        s.commit()
        assert _templates(s, wang_id) == 4
        outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=False)
        s.commit()
    with new_session(engine) as s:
        assert s.get(Occupant, wang_id) is not None
        assert _templates(s, wang_id) == 1


def test_reopened_courier_withdraws_the_whitelist_entry(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 34, [0, 1, 2])
    with new_session(engine) as s:
        outcomes.close_with_outcome(
            session=s, case_id=cid, outcome="courier", label="SF Express", actor=ACTOR
        )
        s.commit()
        assert _cluster(s, cid).suppression == "whitelist"
        outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=False)
        s.commit()
    with new_session(engine) as s:
        entry = s.scalar(select(WhitelistEntry))
        assert entry is not None and entry.active is False
        assert _cluster(s, cid).suppression is None
        assert s.scalar(select(AuditEvent.id).where(AuditEvent.action == "whitelist.withdraw"))


@pytest.mark.parametrize("outcome", ["visitor", "moved_out", "false_match"])
def test_reopen_restores_the_cluster_as_it_was(
    engine: Engine, device: DeviceCreds, outcome: str
) -> None:
    cid = _open_case(engine, device, 35, [0, 1, 2])
    with new_session(engine) as s:
        cluster = _cluster(s, cid)
        c = cluster
        before = (c.status, c.suppression, c.suppressed_until, c.count_since)
        outcomes.close_with_outcome(session=s, case_id=cid, outcome=outcome, actor=ACTOR)
        s.commit()
        assert (_cluster(s, cid).status, _cluster(s, cid).suppression) != before[:2]
        outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=False)
        s.commit()
    with new_session(engine) as s:
        c = _cluster(s, cid)
        assert (c.status, c.suppression, c.suppressed_until, c.count_since) == before


def test_managers_reopen_for_seven_days_admins_always_and_system_closes_are_final(
    engine: Engine, device: DeviceCreds
) -> None:
    cid = _open_case(engine, device, 36, [0, 1, 2])
    with new_session(engine) as s:
        outcomes.close_as_visitor(session=s, case_id=cid, notes="", actor=ACTOR)
        s.commit()
        later = utcnow() + timedelta(days=outcomes.REOPEN_DAYS, hours=1)
        with pytest.raises(ReopenRefused, match="ask an admin"):
            outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=False, now=later)
        s.rollback()
        assert _case(s, cid).status == "closed"  # refused: nothing changed
        outcomes.reopen_case(session=s, case_id=cid, actor="user:9", is_admin=True, now=later)
        s.commit()
        assert _case(s, cid).status == "open"
        with pytest.raises(CaseClosed):  # an open case is not reopened
            outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=True)
        s.rollback()
        # A case the system closed (resolved by a later enrolment) has no undo.
        case = _case(s, cid)
        case.status, case.outcome, case.undo = "closed", "resolved_by_enrolment", None
        s.commit()
        with pytest.raises(ReopenRefused, match="closed by the system"):
            outcomes.reopen_case(session=s, case_id=cid, actor=ACTOR, is_admin=True)


def test_reopened_enrol_reopens_the_case_it_resolved(engine: Engine, device: DeviceCreds) -> None:
    # Two clusters and cases of the same person; enrolling from one resolves the
    # other. Reopening puts both back.
    first = _open_case(engine, device, 37, [0, 1, 2])
    second = _case_of(engine, device, person(38), 38, [3, 4, 5])
    assert second != first
    with new_session(engine) as s:
        # The same person split over two clusters (pose, light): the second cluster
        # gets the first one's vectors, so the enrolled templates match it.
        a, b = _cluster(s, first), _cluster(s, second)
        b.total, b.exemplars = a.total, a.exemplars
        s.commit()
        unit = get_or_create_unit(session=s, site_id=device.site_id, address_key="1-102")
        s.commit()
        occupant = outcomes.enrol_from_case(
            session=s, case_id=first, unit_id=unit.id, name="Chen", actor=ACTOR
        )
        s.commit()
        assert _case(s, second).outcome == "resolved_by_enrolment"
        outcomes.reopen_case(session=s, case_id=first, actor=ACTOR, is_admin=False)
        s.commit()
        assert _case(s, second).status == "open"
        assert _cluster(s, second).occupant_id is None
        assert s.get(Occupant, occupant.id) is None
