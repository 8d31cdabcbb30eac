"""``lintel-edge calibrate``: a site's match threshold from its own labelled photos.

The pack's default threshold was set on public photos; a site's cameras,
lighting and population differ. Given the site's gallery
(``gallery/<identity>/<photos>``, e.g. the registry photos) and probe photos
labelled by identity (``probes/<identity>/<photos>``, e.g. captures the managers
confirmed), this finds the lowest threshold whose false-positive
identification rate on the site's STRANGER probes (identities absent from the
gallery) is at most the target, and reports the false-negative rate it costs on
the genuine probes.

Definitions (open-set 1:N, as in ISO/IEC 19795 and bench/accuracy.py):

* FPIR: share of stranger probes whose best gallery similarity reaches the
  threshold (a stranger taken for some occupant).
* FNIR: share of genuine probes NOT matched to their own identity at the
  threshold (no face, below the threshold, or closer to someone else).

With fewer than ``1 / target`` strangers the target cannot be measured (one
stranger more or less moves FPIR past it), so the command refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import CalibrationError
from edge.evaluate import ProbeResult, evaluate_probes
from edge.face.engine import FaceEngine
from edge.face.models import ModelConfig
from edge.gallery import Gallery, failed_to_enrol_line

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Calibration:
    """The threshold for a site and what it was measured on (the JSON written)."""

    model: str
    threshold: float
    target_fpir: float
    fpir: float
    """Measured on the stranger probes at ``threshold`` (<= ``target_fpir``)."""
    fnir: float
    """Measured on the genuine probes at ``threshold``."""
    probes: int
    strangers: int


def threshold_at_fpir(stranger_scores: npt.ArrayLike, fpir: float) -> float:
    """Lowest threshold at which at most ``fpir`` of the strangers reach it.

    Just above the (k+1)-th highest stranger score, k = floor(fpir * n): exactly
    k strangers (ties aside) are at or above it. Faceless probes score -1.
    """
    desc = np.sort(np.asarray(stranger_scores, dtype=np.float64))[::-1]
    if desc.size == 0:
        raise CalibrationError("no stranger scores to set a threshold on")
    allowed = math.floor(fpir * desc.size + 1e-9)
    if allowed >= desc.size:
        return float(desc[-1])
    return float(np.nextafter(desc[allowed], np.inf))


def min_strangers(target_fpir: float) -> int:
    """Fewest stranger probes for which ``target_fpir`` is measurable: ceil(1 / target)."""
    return math.ceil(1.0 / target_fpir - 1e-9)


def calibrate(
    results: list[ProbeResult],
    gallery_identities: set[str],
    *,
    target_fpir: float,
    model: str,
) -> Calibration:
    """Threshold at ``target_fpir`` from matched probes (``path`` = ``<identity>/...``)."""
    if not 0.0 < target_fpir < 1.0:
        raise CalibrationError(f"target FPIR must be between 0 and 1, got {target_fpir}")
    genuine: list[ProbeResult] = []
    strangers: list[ProbeResult] = []
    for r in results:
        identity = r.path.split("/", 1)[0]
        if "/" not in r.path:
            raise CalibrationError(
                f"probe {r.path} is not in an identity folder (probes/<identity>/<photo>)"
            )
        (genuine if identity in gallery_identities else strangers).append(r)
    need = min_strangers(target_fpir)
    if len(strangers) < need:
        raise CalibrationError(
            f"{len(strangers)} stranger probe(s) (identities not in the gallery); a target "
            f"FPIR of {target_fpir:g} needs at least {need} to be measured. Add photos of "
            "people who are not enrolled, or use a larger --target-fpir"
        )
    s_scores = np.asarray([r.similarity for r in strangers], dtype=np.float64)
    t = threshold_at_fpir(s_scores, target_fpir)
    fpir = float(np.mean(s_scores >= t))
    if genuine:
        hits = [r.best == r.path.split("/", 1)[0] and r.similarity >= t for r in genuine]
        fnir = 1.0 - float(np.mean(hits))
    else:
        fnir = float("nan")
        log.warning("no genuine probes (no probe identity is in the gallery): FNIR unknown")
    return Calibration(
        model=model,
        threshold=t,
        target_fpir=target_fpir,
        fpir=fpir,
        fnir=fnir,
        probes=len(results),
        strangers=len(strangers),
    )


def cli_calibrate(args: argparse.Namespace) -> int:
    """Entry point of ``lintel-edge calibrate`` (arguments from :mod:`edge.cli`)."""
    probes = Path(args.probes)
    if not probes.is_dir():
        raise CalibrationError(f"probes folder {probes} does not exist or is not a directory")
    if not 0.0 < args.target_fpir < 1.0:
        raise CalibrationError(f"--target-fpir must be between 0 and 1, got {args.target_fpir}")
    engine = FaceEngine.load(ModelConfig(pack=args.model, threads=args.threads or 1))
    # A site's registry photos are what they are: calibrate on the usable ones.
    # --strict stops at the first refused photo instead (the old behaviour).
    gallery = Gallery.from_folder(
        args.gallery, engine, skip_unusable=not getattr(args, "strict", False)
    )
    results = evaluate_probes(engine, gallery, probes)
    # Probes of people whose gallery photos all failed to enrol are neither
    # genuine (nothing to match) nor strangers (they are not): leave them out.
    folders = {p.name for p in Path(args.gallery).iterdir() if p.is_dir()}
    unenrolled = folders - set(gallery.identities)
    if unenrolled:
        before = len(results)
        results = [r for r in results if r.path.split("/", 1)[0] not in unenrolled]
        log.warning(
            "%d probe(s) of %d identities that failed to enrol left out",
            before - len(results),
            len(unenrolled),
        )
    cal = calibrate(
        results, set(gallery.identities), target_fpir=args.target_fpir, model=engine.model_id
    )
    genuine = cal.probes - cal.strangers
    lines = [
        f"model {cal.model}, gallery {len(gallery)} identities, "
        f"{cal.probes} probes ({genuine} genuine, {cal.strangers} strangers)",
        f"{'':<26}{'threshold':>10}{'FPIR':>9}{'FNIR':>9}",
        f"{'target FPIR ' + format(cal.target_fpir, 'g'):<26}{cal.threshold:>10.4f}"
        f"{_pct(cal.fpir):>9}{_pct(cal.fnir):>9}",
    ]
    default = engine.pack.default_threshold
    lines.append(
        f"{'pack default':<26}{default:>10.4f}"
        f"{_pct(_fpir_at(results, set(gallery.identities), default)):>9}"
        f"{_pct(_fnir_at(results, set(gallery.identities), default)):>9}"
    )
    if line := failed_to_enrol_line(gallery.failed_to_enrol):
        lines.append(line)
    sys.stdout.write("\n".join(lines) + "\n")
    doc: dict[str, object] = asdict(cal)
    if math.isnan(cal.fnir):
        doc["fnir"] = None  # JSON has no NaN
    doc["failed_to_enrol"] = [f.as_json() for f in gallery.failed_to_enrol]
    sys.stdout.write(json.dumps(doc) + "\n")
    if args.out is not None:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        log.info("calibration written to %s", out)
    return 0


def _split(results: list[ProbeResult], ids: set[str]) -> tuple[list[ProbeResult], ...]:
    genuine = [r for r in results if r.path.split("/", 1)[0] in ids]
    strangers = [r for r in results if r.path.split("/", 1)[0] not in ids]
    return genuine, strangers


def _fpir_at(results: list[ProbeResult], ids: set[str], t: float) -> float:
    _, strangers = _split(results, ids)
    return float(np.mean([r.similarity >= t for r in strangers])) if strangers else float("nan")


def _fnir_at(results: list[ProbeResult], ids: set[str], t: float) -> float:
    genuine, _ = _split(results, ids)
    if not genuine:
        return float("nan")
    return 1.0 - float(
        np.mean([r.best == r.path.split("/", 1)[0] and r.similarity >= t for r in genuine])
    )


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.2f}%"
