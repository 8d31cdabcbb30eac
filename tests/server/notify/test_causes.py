"""Events are written by their causes, in the causes' transactions."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.face.models import resolve_pack
from edge.wire import encode_embedding
from server.cases.models import Case
from server.cases.outcomes import close_with_outcome, reopen_case
from server.clusters import worker
from server.db import make_session_factory
from server.notify.messages import render
from server.notify.models import NotifyDelivery, NotifyEvent
from server.notify.sender import SenderConfig, deliver_due
from server.notify.service import add_channel
from server.users.service import create_api_token, create_user
from tests.registry.helpers import make_id
from tests.server.clusters.support import DAY0, ingest, item, look, person, seen_on, work
from tests.server.conftest import DeviceCreds
from tests.server.helpers import jpeg_bytes
from tests.server.notify.conftest import SECRET, Receiver


def _channel(session: Session, site_id: int, **kw: Any) -> None:
    add_channel(
        session=session,
        site_id=site_id,
        name="hook",
        kind="webhook",
        url="http://127.0.0.1:9/",
        **kw,
    )
    session.commit()


def test_the_worker_writes_case_opened_with_the_case(
    engine: Engine, session: Session, make_device: Callable[..., DeviceCreds]
) -> None:
    dev = make_device()
    _channel(session, dev.site_id)
    seen_on(engine, dev.device_id, (person(1), 1), [0, 1, 2])
    assert work(engine).cases_opened == 1
    case = session.scalars(select(Case)).one()
    event = session.scalars(select(NotifyEvent)).one()
    assert event.kind == "case.opened" and event.site_id == dev.site_id
    assert event.data["case_id"] == case.id and event.data["days"] == 3
    assert event.data["desk_check"] is False  # nobody registered looks like this face
    assert len(event.event_id) == 36
    assert session.scalar(select(func.count()).select_from(NotifyDelivery)) == 1


def test_a_case_rolled_back_leaves_no_event(
    engine: Engine,
    session: Session,
    make_device: Callable[..., DeviceCreds],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = make_device()
    _channel(session, dev.site_id)
    seen_on(engine, dev.device_id, (person(2), 2), [0, 1, 2])
    real = worker.evaluate_clusters

    def opens_then_fails(**kw: Any) -> Any:
        opened = real(**kw)
        assert opened  # the case and its event were written in this transaction...
        raise RuntimeError("the pass fails after opening the case")

    monkeypatch.setattr(worker, "evaluate_clusters", opens_then_fails)
    # The worker isolates sites: the failing site is rolled back and counted, not raised.
    assert work(engine).failed_sites == 1
    session.expire_all()
    # ...and went with it.
    assert session.scalar(select(func.count()).select_from(Case)) == 0
    assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 0
    assert session.scalar(select(func.count()).select_from(NotifyDelivery)) == 0


def test_import_finished_carries_the_counts(client: httpx.Client, session: Session) -> None:
    from server.sites.service import create_site

    model_id = resolve_pack("buffalo_s").model_id
    site = create_site(session=session, name="东区", model_id=model_id)
    user = create_user(session=session, username="admin", role="admin", site_ids=[])
    _row, token = create_api_token(session=session, user_id=user.id)
    _channel(session, site.id)
    vec = np.zeros(512, np.float32)
    vec[0] = 1.0
    cells = {
        "name": "甲",
        "id_number": make_id(40),
        "address": "1-1-1",
        "role": "业主",
        "photo": "a.jpg",
    }
    body = {
        "source": "api.csv",
        "columns": {
            "name": "姓名",
            "id_number": "证件号码",
            "address": "地址",
            "role": "身份",
            "photo": "照片",
        },
        "rows": [{"number": 2, "cells": cells}],
        "templates": [
            {
                "row": 2,
                "embedding_b64": encode_embedding(vec),
                "model_id": model_id,
                "quality": 0.9,
                "photo_sha256": "a" * 64,
            }
        ],
        "model_id": model_id,
    }
    r = client.post(
        "/api/v1/sites/东区/registry/import",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    session.expire_all()
    event = session.scalars(select(NotifyEvent)).one()
    assert event.kind == "import.finished" and event.site_id == site.id
    assert event.data["rows"] == 1 and event.data["created"] == 1 and event.data["failed"] == 0
    # A dry run writes nothing, so it tells nobody.
    r = client.post(
        "/api/v1/sites/东区/registry/import?dry_run=true",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 1


def test_reopening_a_case_writes_case_reopened_with_it(
    engine: Engine, session: Session, make_device: Callable[..., DeviceCreds]
) -> None:
    dev = make_device()
    _channel(session, dev.site_id, events=["case.reopened"])
    seen_on(engine, dev.device_id, (person(3), 3), [0, 1, 2])
    work(engine)
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(NotifyEvent)) == 1  # case.opened
    assert session.scalar(select(func.count()).select_from(NotifyDelivery)) == 0  # not wanted
    case = session.scalars(select(Case)).one()
    close_with_outcome(session=session, case_id=case.id, outcome="visitor", actor="user:1")
    session.commit()
    reopen_case(session=session, case_id=case.id, actor="user:1", is_admin=True)
    session.commit()
    session.expire_all()
    event = session.scalars(select(NotifyEvent).where(NotifyEvent.kind == "case.reopened")).one()
    assert event.data == {"case_id": case.id, "cluster_id": case.cluster_id, "by": "user:1"}
    assert session.scalar(select(func.count()).select_from(NotifyDelivery)) == 1


def test_thumbnail_goes_only_to_the_channel_that_opted_in(
    engine: Engine,
    session: Session,
    make_device: Callable[..., DeviceCreds],
    receiver: Receiver,
) -> None:
    dev = make_device()
    for name, thumb in (("with", True), ("without", False)):
        add_channel(
            session=session,
            site_id=dev.site_id,
            name=name,
            kind="webhook",
            url=receiver.url + "/" + name,
            secret=SECRET,
            thumbnail=thumb,
        )
    session.commit()
    base = person(4)
    crops = [jpeg_bytes(seed=d) for d in range(3)]
    items = []
    for d in range(3):
        it = item(look(base, 4000 + d), DAY0 + timedelta(days=d), quality=0.5 + 0.1 * d)
        it["crop_jpeg_b64"] = base64.b64encode(crops[d]).decode()
        items.append(it)
    ingest(engine, dev.device_id, items)
    assert work(engine).cases_opened == 1
    assert deliver_due(make_session_factory(engine), config=SenderConfig(base_delay_s=0)).sent == 2
    by_path = {r.path: r.json() for r in receiver.accepted()}
    assert base64.b64decode(by_path["/hook/with"]["thumbnail_jpeg_base64"]) == crops[2]  # the best
    assert "thumbnail_jpeg_base64" not in by_path["/hook/without"]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_a_desk_check_case_is_announced_as_one_without_naming_anyone(language: str) -> None:
    data = {"case_id": 4, "cluster_id": 9, "days": 3, "night_entries": 1, "priority": 5.2}
    plain = render(kind="case.opened", data=data, site="S", language=language, link_base=None)
    desk = render(
        kind="case.opened",
        data={**data, "desk_check": True},
        site="S",
        language=language,
        link_base=None,
    )
    assert desk.title == plain.title
    assert desk.text != plain.text
    assert ("desk check" in desk.text) if language == "en" else ("台账核对" in desk.text)
    assert ("unregistered" in plain.text) if language == "en" else ("未登记" in plain.text)
