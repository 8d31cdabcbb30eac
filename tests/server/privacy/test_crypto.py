"""Crops at rest: sealed with AES-GCM, bound to their row, rotated, refused without a key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from edge.wire import API_PREFIX
from server.app import create_app
from server.cli import main
from server.devices.models import Device
from server.privacy.crypto import (
    CropKeyring,
    current_keyring,
    key_id_of,
    load_keyring,
    new_key_text,
)
from server.privacy.errors import CropDecryptFailed, CropKeyError, CropKeyMissing, CropKeyUnknown
from server.settings import Settings
from server.sightings import crops
from server.sightings.models import Sighting, SightingCrop
from server.sightings.service import ingest_batch
from tests.server.clusters.support import new_session
from tests.server.conftest import TEST_SECRET, DeviceCreds
from tests.server.helpers import jpeg_bytes, unknown_item


def _key() -> bytes:
    return os.urandom(32)


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _upload(client: httpx.Client, device: DeviceCreds, jpegs: list[bytes]) -> None:
    items = [unknown_item(n=n, crop=j) for n, j in enumerate(jpegs)]
    url = f"{API_PREFIX}/device/sightings"
    r = client.post(url, json={"sightings": items}, headers=device.headers)
    assert r.status_code == 200 and r.json()["created"] == len(jpegs), r.text


def _crop_ids(engine: Engine) -> list[int]:
    with new_session(engine) as s:
        return list(s.scalars(select(SightingCrop.sighting_id).order_by(SightingCrop.sighting_id)))


def test_uploaded_crops_are_sealed_and_open_again(
    engine: Engine, client: httpx.Client, device: DeviceCreds, app: FastAPI
) -> None:
    jpegs = [jpeg_bytes(1), jpeg_bytes(2)]
    _upload(client, device, jpegs)
    ids = _crop_ids(engine)
    with new_session(engine) as s:
        for sid, jpeg in zip(ids, jpegs, strict=True):
            stored, key_id = s.execute(
                select(SightingCrop.jpeg, SightingCrop.key_id).where(
                    SightingCrop.sighting_id == sid
                )
            ).one()
            assert key_id == current_keyring().active_id
            assert not bytes(stored).startswith(crops.JPEG_MAGIC)
            assert jpeg[100:132] not in bytes(stored)
            assert crops.get(session=s, sighting_id=sid) == jpeg


def test_a_crop_copied_onto_another_row_does_not_open(
    engine: Engine, client: httpx.Client, device: DeviceCreds
) -> None:
    _upload(client, device, [jpeg_bytes(3), jpeg_bytes(4)])
    first, second = _crop_ids(engine)
    with new_session(engine) as s:
        blob = s.scalar(select(SightingCrop.jpeg).where(SightingCrop.sighting_id == first))
        s.execute(update(SightingCrop).where(SightingCrop.sighting_id == second).values(jpeg=blob))
        s.commit()
        with pytest.raises(CropDecryptFailed, match=f"sighting:{second}"):
            crops.get(session=s, sighting_id=second)


def test_wrong_key_fails_clearly_and_rotation_reseals(engine: Engine, device: DeviceCreds) -> None:
    old, new = _key(), _key()
    old_ring = CropKeyring.from_keys(old)
    with new_session(engine) as s:
        sighting_ids = _make_sightings(s, device, 3)
        crops.put_many(
            session=s,
            crops=[(sid, jpeg_bytes(sid)) for sid in sighting_ids],
            expires_at=None,
            keyring=old_ring,
        )
        s.commit()
        new_only = CropKeyring.from_keys(new)
        with pytest.raises(CropKeyUnknown) as err:
            crops.get(session=s, sighting_id=sighting_ids[0], keyring=new_only)
        assert key_id_of(old) in err.value.detail and "LINTEL_CROP_OLD_KEYS" in err.value.detail
        assert _b64(old) not in err.value.detail  # never key material in a message

        rotating = CropKeyring.from_keys(new, [old])
        assert crops.reseal(session=s, keyring=rotating) == 3
        s.commit()
        assert set(s.scalars(select(SightingCrop.key_id))) == {key_id_of(new)}
        for sid in sighting_ids:
            assert crops.get(session=s, sighting_id=sid, keyring=new_only) == jpeg_bytes(sid)
        with pytest.raises(CropKeyUnknown):
            crops.get(session=s, sighting_id=sighting_ids[0], keyring=old_ring)
        assert crops.reseal(session=s, keyring=rotating) == 0  # nothing left to do


def _make_sightings(s: Session, device: DeviceCreds, n: int) -> list[int]:
    """``n`` unknown sightings without crops, through the ingest service."""
    dev = s.get(Device, device.device_id)
    assert dev is not None
    out = ingest_batch(session=s, device=dev, items=[unknown_item(n=i) for i in range(n)])
    assert out.result.created == n
    return sorted(s.scalars(select(Sighting.id)))


def test_plaintext_crops_from_before_encryption_are_read_then_sealed_by_the_cli(
    engine: Engine,
    device: DeviceCreds,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old, new = _key(), _key()
    with new_session(engine) as s:
        ids = _make_sightings(s, device, 2)
        s.execute(  # one legacy row written before migration 0003
            insert(SightingCrop).values(sighting_id=ids[0], jpeg=jpeg_bytes(7), key_id=None)
        )
        crops.put_many(
            session=s,
            crops=[(ids[1], jpeg_bytes(8))],
            expires_at=None,
            keyring=CropKeyring.from_keys(old),
        )
        s.commit()
        assert crops.get(session=s, sighting_id=ids[0]) == jpeg_bytes(7)
    monkeypatch.setenv("LINTEL_DATABASE_URL", db_url)
    monkeypatch.setenv("LINTEL_ENV", "prod")
    monkeypatch.setenv("LINTEL_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("LINTEL_CROP_KEY", _b64(new))
    monkeypatch.setenv("LINTEL_CROP_OLD_KEYS", _b64(old))
    assert main(["crops", "rotate-key", "--json"]) == 0
    assert '"resealed": 2' in capsys.readouterr().out
    new_only = CropKeyring.from_keys(new)
    with new_session(engine) as s:
        assert set(s.scalars(select(SightingCrop.key_id))) == {key_id_of(new)}
        assert crops.get(session=s, sighting_id=ids[0], keyring=new_only) == jpeg_bytes(7)
        assert crops.get(session=s, sighting_id=ids[1], keyring=new_only) == jpeg_bytes(8)


def _settings(tmp_path: Path, env: str, **kw: object) -> Settings:
    return Settings(env=env, secret_key=TEST_SECRET, data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_outside_dev_a_missing_key_refuses_to_start(tmp_path: Path, engine: Engine) -> None:
    with pytest.raises(CropKeyMissing, match="LINTEL_CROP_KEY"):
        load_keyring(_settings(tmp_path, "prod"))
    with pytest.raises(CropKeyMissing):
        create_app(_settings(tmp_path, "prod", migrate_on_start=False), engine=engine)
    assert not (tmp_path / "crop.key").exists()


def test_dev_generates_one_private_key_and_keeps_it(tmp_path: Path) -> None:
    first = load_keyring(_settings(tmp_path, "dev"))
    path = tmp_path / "crop.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(_settings(tmp_path, "test")).active_id == first.active_id


@pytest.mark.parametrize(
    ("value", "message"),
    [("not base64!", "not valid base64"), (base64.b64encode(b"short").decode(), "32 bytes")],
)
def test_malformed_keys_are_refused_by_name(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(CropKeyError, match=message) as err:
        load_keyring(_settings(tmp_path, "prod", crop_key=value))
    assert "LINTEL_CROP_KEY" in err.value.detail


def test_key_file_first_line_seals_the_rest_open(tmp_path: Path) -> None:
    a, b = new_key_text(), new_key_text()
    path = tmp_path / "keys"
    path.write_text(f"# crop keys\n{a}\n\n{b}\n")
    ring = load_keyring(_settings(tmp_path, "prod", crop_key_file=path))
    ids = {key_id_of(base64.b64decode(a)), key_id_of(base64.b64decode(b))}
    assert ring.active_id == key_id_of(base64.b64decode(a))
    assert set(ring.keys) == ids
