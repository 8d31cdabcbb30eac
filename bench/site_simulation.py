"""Simulate N days of entrance traffic at one site and score the cases it produces.

Usage::

    .venv/bin/python bench/site_simulation.py [FACES_DIR] [--days 21] [--json]
        [--database-url postgresql+psycopg://postgres@127.0.0.1/lintel_sim]

``FACES_DIR`` holds ``<identity>/<photo>`` (default ``../shared/eval/faces``).
Every sighting is a fresh *capture*: one of that person's photos with a random
mild augmentation (rotation, scale and crop jitter, brightness/contrast, slight
blur, JPEG re-encode, see :func:`augment`) embedded by the real edge engine
(:class:`edge.face.engine.FaceEngine`: ``detect_photo``, the edge quality gate,
``embed``). A door camera never sees the same image twice; reusing one
photo's embedding would turn one outlier photo into a miss every time it is
drawn. Each photo has ``--variants`` augmentations (seeded by the photo and
the variant number), embedded once and cached under ``var/cache/``; a capture
the quality gate refuses, or with no face, is a track the edge never sends.
Enrolment photos are used as they are (a registry photo is a clean photo).
The population:

* registered residents: enrolled from one photo (a template, as a registry
  import makes); come and go daily. The simulated edge matches each sighting
  against the site gallery: at or above the edge threshold it reports
  ``known`` (no face leaves the box), else ``unknown`` with the embedding;
* unregistered residents: daily, never enrolled: the people cases are for;
* visitors: once or twice in the whole period;
* couriers: most days, several times a day, whitelisted up front by the
  manager from one photo (``POST /api/v1/whitelist``).

Sightings go through the real ingest API (``POST /api/v1/device/sightings``,
in-process ASGI) in batches of 500; after each simulated day the clustering
worker drains the queue. Cases are then read through ``GET /api/v1/cases`` and
scored against the truth. ``sightings_per_s`` is all sightings divided by the
wall time of ingest plus clustering (embeddings are computed before the clock
starts, as an edge box computes them before upload).

Targets (issue 5, as the owner decided them in issue 13): every unregistered
resident is a case within 3 days of their third day seen; at most 5% of
cases are visitors or couriers; no stranger is ever named as an occupant (on
a case, or labelled a likely occupant); every resident case names that
resident (a *desk check*); at most 1 resident case per 40 residents in 21
days with one registry photo, none with two; ingest plus clustering >= 1,000
sightings/s on PostgreSQL. After each day the simulated manager settles the
open cases of residents: a desk check naming the right resident gets "It is
X", a resident case naming nobody is merged into the resident after a visit
(``--no-confirm``, ``--no-visit`` turn these off); any later case of a merged
resident is counted (``cases_after_it_is_x``, target 0). ``--seeds N`` runs
N seeds with one and with two registry photos and prints the targets.

Measured (``--seed 0 --seeds 20``, defaults, SQLite, 2026-12-06, with the
second-template check and the desk-check rule 0.50 / 0.30 / 0.09)::

    1 registry photo: 20 runs, 233 cases
      PASS  unregistered found: 200/200, none later than 3 days
      PASS  visitor + courier cases: 10/233 = 4.3% (0 visitors; worst run 15%)
      PASS  strangers named: 0 (0 on a case, 0 as a likely occupant)
      FAIL  resident cases naming them: 4 of 16 (3 of 16 before)
      PASS  resident cases: 16 in 20 runs of 60 (allowed 30)
      PASS  cases again after the merge: 0 (16 residents merged)
    2 registry photos: 20 runs, 219 cases
      PASS  unregistered found: 200/200, none later than 3 days
      PASS  visitor + courier cases: 10/219 = 4.6%
      PASS  strangers named: 0
      FAIL  resident cases naming them: 0 of 2
      FAIL  resident cases: 2 (seeds 2 and 9), target none (1 before the
            second-template check: seed 2's Christina_Aguilera matches her
            second registry photo below 0.22)
      PASS  cases again after the merge: 0 (2 residents merged)

Residents with cases (runs): one photo Christina_Aguilera 6, Larry_Brown 5,
Sharon_Stone 4, Elton_John 1; two photos Christina_Aguilera 1, Elton_John 1.

Why the two FAILs stay: the residents left as cases match their registry
photo at 0.20-0.30 (centroid of their door captures), and look-alike
strangers reach 0.29-0.32 with the same share and margin
(``bench/suggestion_rule.py``, out of sample): a case that named them would
name strangers too, so it names nobody (the safe default). Whether the
edge's recognised entries of the resident interleave with the cluster's
days (missed entries replacing recognised ones) does not separate them
either: too few days when the case opens (``server/README.md``, "What did
not separate").

Measured (defaults: 21 days, 60/10/60/5, first photo enrols, 4 captures per
photo, traffic scale 1, ~2,200 sightings a run; 2 shared cores, PostgreSQL 127.0.0.1)::

    seed  found  max days  cases  visitor  resident  per s SQLite  per s PostgreSQL
    0     10/10  0         11     0        1         2,470         1,107
    1     10/10  0         10     0        0         2,297         1,090
    2     10/10  2         13     0        1         2,147         1,021
    3     10/10  0         12     0        1         2,266         1,054
    4     10/10  0         11     0        1         2,148         1,057
    5     10/10  0         12     0        1         1,922         1,002

Same traffic with ``--no-attribution``: 10-15 resident cases a run. Each
remaining resident case is a resident whose door captures match their single
enrolment photo at only 0.23-0.28 (or one the edge never recognised, 0.33):
as close as the best strangers come (unregistered: centroid <= 0.26; a
courier in a ``--enrol-photo medoid`` run: share 1.0, centroid 0.26, margin
0.10), so the server cannot attribute them safely. Their case names them
only when the measured desk-check rule holds
(:func:`server.cases.attribution.suggested_occupant`; 3 of 16 in the 20-seed
run above; the rule before issue 13 named 5 of 5 on seeds 0-5, and 69 of
4,400 stranger clusters in ``bench/suggestion_rule.py``'s report sites).
``bench/attribution_limits.py``
measures why the last ones stay (100 runs: missed residents 0.20-0.42 to
their photo, strangers up to 0.30). ``--enrol-photo medoid``: 0-3 resident
cases. East Asian
subset (``../shared/eval/faces-east-asian``: 16 people, too few for the
defaults; ``--residents 7 --unregistered 3 --couriers 1 --visitors 5``,
seeds 0-3): 3/3 found, 0 resident cases (1, 1, 1, 0 without attribution).
Adaptive templates (:mod:`edge.adaptive`: the simulated edge is the daemon's
own ``AdaptiveGallery``: a known sighting matching its occupant at >= 0.55 and
their registry photo at >= the edge threshold is kept, 4 per occupant;
``--no-adapt`` turns it off; ``--adapt-threshold 0.40`` is an experiment, not
the default). Same 6 seeds, SQLite, off / on (0.55) / on (0.40)::

    seed  found  max days  cases  visitor  resident  stranger FA  resident-days missed
    0     10/10  0         11     0        1/1/1     0/0/0        84/57/28
    1     10/10  0         10     0        0/0/0     0/0/0        81/46/21
    2     10/10  2         13     0        1/1/1     0/0/0        89/51/25
    3     10/10  0         12     0        1/1/1     0/0/0        86/52/26
    4     10/10  0         11     0        1/1/1     0/0/0        100/60/20
    5     10/10  0         12     0        1/1/1     0/0/0        85/45/23

(found, max days, cases and visitor cases were the same in all three modes;
known sightings rose by 29-43 a run at 0.55, 66-88 at 0.40, out of ~2,200.)
"stranger FA": sightings of a visitor, unregistered resident or courier the
edge reported as some occupant; ``adaptive_adopted_wrong_person`` (another
person's capture kept as an occupant's template) was 0 in every run.
"resident-days missed": (resident, day) pairs with an unknown upload.
Adaptation removes 40-50% of them (75% at 0.40) but not the resident case:
the residents left (``residents_with_cases``) are missed from their first
days by captures at 0.23-0.38 to their registry photo, which cannot seed an
adaptive template under the anchor guard (Larry_Brown, seeds 4-5: every miss
is one outlier photo at 0.23-0.28, unlike his other photos too). Stress test
at ``--edge-threshold 0.30`` (anchor 0.30), seeds 0-3: stranger false accepts
0/1/0/0 off, 2/13/3/19 on; none were adopted templates: more templates are
more chances for a stranger at a lowered threshold.
sightings/s depends on the load of the shared machine: PostgreSQL ranged
375-1,300 over the day; interleaved with the code before this change on the
same traffic (``--variants 0``): 927-984 before, 1,077-1,109 after.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cluster_calibration import DEFAULT_FACES, load_embeddings  # noqa: E402

log = logging.getLogger("site_simulation")
TZ = ZoneInfo("Asia/Shanghai")
MODEL = "buffalo_s"
SIM_QUALITY = 0.8
"""Quality score of every simulated track (its capture passed the edge's gate)."""


@dataclass
class Person:
    """One simulated person and the truth about them."""

    name: str
    role: str  # resident | unregistered | visitor | courier
    photos: list[int]  # rows of the embedding matrix usable as sightings
    enrol_photo: int | None = None
    enrol_more: list[int] = field(default_factory=list)
    """Further registry photos (``--enrol-photos K`` > 1): each its own template."""
    occupant_id: int | None = None
    visit_days: list[int] = field(default_factory=list)


def build_population(
    idents: list[str],
    rng: np.random.Generator,
    *,
    residents: int,
    unregistered: int,
    visitors: int,
    couriers: int,
    days: int,
    enrol: str = "first",
    embs: npt.NDArray[np.float32] | None = None,
    enrol_photos: int = 1,
) -> list[Person]:
    """Assign identities to roles; people with more photos live here (they need variety)."""
    by_ident: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(idents):
        if name:  # "" marks a photo the edge would not use
            by_ident[name].append(i)
    rich = sorted((n for n, rows in by_ident.items() if len(rows) >= 4), key=lambda n: n)
    poor = sorted((n for n, rows in by_ident.items() if len(rows) < 4), key=lambda n: n)
    rng.shuffle(rich)
    rng.shuffle(poor)
    need_rich = residents + unregistered + couriers
    if len(rich) < need_rich or len(rich) + len(poor) < need_rich + visitors:
        raise SystemExit(f"not enough identities: {len(rich)} with >= 4 photos, {len(poor)} others")
    people: list[Person] = []
    it = iter(rich)
    for role, n in (("resident", residents), ("unregistered", unregistered), ("courier", couriers)):
        for _ in range(n):
            name = next(it)
            rows = list(by_ident[name])
            if enrol == "medoid" and embs is not None:
                # A registry photo is a frontal ID-style picture: closer to the person's
                # typical look than a random candid. Model it as the most central photo.
                centrality = (embs[rows] @ embs[rows].T).mean(axis=1)
                rows = [rows[i] for i in np.argsort(-centrality, kind="stable")]
            k = enrol_photos if role == "resident" else 1
            people.append(
                Person(name, role, photos=rows[k:], enrol_photo=rows[0], enrol_more=rows[1:k])
            )
    rest = list(it) + poor
    for name in rest[:visitors]:
        rows = list(by_ident[name])
        k = int(rng.integers(1, 3))  # once or twice
        visit_days = sorted(int(d) for d in rng.choice(days, size=k, replace=False))
        people.append(Person(name, "visitor", photos=rows, visit_days=visit_days))
    return people


def usable_faces(idents: list[str], paths: list[str], min_px: int) -> list[str]:
    """Identities per row, with photos the edge's quality gate would refuse blanked out.

    Faces below ~60 px give unstable embeddings and never leave a real edge
    (its quality gate drops them); the eval set's ORL photos are 23x28 px.
    """
    import cv2

    out = []
    for ident, path in zip(idents, paths, strict=True):
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        ok = img is not None and min(img.shape[:2]) >= min_px
        out.append(ident if ok else "")
    return out


CAPTURE_RECIPE = "aug1"
"""Bump when :func:`augment` or the capture pipeline changes (invalidates the cache)."""


def augment(img: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One mild, realistic re-capture of a photo (what a door camera might see).

    Small rotation (+-8 deg), scale (0.85-1.15) and shift (+-6%), then a crop
    jitter (keep 88-100% of each side), brightness/contrast (x0.75-1.25,
    +-25 levels), a slight Gaussian blur on half the captures (sigma 0.4-1.2)
    and a JPEG re-encode at quality 55-90. Mild on purpose: the face stays
    above the edge's size gate and recognisable to a person.
    """
    import cv2

    h, w = img.shape[:2]
    m = np.asarray(
        cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-8, 8), rng.uniform(0.85, 1.15)),
        dtype=np.float64,
    )
    m[:, 2] += rng.uniform(-0.06, 0.06, 2) * np.array([w, h], dtype=np.float64)
    out = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT101)
    kw, kh = round(w * rng.uniform(0.88, 1.0)), round(h * rng.uniform(0.88, 1.0))
    x0, y0 = int(rng.integers(0, w - kw + 1)), int(rng.integers(0, h - kh + 1))
    out = out[y0 : y0 + kh, x0 : x0 + kw]
    out = cv2.convertScaleAbs(out, alpha=rng.uniform(0.75, 1.25), beta=rng.uniform(-25, 25))
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.2))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 91))])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encode failed")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)


class CaptureCache:
    """Embeddings of augmented captures, keyed by (photo path, variant), kept on disk.

    ``None`` marks a capture the edge would not send (no face, or refused by the
    quality gate). Computed lazily with the real :class:`edge.face.engine.FaceEngine`
    of ``pack``; variant -1 is the photo itself, not augmented.
    """

    def __init__(self, paths: list[str], pack: str = MODEL) -> None:
        from cluster_calibration import CACHE_DIR

        key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
        self.file = CACHE_DIR / f"captures-{pack}-{CAPTURE_RECIPE}-{key}.npz"
        self.paths = paths
        self.pack = pack
        self._emb: dict[tuple[int, int], npt.NDArray[np.float32] | None] = {}
        self._dirty = False
        if self.file.exists():
            data = np.load(self.file)
            for (row, k), ok, emb in zip(data["keys"], data["ok"], data["emb"], strict=True):
                self._emb[(int(row), int(k))] = emb.astype(np.float32) if ok else None

    def get(self, row: int, variant: int) -> npt.NDArray[np.float32] | None:
        """The capture's embedding (must have been computed by :meth:`compute`)."""
        return self._emb[(row, variant)]

    def compute(self, wanted: set[tuple[int, int]]) -> int:
        """Embed the captures not cached yet; returns how many were computed."""
        missing = sorted(wanted - set(self._emb))
        if not missing:
            return 0
        import cv2

        from edge.face.engine import FaceEngine
        from edge.face.models import ModelConfig

        engine = FaceEngine.load(ModelConfig(pack=self.pack, threads=1))
        t0 = time.perf_counter()
        for n, (row, k) in enumerate(missing):
            path = self.paths[row]
            img = cv2.imread(path)
            seed = int.from_bytes(
                hashlib.sha256(f"{Path(path).parent.name}/{Path(path).name}".encode()).digest()[:8],
                "little",
            )
            photo = np.asarray(img, dtype=np.uint8)
            # Variant -1 is the photo as it is (an enrolment photo: no re-capture).
            cap = photo if k < 0 else augment(photo, np.random.default_rng([seed, k]))
            self._emb[(row, k)] = _embed_capture(engine, cap)
            self._dirty = True
            if n % 200 == 199:
                log.warning(
                    "captures: %d/%d embedded (%.0f s)",
                    n + 1,
                    len(missing),
                    time.perf_counter() - t0,
                )
                self.save()
        self.save()
        return len(missing)

    def save(self) -> None:
        """Write the cache file (atomically: a temporary file, then a rename)."""
        if not self._dirty:
            return
        keys = sorted(self._emb)
        dim = next((e.shape[0] for e in self._emb.values() if e is not None), 512)
        emb = np.zeros((len(keys), dim), dtype=np.float32)
        ok = np.zeros(len(keys), dtype=bool)
        for i, key in enumerate(keys):
            e = self._emb[key]
            if e is not None:
                emb[i], ok[i] = e, True
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys, dtype=np.int64).reshape(-1, 2), ok=ok, emb=emb)
        tmp.replace(self.file)
        self._dirty = False


def _embed_capture(engine: Any, img: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32] | None:
    """The edge's view of one capture: the face nearest the centre, if it passes the gate."""
    dets = engine.detect_photo(img)
    if not dets:
        return None
    h, w = img.shape[:2]
    # Eval photos are centred on the named person; others in the frame are bystanders.
    det = min(
        dets,
        key=lambda d: np.hypot(
            (d.bbox.x1 + d.bbox.x2) / 2 - w / 2, (d.bbox.y1 + d.bbox.y2) / 2 - h / 2
        ),
    )
    if not engine.quality(img, det).usable:
        return None
    return np.asarray(engine.embed(img, [det])[0], dtype=np.float32)


def day_entries(
    p: Person, day: int, rng: np.random.Generator, scale: int = 1, variants: int = 0
) -> list[tuple[datetime, int, int]]:
    """(time, photo row, capture variant) of each entry of one person on one day.

    Times are site-local. ``variants`` > 0 draws which augmentation of the photo
    the camera captured (0: the photo itself, variant -1).

    ``scale`` multiplies the entries of residents and couriers (a load test:
    more traffic from the same people, so the truth stays known).
    """
    base = datetime(2026, 3, 2, tzinfo=TZ) + timedelta(days=day)
    if p.role in ("resident", "unregistered"):
        if rng.random() > 0.85:  # away some days
            return []
        n = int(rng.integers(1, 3)) * scale
        hours = rng.choice([8.0, 12.5, 18.5, 21.0, 23.0], size=n)
    elif p.role == "courier":
        if rng.random() > 0.8:
            return []
        n = int(rng.integers(2, 6)) * scale
        hours = rng.uniform(9.0, 20.0, size=n)
    else:
        if day not in p.visit_days:
            return []
        hours = np.array([rng.uniform(10.0, 21.0)])
    out = []
    for h in hours:
        minutes = float(h) * 60 + float(rng.uniform(0, 45))
        photo = int(rng.choice(p.photos))
        variant = int(rng.integers(variants)) if variants > 0 else -1
        out.append((base + timedelta(minutes=minutes), photo, variant))
    return out


def wire_item(
    p: Person, at: datetime, emb: npt.NDArray[np.float32], gallery: Any
) -> dict[str, Any]:
    """What the edge would send for this entry (known if the gallery matches).

    ``gallery``: the edge's matcher, an :class:`edge.adaptive.AdaptiveGallery`
    (the daemon's own object: enrolled templates plus, unless ``--no-adapt``,
    adaptive ones); a known match is then shown to it, as the daemon does.
    """
    from edge.wire import encode_embedding

    item: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "camera": "gate-1",
        "started_at": at.astimezone(UTC).isoformat(),
        "ended_at": (at + timedelta(seconds=3)).astimezone(UTC).isoformat(),
        "quality": SIM_QUALITY,
        "model_id": MODEL,
    }
    if gallery is not None:
        match = gallery.match(emb)[0]
        if match.identity is not None:
            item.update(
                kind="known",
                occupant_id=int(match.identity),
                similarity=min(1.0, float(match.similarity)),
            )
            gallery.observe(match.identity, emb, quality=SIM_QUALITY)
            return item
    item.update(kind="unknown", embedding_b64=encode_embedding(emb))
    return item


async def simulate(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from sqlalchemy import select

    from edge.wire import API_PREFIX, encode_embedding
    from server.app import create_app
    from server.cases.attribution import suggested_occupant
    from server.cases.models import CaseEvent
    from server.cases.rules import CaseRule, local_day
    from server.clusters.models import UnknownCluster
    from server.clusters.service import configure_site
    from server.clusters.worker import drain
    from server.db import make_engine, make_session_factory, upgrade
    from server.devices.service import create_device
    from server.occupants.models import FaceTemplate
    from server.occupants.service import add_template, upsert_occupant
    from server.settings import Settings
    from server.sightings.models import Sighting
    from server.sites.service import create_site
    from server.users.service import create_api_token, create_user

    idents, paths, embs = load_embeddings(args.faces_dir)
    idents = usable_faces(idents, paths, args.min_face_px)
    rng = np.random.default_rng(args.seed)
    people = build_population(
        idents,
        rng,
        residents=args.residents,
        unregistered=args.unregistered,
        visitors=args.visitors,
        couriers=args.couriers,
        days=args.days,
        enrol=args.enrol_photo,
        enrol_photos=args.enrol_photos,
        embs=embs,
    )

    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'sim.sqlite3'}"
    engine = make_engine(url, pool_size=4)
    upgrade(engine)
    factory = make_session_factory(engine)
    settings = Settings(
        env="dev",
        database_url=url,
        data_dir=Path(tmp.name),
        migrate_on_start=False,
        max_body_bytes=16 * 1024 * 1024,
    )
    app = create_app(settings, engine=engine)

    site_name = f"Sim Court {uuid.uuid4().hex[:6]}"
    with factory() as s:
        site = create_site(session=s, name=site_name, model_id=MODEL)
        _device, device_token = create_device(session=s, site_id=site.id, name="gate")
        user = create_user(
            session=s, username=f"mgr-{uuid.uuid4().hex[:6]}", role="manager", site_ids=[site.id]
        )
        _tok, user_token = create_api_token(session=s, user_id=user.id)
        # Registered residents: one template per registry photo (one unless --enrol-photos).
        for p in people:
            if p.role == "resident":
                occ = upsert_occupant(session=s, site_id=site.id, name=p.name)
                assert p.enrol_photo is not None
                for photo in [p.enrol_photo, *p.enrol_more]:
                    add_template(
                        session=s, occupant_id=occ.id, embedding=embs[photo], model_id=MODEL
                    )
                p.occupant_id = occ.id
        if args.no_attribution:
            configure_site(
                session=s, site_id=site.id, case_rule=CaseRule(attribute_weak_matches=False)
            )
        s.commit()
        site_id = site.id
    residents = [p for p in people if p.role == "resident"]
    occupant_of: dict[int | None, str] = {
        p.occupant_id: p.name for p in people if p.occupant_id is not None
    }
    from edge.adaptive import AdaptConfig, AdaptiveGallery
    from edge.gallery import Gallery, Template

    # The edge's matcher, exactly as the daemon builds it from a synced gallery.
    gallery = AdaptiveGallery(
        AdaptConfig(
            enabled=not args.no_adapt,
            adapt_threshold=args.adapt_threshold,
            anchor_threshold=args.anchor_threshold,
        ),
        model_id=MODEL,
    )
    gallery.set_base(
        Gallery.from_templates(
            [
                Template(str(p.occupant_id), embs[photo], MODEL)
                for p in residents
                if p.enrol_photo is not None
                for photo in [p.enrol_photo, *p.enrol_more]
            ],
            model_id=MODEL,
            threshold=args.edge_threshold,
        )
        if residents
        else None
    )

    # The whole schedule first, so every capture is embedded before the clock starts.
    schedule = [
        [
            (p, at, photo, variant)
            for p in people
            for at, photo, variant in day_entries(p, day, rng, args.traffic_scale, args.variants)
        ]
        for day in range(args.days)
    ]
    captures = CaptureCache(paths)
    if args.variants > 0:
        made = captures.compute({(ph, k) for entries in schedule for _, _, ph, k in entries})
        if made:
            log.warning("embedded %d new captures (cached in %s)", made, captures.file)

    def embedding_of(photo: int, variant: int) -> npt.NDArray[np.float32] | None:
        return embs[photo] if variant < 0 else captures.get(photo, variant)

    dev_h = {"Authorization": f"Bearer {device_token}"}
    mgr_h = {"Authorization": f"Bearer {user_token}"}
    truth: dict[str, Person] = {}
    unknown_days: dict[str, set[date]] = defaultdict(set)
    ingest_s = cluster_s = 0.0
    total = known = dropped = 0
    false_accepts: Counter[str] = Counter()
    poisoned: Counter[str] = Counter()
    confirmed: dict[str, date] = {}  # resident -> day their case was merged into them
    visits = 0  # resident cases that named nobody, merged into the resident after a visit

    def majority(cluster_id: int) -> str:
        """Who a cluster is: the majority truth of its sightings (the manager's eyes)."""
        with factory() as s:
            ids = s.scalars(select(Sighting.uuid).where(Sighting.cluster_id == cluster_id))
            who = Counter(truth[str(u)].name for u in ids)
        return who.most_common(1)[0][0] if who else "?"

    def synced_gallery() -> Any:
        """The edge's gallery after a sync: every active template of the site's occupants."""
        with factory() as s:
            rows = s.execute(
                select(FaceTemplate.occupant_id, FaceTemplate.embedding).where(
                    FaceTemplate.site_id == site_id, FaceTemplate.model_id == MODEL
                )
            ).all()
        return Gallery.from_templates(
            [
                Template(str(r.occupant_id), np.frombuffer(r.embedding, dtype=np.float32), MODEL)
                for r in rows
            ],
            model_id=MODEL,
            threshold=args.edge_threshold,
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        for p in people:
            if p.role == "courier" and p.enrol_photo is not None:
                r = await client.post(
                    f"{API_PREFIX}/whitelist",
                    json={
                        "site": str(site_id),
                        "kind": "courier",
                        "label": p.name,
                        "embeddings_b64": [encode_embedding(embs[p.enrol_photo])],
                    },
                    headers=mgr_h,
                )
                r.raise_for_status()
        for entries in schedule:
            items: list[dict[str, Any]] = []
            # In time order: what the edge learnt this morning is used tonight.
            for p, at, photo, variant in sorted(entries, key=lambda e: e[1]):
                emb = embedding_of(photo, variant)
                if emb is None:  # no usable face in this capture: the edge sends nothing
                    dropped += 1
                    continue
                adopted_before = gallery.adopted
                item = wire_item(p, at, emb, gallery)
                if gallery.adopted > adopted_before and item["occupant_id"] != p.occupant_id:
                    poisoned[p.role] += 1  # someone else's face kept as an occupant's template
                truth[item["id"]] = p
                items.append(item)
                if item["kind"] == "unknown":
                    unknown_days[p.name].add(local_day(at, TZ))
                elif item["occupant_id"] != p.occupant_id:
                    # Someone matched as an occupant they are not: a stranger made
                    # "known" (hidden from the cases) or a resident as another.
                    false_accepts[p.role] += 1
            items.sort(key=lambda it: it["started_at"])
            total += len(items)
            known += sum(1 for it in items if it["kind"] == "known")
            t0 = time.perf_counter()
            for start in range(0, len(items), 500):
                r = await client.post(
                    f"{API_PREFIX}/device/sightings",
                    json={"sightings": items[start : start + 500]},
                    headers=dev_h,
                )
                r.raise_for_status()
                if r.json()["errors"]:
                    raise SystemExit(f"ingest errors: {r.json()['errors'][:3]}")
            t1 = time.perf_counter()
            drain(factory, batch_size=args.batch)
            t2 = time.perf_counter()
            ingest_s += t1 - t0
            cluster_s += t2 - t1
            if args.no_confirm or not entries:
                continue
            # The manager's desk: a case that names the resident it truly is gets
            # "It is X" (the case's faces join X's templates, the edge syncs them).
            today = local_day(max(e[1] for e in entries), TZ)
            r = await client.get(
                f"{API_PREFIX}/cases",
                params={"site": str(site_id), "status": "open,assigned"},
                headers=mgr_h,
            )
            r.raise_for_status()
            settled = 0
            resident_ids = {name: o for o, name in occupant_of.items()}
            for c in r.json():
                x = c["desk_check_occupant_id"]
                who = majority(c["cluster_id"])
                if x is None and who in resident_ids and not args.no_visit:
                    # Names nobody: the manager calls or visits, finds resident X and
                    # merges the case into them from the occupant search.
                    x = resident_ids[who]
                    visits += 1
                elif x is None or occupant_of.get(x) != who:
                    continue  # names nobody, or the wrong person: not confirmed
                r = await client.post(
                    f"{API_PREFIX}/cases/{c['id']}/actions",
                    json={"action": "merge_into_occupant", "occupant_id": x},
                    headers=mgr_h,
                )
                r.raise_for_status()
                confirmed.setdefault(str(who), today)
                settled += 1
            if settled:
                gallery.set_base(synced_gallery())
        cases: list[dict[str, Any]] = []
        for status in ("open", "assigned", "closed"):
            r = await client.get(
                f"{API_PREFIX}/cases",
                params={"site": str(site_id), "status": status},
                headers=mgr_h,
            )
            r.raise_for_status()
            cases.extend(r.json())

    # Who is each cluster? The majority truth of its sightings.
    with factory() as s:
        rows = s.execute(
            select(Sighting.uuid, Sighting.cluster_id).where(
                Sighting.site_id == site_id, Sighting.cluster_id.is_not(None)
            )
        ).all()
        merged_into = {
            r.id: r.merged_into_id
            for r in s.execute(
                select(UnknownCluster.id, UnknownCluster.merged_into_id).where(
                    UnknownCluster.site_id == site_id, UnknownCluster.merged_into_id.is_not(None)
                )
            )
        }

    def live(cluster_id: int) -> int:
        while cluster_id in merged_into:
            cluster_id = merged_into[cluster_id]
        return cluster_id

    votes: dict[int, Counter[str]] = defaultdict(Counter)
    role_of: dict[str, str] = {}
    for row in rows:
        p = truth[str(row.uuid)]
        votes[int(row.cluster_id)][p.name] += 1
        role_of[p.name] = p.role
    case_people: dict[str, list[dict[str, Any]]] = defaultdict(list)
    case_roles: Counter[str] = Counter()
    with factory() as s:
        opened_events = list(s.scalars(select(CaseEvent).where(CaseEvent.kind == "opened")))
        # What the case page offers as "It is X" (server.cases.attribution.suggested_occupant).
        hints = {e.case_id: suggested_occupant(e.detail or {}) for e in opened_events}
        evidence = {e.case_id: (e.detail or {}).get("evidence") for e in opened_events}
        likely = s.execute(
            select(UnknownCluster.id, UnknownCluster.occupant_id).where(
                UnknownCluster.site_id == site_id,
                UnknownCluster.status == "active",
                UnknownCluster.suppression == "likely_occupant",
            )
        ).all()
    hinted_right = hinted_others = hinted_wrong = after_confirm = 0
    for c in cases:
        name = votes[live(c["cluster_id"])].most_common(1)[0][0]
        case_people[name].append(c)
        case_roles[role_of[name]] += 1
        hint = hints.get(c["id"])
        if (
            name in confirmed
            and local_day(datetime.fromisoformat(c["triggered_at"]), TZ) > confirmed[name]
        ):
            after_confirm += 1  # X became a case again after "It is X"
        if hint is None:
            continue
        if role_of[name] == "resident" and occupant_of.get(hint.occupant_id) == name:
            hinted_right += 1
        elif role_of[name] == "resident":
            hinted_wrong += 1
        else:
            hinted_others += 1
    # Every case's attribution evidence with the truth (threshold calibration).
    evidence_rows: list[dict[str, Any]] = []
    for c in cases:
        ev = evidence.get(c["id"])
        if ev is None:
            continue
        name = votes[live(c["cluster_id"])].most_common(1)[0][0]
        evidence_rows.append(
            {
                "seed": args.seed,
                "role": role_of[name],
                "points_at_self": occupant_of.get(ev.get("occupant_id")) == name,
                **ev,
            }
        )
    likely_roles: Counter[str] = Counter()
    likely_right = 0
    for cluster_id, occupant_id in likely:
        who = votes[live(cluster_id)]
        name = who.most_common(1)[0][0] if who else "?"
        likely_roles[role_of.get(name, "?")] += 1
        likely_right += int(occupant_of.get(occupant_id) == name)
    if args.dump_evidence is not None:
        with args.dump_evidence.open("a", encoding="utf-8") as fh:
            for ev_row in evidence_rows:
                fh.write(json.dumps(ev_row) + "\n")
    unreg = [p for p in people if p.role == "unregistered"]
    delays: list[int] = []
    found = 0
    for p in unreg:
        seen = sorted(unknown_days[p.name])
        if p.name in case_people:
            found += 1
            if len(seen) >= 3:
                opened = min(
                    local_day(datetime.fromisoformat(c["triggered_at"]), TZ)
                    for c in case_people[p.name]
                )
                delays.append((opened - seen[2]).days)
    wall = ingest_s + cluster_s
    result = {
        "days": args.days,
        "unregistered": len(unreg),
        "unregistered_found": found,
        "max_days_to_case": max(delays) if delays else None,
        "cases": len(cases),
        "visitor_cases": case_roles.get("visitor", 0),
        "resident_cases": case_roles.get("resident", 0),
        "resident_cases_naming_them": hinted_right,
        "resident_cases_naming_another": hinted_wrong,
        # A stranger named as an occupant: on a case (desk check) or as a likely occupant.
        "strangers_named": hinted_others
        + sum(n for role, n in likely_roles.items() if role != "resident"),
        "residents_merged": len(confirmed),
        "merged_after_a_visit": visits,
        "cases_after_it_is_x": after_confirm,
        "stranger_false_accepts": sum(n for role, n in false_accepts.items() if role != "resident"),
        "sightings_per_s": round(total / wall, 1) if wall else None,
    }
    detail = {
        "database": engine.dialect.name,
        "sightings": total,
        "known": known,
        "false_accepts_by_role": dict(false_accepts),
        "adaptive_templates": gallery.count(),
        "adaptive_adopted": gallery.adopted,
        "adaptive_adopted_wrong_person": dict(poisoned),
        "resident_days_missed": sum(
            len(unknown_days[p.name]) for p in people if p.role == "resident"
        ),
        "captures_refused_by_edge": dropped,
        "unknown": total - known,
        "ingest_s": round(ingest_s, 2),
        "cluster_s": round(cluster_s, 2),
        "courier_cases": case_roles.get("courier", 0),
        "other_cases_naming_an_occupant": hinted_others,
        "unregistered_cases": case_roles.get("unregistered", 0),
        "clusters": len(votes),
        "likely_occupant_clusters": dict(likely_roles),
        "likely_occupant_named_right": likely_right,
        "duplicate_cases_closed_by_merge": sum(
            1 for c in cases if c["outcome"] == "cluster_merged"
        ),
        "unregistered_not_found": [p.name for p in unreg if p.name not in case_people],
        # Residents with a case, and the dates their sightings were uploaded as unknown.
        "residents_with_cases": {
            str(p.name): [d.isoformat()[5:] for d in sorted(unknown_days[p.name])]
            for p in people
            if p.role == "resident" and p.name in case_people
        },
    }
    engine.dispose()
    tmp.cleanup()
    return {"result": result, "detail": detail}


def add_population_args(ap: argparse.ArgumentParser) -> None:
    """The site, its people and the edge: options shared with attribution_limits.py."""
    ap.add_argument("faces_dir", nargs="?", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--residents", type=int, default=60)
    ap.add_argument("--unregistered", type=int, default=10)
    ap.add_argument("--visitors", type=int, default=60)
    ap.add_argument("--couriers", type=int, default=5)
    ap.add_argument(
        "--enrol-photos",
        type=int,
        choices=[1, 2, 3],
        default=1,
        help="registry photos per resident, each its own template (a register gives one "
        "today; 2-3 measure what more photos would buy)",
    )
    ap.add_argument(
        "--min-face-px", type=int, default=60, help="skip photos smaller than this (edge gate)"
    )
    ap.add_argument(
        "--variants",
        type=int,
        default=4,
        help="augmented captures per photo (0: reuse each photo's own embedding, the old "
        "unrealistic mode)",
    )
    ap.add_argument("--edge-threshold", type=float, default=None, help="default: the pack's")


def targets(runs: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """Issue 13's targets over many runs: (target, measured, met)."""
    r = [x["result"] for x in runs]
    residents = runs[0]["detail"]["residents"]
    found = sum(x["unregistered_found"] for x in r)
    unreg = sum(x["unregistered"] for x in r)
    late = sum(1 for x in r if (x["max_days_to_case"] or 0) > 3)
    cases = sum(x["cases"] for x in r)
    couriers = [x["detail"]["courier_cases"] for x in runs]
    others = sum(x["visitor_cases"] for x in r) + sum(couriers)
    worst = max(
        (x["visitor_cases"] + c) / max(x["cases"], 1) for x, c in zip(r, couriers, strict=True)
    )
    named = sum(x["strangers_named"] for x in r)
    on_cases = sum(x["detail"]["other_cases_naming_an_occupant"] for x in runs)
    res_cases = sum(x["resident_cases"] for x in r)
    naming = sum(x["resident_cases_naming_them"] for x in r)
    allowed = len(r) * residents / 40
    again = sum(x["cases_after_it_is_x"] for x in r)
    return [
        (
            "every unregistered resident a case within 3 days of their 3rd day",
            f"{found}/{unreg} found, {late} runs later than 3 days",
            found == unreg and late == 0,
        ),
        (
            "visitor + courier cases <= 5% of cases",
            f"{others}/{cases} = {others / max(cases, 1):.1%} (worst run {worst:.0%})",
            others <= 0.05 * cases,
        ),
        (
            "no stranger named as an occupant",
            f"{named} named ({on_cases} on a case, {named - on_cases} as a likely occupant)",
            named == 0,
        ),
        (
            "every resident case names that resident",
            f"{naming}/{res_cases} name them",
            naming == res_cases,
        ),
        (
            "resident cases <= 1 per 40 residents per 21 days",
            f"{res_cases} in {len(r)} runs of {residents} (allowed {allowed:.1f})",
            res_cases <= allowed,
        ),
        (
            "no case again for a resident after their case was merged into them",
            f"{again} cases ({sum(x['residents_merged'] for x in r)} residents merged)",
            again == 0,
        ),
    ]


def _many_seeds(args: argparse.Namespace) -> int:
    """Run seeds with one and two registry photos; print each run and the targets."""
    summary: dict[int, list[dict[str, Any]]] = {}
    cols = (
        "found",
        "max days",
        "cases",
        "visitor",
        "courier",
        "resident",
        "naming",
        "strangers named",
        "merged",
        "again",
    )
    for photos in (1, 2):
        runs = []
        print(f"\n{photos} registry photo(s) per resident")
        print("seed  " + "  ".join(cols))
        for seed in range(args.seed, args.seed + args.seeds):
            one = argparse.Namespace(**{**vars(args), "seed": seed, "enrol_photos": photos})
            out = asyncio.run(simulate(one))
            out["detail"]["residents"] = args.residents
            runs.append(out)
            r = out["result"]
            print(
                f"{seed:<5d} {r['unregistered_found']}/{r['unregistered']}  "
                f"{r['max_days_to_case']}  {r['cases']}  {r['visitor_cases']}  "
                f"{out['detail']['courier_cases']}  {r['resident_cases']}  "
                f"{r['resident_cases_naming_them']}  {r['strangers_named']}  "
                f"{r['residents_merged']}  {r['cases_after_it_is_x']}",
                flush=True,
            )
        summary[photos] = runs
    for photos, runs in summary.items():
        last = args.seed + args.seeds - 1
        print(f"\ntargets, {photos} registry photo(s), seeds {args.seed}-{last}")
        for name, measured, met in targets(runs):
            if photos == 2 and name.startswith("resident cases"):
                res = sum(x["result"]["resident_cases"] for x in runs)
                name, measured, met = "resident cases: none (2 photos)", f"{res}", res == 0
            print(f"  {'PASS' if met else 'FAIL'}  {name}: {measured}")
        who = Counter(n for x in runs for n in x["detail"]["residents_with_cases"])
        print(f"  residents with cases (runs): {dict(who.most_common())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_population_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--enrol-photo",
        choices=["first", "medoid"],
        default="first",
        help="which photo enrols a resident/whitelists a courier: the first, or the most "
        "typical one (models a frontal registry photo)",
    )
    ap.add_argument(
        "--traffic-scale", type=int, default=1, help="multiply residents' and couriers' entries"
    )
    ap.add_argument("--batch", type=int, default=1000, help="worker batch size")
    ap.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    ap.add_argument(
        "--no-attribution",
        action="store_true",
        help="turn off attributing weakly matching clusters to occupants (measurement)",
    )
    ap.add_argument(
        "--dump-evidence",
        type=Path,
        default=None,
        help="append each case's attribution evidence and truth as JSON lines",
    )
    ap.add_argument(
        "--no-adapt",
        action="store_true",
        help="turn off the edge's adaptive templates (edge.adaptive) to compare",
    )
    ap.add_argument(
        "--adapt-threshold", type=float, default=0.55, help="edge.adaptive adapt_threshold"
    )
    ap.add_argument(
        "--anchor-threshold",
        type=float,
        default=None,
        help="edge.adaptive anchor_threshold (default: the edge threshold)",
    )
    ap.add_argument(
        "--no-confirm",
        action="store_true",
        help="do not settle desk checks: by default, after each day, every open case that "
        "names the resident it truly is gets 'It is X' (merge_into_occupant)",
    )
    ap.add_argument(
        "--no-visit",
        action="store_true",
        help="leave resident cases that name nobody open (by default the manager visits, "
        "finds the resident and merges the case into them, like 'It is X')",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="run seeds --seed .. --seed+N-1, with 1 and with 2 registry photos (unless "
        "--enrol-photos is given), and print the targets table",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.edge_threshold is None:
        from edge.face.models import BUFFALO_S_THRESHOLD

        args.edge_threshold = BUFFALO_S_THRESHOLD
    if args.seeds:
        return _many_seeds(args)
    out = asyncio.run(simulate(args))
    if args.json:
        print(json.dumps(out["result"]))
        return 0
    for key, value in {**out["result"], **out["detail"]}.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
