"""Issue 18, finding 1: every door that takes a face embedding checks it against the
model (size, finite, unit length) and refuses a bad one with a 4xx naming the item.

Doors: the registry import (API), the whitelist (API), enrolment
(``add_template``, which the import, case outcomes and likely-occupant
confirmation all go through) and sighting ingest (API, per item). Hypothesis
draws wrong sizes, NaN/inf and non-unit vectors for each; none may get a 2xx
or a 500, and nothing of it may be stored.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX, encode_embedding
from server.cases.models import WhitelistEntry
from server.db import make_session_factory
from server.embeddings import (
    MODEL_DIMENSIONS,
    InvalidEmbedding,
    check_embedding,
    model_dimension,
)
from server.occupants.models import FaceTemplate
from server.occupants.service import add_template, upsert_occupant
from server.sightings.models import Sighting
from server.sites.service import create_site
from server.users.service import create_api_token, create_user
from tests.registry.helpers import make_id
from tests.server.conftest import DeviceCreds
from tests.server.helpers import unknown_item

REAL_MODEL = "buffalo_s/w600k_mbf"
DIM = MODEL_DIMENSIONS[REAL_MODEL]
DOOR_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


_GATES = itertools.count()
_TOKENS: dict[str, dict[str, str]] = {}
"""API tokens made once per test (hypothesis runs a test's examples on one database)."""


def unit(dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


@st.composite
def bad_vectors(draw: st.DrawFn) -> npt.NDArray[np.float32]:
    """A vector the model cannot have made: wrong size, NaN/inf, or not unit length."""
    seed = draw(st.integers(0, 2**16))
    kind = draw(st.sampled_from(["size", "nonfinite", "norm"]))
    if kind == "size":
        return unit(draw(st.integers(1, 1024).filter(lambda n: n != DIM)), seed)
    vec = unit(DIM, seed)
    if kind == "nonfinite":
        vec[draw(st.integers(0, DIM - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return vec
    scale = draw(st.one_of(st.floats(0.0, 0.99), st.floats(1.01, 1e6)))
    return (vec * np.float32(scale)).astype(np.float32)


def _token(engine: Engine, username: str, role: str, site_ids: list[int]) -> dict[str, str]:
    with make_session_factory(engine)() as s:
        user = create_user(session=s, username=username, role=role, site_ids=site_ids)
        _row, token = create_api_token(session=s, user_id=user.id)
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def _token_once(engine: Engine, username: str, role: str, site_ids: list[int]) -> dict[str, str]:
    if username not in _TOKENS:
        _TOKENS[username] = _token(engine, username, role, site_ids)
    return _TOKENS[username]


def _count(engine: Engine, column: Any) -> int:
    with make_session_factory(engine)() as s:
        return int(s.scalar(select(func.count(column))) or 0)


def _import_body(vec: npt.NDArray[np.float32], model_id: str = REAL_MODEL) -> dict[str, Any]:
    cells = {"name": "甲", "id_number": make_id(40), "address": "1-1-1", "role": "业主"}
    return {
        "source": "api.csv",
        "columns": {"name": "姓名", "id_number": "证件号码", "address": "地址", "role": "身份"}
        | {"photo": "照片"},
        "rows": [{"number": 2, "cells": cells | {"photo": "a.jpg"}}],
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


# -- the one check --------------------------------------------------------------------------
def test_check_embedding_says_why() -> None:
    good = unit(DIM)
    assert check_embedding(good, dim=DIM).dtype == np.float32
    with pytest.raises(InvalidEmbedding, match=r"row 7.*has 4 values; the model's .* 512"):
        check_embedding(unit(4), dim=DIM, what="templates[0] (row 7)")
    nan = good.copy()
    nan[3] = np.nan
    with pytest.raises(InvalidEmbedding, match="NaN or infinite"):
        check_embedding(nan, dim=DIM)
    with pytest.raises(InvalidEmbedding, match="not unit length"):
        check_embedding(good * 2, dim=DIM)
    with pytest.raises(InvalidEmbedding, match="flat vector"):
        check_embedding(np.vstack([good, good]), dim=DIM)
    # An InvalidEmbedding is a ValueError too: pydantic validators turn it into a 422.
    assert issubclass(InvalidEmbedding, ValueError)


@given(vec=bad_vectors())
@settings(max_examples=200, deadline=None)
def test_check_embedding_refuses_every_bad_vector(vec: npt.NDArray[np.float32]) -> None:
    with pytest.raises(InvalidEmbedding):
        check_embedding(vec, dim=DIM)


def test_a_model_without_a_table_entry_takes_the_size_most_stored_faces_have(
    session: Session,
) -> None:
    site = create_site(session=session, name="Learned", model_id="pack/new")
    occ = upsert_occupant(session=session, site_id=site.id, name="Li")
    assert model_dimension(session, "pack/new") is None  # nothing stored: the first sets it
    add_template(session=session, occupant_id=occ.id, embedding=unit(64), model_id="pack/new")
    assert model_dimension(session, "pack/new") == 64
    with pytest.raises(InvalidEmbedding, match="has 32 values; the model's embeddings have 64"):
        add_template(session=session, occupant_id=occ.id, embedding=unit(32), model_id="pack/new")
    # A wrong-size row stored before the check existed does not outvote the good ones.
    session.add(
        FaceTemplate(
            occupant_id=occ.id,
            site_id=site.id,
            embedding=unit(4).astype("<f4").tobytes(),
            model_id="pack/other",
        )
    )
    for seed in range(2):
        session.add(
            FaceTemplate(
                occupant_id=occ.id,
                site_id=site.id,
                embedding=unit(16, seed).astype("<f4").tobytes(),
                model_id="pack/other",
            )
        )
    session.flush()
    assert model_dimension(session, "pack/other") == 16


# -- enrolment --------------------------------------------------------------------------------
@pytest.fixture
def real_site(session: Session) -> int:
    site = create_site(session=session, name="Real Model Court", model_id=REAL_MODEL)
    return site.id


@given(vec=bad_vectors())
@DOOR_SETTINGS
def test_enrolment_refuses_bad_embeddings(
    session: Session, real_site: int, vec: npt.NDArray[np.float32]
) -> None:
    occ = upsert_occupant(session=session, site_id=real_site, name="Wang")
    with pytest.raises(InvalidEmbedding):
        add_template(session=session, occupant_id=occ.id, embedding=vec, model_id=REAL_MODEL)
    assert session.scalar(select(func.count(FaceTemplate.id))) == 0


# -- registry import ----------------------------------------------------------------------------
def test_import_of_a_4_value_face_is_refused_naming_the_row(
    engine: Engine, client: httpx.Client
) -> None:
    admin = _token(engine, "admin", "admin", [])
    path = f"{API_PREFIX}/sites/Import Court/registry/import"
    r = client.post(path, json=_import_body(unit(4)), headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_embedding"
    assert "templates[0] (row 2) has 4 values" in r.json()["detail"]
    assert _count(engine, FaceTemplate.id) == 0
    ok = client.post(path, json=_import_body(unit(DIM)), headers=admin)
    assert ok.status_code == 200, ok.text
    assert _count(engine, FaceTemplate.id) == 1


@given(vec=bad_vectors())
@DOOR_SETTINGS
def test_import_refuses_bad_embeddings_with_4xx(
    engine: Engine, client: httpx.Client, vec: npt.NDArray[np.float32]
) -> None:
    headers = _token_once(engine, "imp", "admin", [])
    r = client.post(
        f"{API_PREFIX}/sites/Import Court/registry/import",
        json=_import_body(vec),
        headers=headers,
    )
    assert r.status_code == 422, r.text
    assert _count(engine, FaceTemplate.id) == 0


@pytest.fixture(autouse=True)
def _forget_tokens() -> None:
    # The engine fixture empties every table after a test: its tokens go with them.
    _TOKENS.clear()


# -- whitelist ------------------------------------------------------------------------------
def test_whitelisting_a_4_value_face_is_a_422_not_a_500(
    engine: Engine,
    client: httpx.Client,
    make_device: Callable[..., DeviceCreds],
) -> None:
    dev = make_device(site="White Court", model_id=REAL_MODEL)
    manager = _token(engine, "mgr", "manager", [dev.site_id])
    body = {
        "site": "White Court",
        "kind": "staff",
        "embeddings_b64": [encode_embedding(unit(DIM)), encode_embedding(unit(4))],
    }
    r = client.post(f"{API_PREFIX}/whitelist", json=body, headers=manager)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_embedding"
    assert "embeddings[1] has 4 values" in r.json()["detail"]
    assert _count(engine, WhitelistEntry.id) == 0
    body["embeddings_b64"] = body["embeddings_b64"][:1]
    assert client.post(f"{API_PREFIX}/whitelist", json=body, headers=manager).status_code == 200


@given(vec=bad_vectors())
@DOOR_SETTINGS
def test_whitelist_refuses_bad_embeddings_with_4xx(
    engine: Engine,
    client: httpx.Client,
    make_device: Callable[..., DeviceCreds],
    vec: npt.NDArray[np.float32],
) -> None:
    dev = make_device(site="White Court", model_id=REAL_MODEL, name=f"gate-{next(_GATES)}")
    headers = _token_once(engine, "wl", "manager", [dev.site_id])
    body = {"site": "White Court", "kind": "courier", "embeddings_b64": [encode_embedding(vec)]}
    r = client.post(f"{API_PREFIX}/whitelist", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert _count(engine, WhitelistEntry.id) == 0


# -- sighting ingest ------------------------------------------------------------------------------
def _upload(client: httpx.Client, dev: DeviceCreds, items: list[dict[str, Any]]) -> Any:
    r = client.post(
        f"{API_PREFIX}/device/sightings", json={"sightings": items}, headers=dev.headers
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_ingest_refuses_a_4_value_face_and_keeps_the_rest(
    engine: Engine, client: httpx.Client, make_device: Callable[..., DeviceCreds]
) -> None:
    dev = make_device(site="Gate Court", model_id=REAL_MODEL)
    good = unknown_item(n=1, model_id=REAL_MODEL)
    good["embedding_b64"] = encode_embedding(unit(DIM, 1))
    bad = unknown_item(n=2, model_id=REAL_MODEL)
    bad["embedding_b64"] = encode_embedding(unit(4, 2))
    out = _upload(client, dev, [good, bad])
    assert out["created"] == 1
    [err] = out["errors"]
    assert err["index"] == 1 and "embedding_b64 has 4 values" in err["error"]
    assert _count(engine, Sighting.id) == 1


@given(vec=bad_vectors())
@DOOR_SETTINGS
def test_ingest_refuses_bad_embeddings_item_by_item(
    engine: Engine,
    client: httpx.Client,
    make_device: Callable[..., DeviceCreds],
    vec: npt.NDArray[np.float32],
) -> None:
    dev = make_device(site="Gate Court", model_id=REAL_MODEL, name=f"gate-{next(_GATES)}")
    item = unknown_item(n=0, model_id=REAL_MODEL)
    item["embedding_b64"] = encode_embedding(vec)
    out = _upload(client, dev, [item])
    assert out["created"] == 0 and [e["index"] for e in out["errors"]] == [0]
    assert _count(engine, Sighting.id) == 0
