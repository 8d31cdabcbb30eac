"""How genuine similarity falls as each face-quality signal falls: data for the gates.

Usage::

    nice -n 5 .venv/bin/python bench/quality_gates.py [EVAL_DIR] [--model buffalo_s]
        [--cache FILE] [--json OUT]
    .venv/bin/python bench/quality_gates.py [EVAL_DIR] --write-degraded OUT [--seed 13]

EVAL_DIR defaults to ``../shared/eval`` (``faces/<identity>/<n>.jpg`` and
``manifest.csv``); ORL photos (23x28 px faces, rightly refused) are left out.

For every photo of every identity with at least 2 photos, the subject face
(:func:`edge.face.engine.main_face` of padded detection) is measured: size, sharpness,
keypoint frontal score and its yaw / pitch parts, a 3D pose from
``cv2.solvePnP`` (:func:`edge.face.quality.head_pose`), the detector score and the
recogniser's embedding norm before normalisation. Its "genuine usefulness" is
how it matches the person's OTHER original photos: the mean cosine to them and
the share of them at or above the pack's match threshold ("match share"; what a
template made from this photo would do for that person's probes).

Degraded copies of each identity's first photo are measured the same way (the
reference is always the undegraded other photos): in-plane roll 15-60 deg,
Gaussian blur sigma 1-6, downscaled so the face is 64-12 px, JPEG quality 10,
a dark copy, and crops that cut off a side of the face.

Fit / report: identities are split by a hash of their name into a fit half and
a report half. Per signal, the tables bin the fit half; the gate is chosen on
the fit half as the highest signal level below which the match share of the
photos falls under half that of the clean photos (those photos are what the
recogniser cannot use), and the refusal rate and the misses it saves are
printed on the report half.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.face.engine import FaceEngine, main_face  # noqa: E402
from edge.face.models import ModelConfig  # noqa: E402
from edge.face.quality import frontal_parts, head_pose, relative_sharpness, sharpness  # noqa: E402


@dataclass
class Measured:
    """One face (original or degraded photo) and its signals."""

    identity: str
    photo: str
    degradation: str  # "" for the original photo
    found: bool
    size: float = 0.0
    sharp_var: float = 0.0
    sharp_rel: float = 0.0
    frontal: float = 0.0
    kp_yaw: float = 0.0
    kp_pitch: float = 0.0
    pose_yaw: float = 0.0
    pose_pitch: float = 0.0
    pose_roll: float = 0.0
    neg_yaw: float = 0.0
    det_score: float = 0.0
    emb_norm: float = 0.0
    embedding: npt.NDArray[np.float32] | None = None
    sim: float = float("nan")
    """Mean cosine to the person's other original photos."""
    match: float = 0.0
    """Share of the person's other original photos at or above the threshold."""
    fmr: float = float("nan")
    """Share of other people's original photos at or above the threshold."""


def load_photos(root: Path) -> dict[str, list[Path]]:
    orl: set[str] = set()
    manifest = root / "manifest.csv"
    if manifest.exists():
        with manifest.open(newline="") as fh:
            orl = {r["identity"] for r in csv.DictReader(fh) if r["source"].startswith("orl:")}
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in (root / "faces").iterdir() if p.is_dir()):
        if sub.name in orl or sub.name.startswith("ORL_"):
            continue
        photos = sorted(sub.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
        if len(photos) >= 2:
            out[sub.name] = photos
    return out


def degradations(img: npt.NDArray[np.uint8], face_px: float) -> dict[str, npt.NDArray[np.uint8]]:
    """Degraded copies of a photo, by name."""
    h, w = img.shape[:2]
    out: dict[str, npt.NDArray[np.uint8]] = {}
    for ang in (15, 30, 45, 60):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
        out[f"roll {ang}"] = np.asarray(
            cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8
        )
    for sigma in (1.0, 2.0, 3.0, 4.0, 6.0):
        out[f"blur {sigma:g}"] = np.asarray(cv2.GaussianBlur(img, (0, 0), sigma), np.uint8)
    for px in (64, 48, 32, 24, 16, 12):
        s = px / max(face_px, 1.0)
        if s < 1.0:
            size = (max(8, round(w * s)), max(8, round(h * s)))
            out[f"face {px}px"] = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 10])
    if ok:
        out["jpeg q10"] = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
    out["dark x0.25"] = np.asarray(np.clip(img.astype(np.float32) * 0.25, 0, 255), np.uint8)
    out["crop left 35%"] = np.ascontiguousarray(img[:, int(w * 0.35) :])
    out["crop top 40%"] = np.ascontiguousarray(img[int(h * 0.40) :, :])
    return out


def measure(
    engine: FaceEngine, img: npt.NDArray[np.uint8], identity: str, photo: str, deg: str
) -> Measured:
    det = main_face(engine.detect_photo(img), img.shape)
    if det is None:
        return Measured(identity, photo, deg, False)
    crop = engine.align(img, det)
    raw = np.asarray(engine._recognizer.get_feat([crop]), dtype=np.float32)[0]
    norm = float(np.linalg.norm(raw))
    yaw_kp, pitch_kp, frontal = frontal_parts(det.landmarks)
    yaw, pitch, roll = head_pose(det.landmarks)
    return Measured(
        identity,
        photo,
        deg,
        True,
        size=float(min(det.bbox.width, det.bbox.height)),
        sharp_var=sharpness(crop, 100.0)[1],
        sharp_rel=relative_sharpness(crop),
        frontal=frontal,
        kp_yaw=yaw_kp,
        kp_pitch=pitch_kp,
        pose_yaw=abs(yaw),
        pose_pitch=pitch,
        pose_roll=roll,
        det_score=float(det.det_score),
        emb_norm=norm,
        embedding=raw / max(norm, 1e-12),
    )


def measure_all(engine: FaceEngine, photos: dict[str, list[Path]]) -> list[Measured]:
    rows: list[Measured] = []
    for n, (ident, paths) in enumerate(photos.items()):
        if n % 25 == 0:
            print(f"measuring identity {n + 1}/{len(photos)}", file=sys.stderr, flush=True)
        for k, p in enumerate(paths):
            raw = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if raw is None:
                continue
            img = np.asarray(raw, np.uint8)
            m = measure(engine, img, ident, p.name, "")
            rows.append(m)
            if k == 0 and m.found:
                for name, d in degradations(img, m.size).items():
                    rows.append(measure(engine, d, ident, p.name, name))
    return rows


def fit_half(identity: str) -> bool:
    return hashlib.sha256(identity.encode()).digest()[0] % 2 == 0


def usefulness(rows: list[Measured], threshold: float) -> None:
    """Attach to each face: mean cosine and match share against the person's other
    original photos, and the false-match share against everyone else's (the cost
    of a poor template: it attracts strangers)."""
    originals: dict[str, list[Measured]] = {}
    for r in rows:
        if r.found and not r.degradation:
            originals.setdefault(r.identity, []).append(r)
    everyone = [o for group in originals.values() for o in group]
    matrix = np.stack([o.embedding for o in everyone])  # type: ignore[misc]
    owner = np.array([o.identity for o in everyone])
    for r in rows:
        if not r.found or r.embedding is None:
            r.sim, r.match, r.fmr = float("nan"), 0.0, float("nan")
            continue
        sims = matrix @ r.embedding
        mine = (owner == r.identity) & np.array([o.photo != r.photo for o in everyone])
        other = owner != r.identity
        r.fmr = float(np.mean(sims[other] >= threshold))
        if not mine.any():
            r.sim, r.match = float("nan"), 0.0
            continue
        r.sim = float(np.mean(sims[mine]))
        r.match = float(np.mean(sims[mine] >= threshold))


SIGNALS: dict[str, tuple[str, list[float], bool]] = {
    # name: (attribute, bin edges, higher is better)
    "size px": ("size", [0, 12, 14, 16, 18, 20, 24, 32, 48, 64, 1e9], True),
    "sharpness (Laplacian var)": ("sharp_var", [0, 5, 8, 10, 15, 20, 30, 50, 100, 1e9], True),
    "sharpness / contrast": ("sharp_rel", [0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.4, 1e9], True),
    "frontal (keypoints)": ("frontal", [0, 0.01, 0.2, 0.35, 0.5, 0.65, 0.8, 1.01], True),
    "yaw part (keypoints)": ("kp_yaw", [0, 0.01, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.01], True),
    "pitch part (keypoints)": ("kp_pitch", [0, 0.01, 0.2, 0.4, 0.6, 0.8, 1.01], True),
    "|yaw| deg (solvePnP)": ("pose_yaw", [0, 10, 20, 30, 40, 50, 60, 90.1], False),
    "pitch deg (solvePnP)": ("pose_pitch", [-90, -30, -20, -10, 0, 10, 20, 30, 90.1], True),
    "roll deg (solvePnP)": ("pose_roll", [-180, -45, -30, -15, 0, 15, 30, 45, 180.1], True),
    "detector score": ("det_score", [0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01], True),
    "embedding norm": ("emb_norm", [0, 15, 16, 17, 18, 19, 20, 21, 22, 25, 1e9], True),
}


def table(
    rows: list[Measured], attr: str, edges: list[float]
) -> list[tuple[str, int, float, float, float]]:
    """Per bin of ``attr``: (bin, n, mean cosine, match share, false-match rate)."""
    out: list[tuple[str, int, float, float, float]] = []
    for lo, hi in itertools.pairwise(edges):
        sel = [r for r in rows if r.found and lo <= getattr(r, attr) < hi]
        if not sel:
            continue
        sims = [r.sim for r in sel if not np.isnan(r.sim)]
        out.append(
            (
                f"[{lo:g}, {hi:g})",
                len(sel),
                float(np.mean(sims)) if sims else float("nan"),
                float(np.mean([r.match for r in sel])),
                float(np.nanmean([r.fmr for r in sel])),
            )
        )
    return out


MEDIANS = (
    ("size", "size"),
    ("sharp", "sharp_rel"),
    ("frontal", "frontal"),
    ("yaw", "pose_yaw"),
    ("pitch", "pose_pitch"),
    ("roll", "pose_roll"),
    ("det", "det_score"),
    ("norm", "emb_norm"),
)

UNUSABLE = 0.10
"""A face the recogniser cannot use: a template of it finds fewer than this share of
the person's other photos at the pack's threshold (clean photos: ~93%)."""

GATE_CANDIDATES: dict[str, list[float]] = {
    # attribute: candidate gates, higher = stricter (faces below are refused)
    "size": [6, 8, 10, 12, 14, 16, 18, 20, 24, 32],
    "sharp_rel": [0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015],
    "emb_norm": [5, 6, 7, 8, 9, 10, 11, 15, 16, 17, 18, 19, 20],
    "det_score": [0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.85, 0.9],
    "neg_yaw": [-90, -85, -80, -75, -70, -65, -60, -55, -50],
}


def fit_gate(rows: list[Measured], attr: str, candidates: list[float]) -> float:
    """The gate: walking up from the worst bin, the top of the last run of bins
    [c_k, c_k+1) whose faces match < UNUSABLE (the lowest candidate if none).

    Per bin, not cumulative: the worst faces must not drag a usable bin under.
    Bins with fewer than 3 faces are skipped (no evidence either way).
    """
    lows = [-math.inf, *candidates]
    gate = candidates[0]
    for lo, hi in itertools.pairwise(lows):
        inside = [r.match for r in rows if lo <= getattr(r, attr) < hi]
        if len(inside) < 3:
            continue
        if float(np.mean(inside)) >= UNUSABLE:
            break
        gate = hi
    return gate


def write_degraded(src: Path, out: Path, seed: int) -> int:
    """A degraded copy of an eval folder, for ``bench/accuracy.py``: every photo of
    every non-ORL identity gets one seeded degradation (or none), the kind a
    registry or door camera gives: in-plane roll 15-35 deg, Gaussian blur sigma
    1.5-3, downscale to 40-60% (small faces), JPEG quality 15, darkened to 30%,
    the top or one side cropped off. Returns the number of photos written."""
    rng = np.random.default_rng(seed)
    kinds = ("none", "roll", "blur", "small", "jpeg", "dark", "crop")
    n = 0
    for ident, paths in load_photos(src).items():
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                continue
            h, w = img.shape[:2]
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "roll":
                ang = float(rng.uniform(15, 35)) * (1 if rng.random() < 0.5 else -1)
                m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
                img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
            elif kind == "blur":
                img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 3.0)))
            elif kind == "small":
                s = float(rng.uniform(0.4, 0.6))
                img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            elif kind == "jpeg":
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 15])
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img
            elif kind == "dark":
                img = np.clip(img.astype(np.float32) * 0.3, 0, 255).astype(np.uint8)
            elif kind == "crop":
                img = img[int(h * 0.25) :, :] if rng.random() < 0.5 else img[:, int(w * 0.3) :]
            target = out / "faces" / ident / p.name
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), np.asarray(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval", nargs="?", type=Path, default=REPO.parent / "shared/eval")
    ap.add_argument("--model", default="buffalo_s")
    ap.add_argument("--cache", type=Path, help="pickle of the measurements (dev)")
    ap.add_argument("--json", type=Path, help="also write the tables here")
    ap.add_argument(
        "--write-degraded",
        type=Path,
        metavar="OUT",
        help="only write a degraded copy of EVAL_DIR (OUT/faces/...) for bench/accuracy.py",
    )
    ap.add_argument("--seed", type=int, default=13, help="seed of --write-degraded")
    args = ap.parse_args(argv)
    if args.write_degraded is not None:
        n = write_degraded(args.eval, args.write_degraded, args.seed)
        print(f"wrote {n} degraded photos under {args.write_degraded / 'faces'}")
        return 0
    engine = FaceEngine.load(ModelConfig(pack=args.model))
    if args.cache is not None and args.cache.exists():
        rows: list[Measured] = pickle.loads(args.cache.read_bytes())
    else:
        rows = measure_all(engine, load_photos(args.eval))
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(rows))
    for r in rows:
        r.neg_yaw = -r.pose_yaw  # so that lower = worse, like every other signal
    usefulness(rows, engine.threshold)
    print(f"## {engine.model_id}: match threshold {engine.threshold:.3f}")
    originals = [r for r in rows if not r.degradation]
    found_orig = sum(r.found for r in originals)
    print(
        f"{len(originals)} original photos of {len({r.identity for r in originals})} identities,"
        f" {len(rows) - len(originals)} degraded copies; subject face found in "
        f"{found_orig} / {sum(r.found for r in rows) - found_orig}"
    )
    doc: dict[str, object] = {"model": engine.model_id, "threshold": engine.threshold}
    for title, subset in (
        ("original photos", originals),
        ("degraded copies", [r for r in rows if r.degradation]),
    ):
        print(
            f"\n### {title}: per signal bin, n / mean cosine to the person's other photos"
            " / match share / false-match rate"
        )
        for name, (attr, edges, _) in SIGNALS.items():
            t = table(subset, attr, edges)
            doc[f"{title}|{name}"] = t
            print(
                f"{name:<28}" + "  ".join(f"{b} {n}/{s:.2f}/{m:.2f}/{f:.0e}" for b, n, s, m, f in t)
            )
    print("\n### degraded copies: per degradation, found / mean cosine / match share / medians")
    by_deg: dict[str, list[Measured]] = {}
    for r in rows:
        by_deg.setdefault(r.degradation or "original", []).append(r)
    for deg, sel in by_deg.items():
        f = [r for r in sel if r.found]
        sims = [r.sim for r in f if not np.isnan(r.sim)]
        cos = float(np.mean(sims)) if sims else float("nan")
        match = float(np.mean([r.match for r in f])) if f else 0.0
        medians = " ".join(
            f"{label} {float(np.median([getattr(r, a) for r in f])) if f else float('nan'):.3g}"
            for label, a in MEDIANS
        )
        print(
            f"{deg:<14} found {len(f):>4}/{len(sel):<4} cos {cos:.2f} match {match:.2f}  {medians}"
        )
    print("\n### gates fitted on one half of the identities, reported on the other half")
    print(
        f"rule: the gate is the highest candidate below which faces (originals and degraded "
        f"copies of the fit half) match fewer than {UNUSABLE:.0%} of the person's other photos"
    )
    fit = [r for r in rows if r.found and fit_half(r.identity)]
    rep = [r for r in rows if r.found and not fit_half(r.identity)]
    gates: dict[str, float] = {}
    for attr, candidates in GATE_CANDIDATES.items():
        gate = fit_gate(fit, attr, candidates)
        gates[attr] = gate
        for title, subset in (
            ("originals", [r for r in rep if not r.degradation]),
            ("degraded", [r for r in rep if r.degradation]),
        ):
            below = [r for r in subset if getattr(r, attr) < gate]
            above = [r for r in subset if getattr(r, attr) >= gate]
            mb = float(np.mean([r.match for r in below])) if below else float("nan")
            ma = float(np.mean([r.match for r in above])) if above else float("nan")
            print(
                f"{attr:<10} gate {gate:<7g} report half, {title:<9}: refused {len(below):>4}/"
                f"{len(subset):<4} ({100 * len(below) / max(len(subset), 1):4.1f}%), match share "
                f"refused {mb:.2f} vs kept {ma:.2f}"
            )
    doc["gates"] = gates
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
