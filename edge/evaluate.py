"""``lintel-edge eval``: match a folder of probe photos against a gallery folder.

Probe folders are named by identity (``probes/<identity>/<photo>``); identities
absent from the gallery are strangers. For each probe photo the subject is the
face nearest the centre / largest (:func:`edge.face.engine.main_face`: LFW-style
photos have bystanders), found with padded detection so tight crops work. No
quality gate is applied to probes: the gate belongs to enrolment, and a probe
that cannot be matched should show up as a miss, not vanish from the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.face.engine import FaceEngine, main_face, read_image
from edge.face.errors import ImageError, LintelEdgeError
from edge.face.models import ModelConfig
from edge.gallery import IMAGE_SUFFIXES, Gallery, failed_to_enrol_line

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe photo's outcome."""

    path: str
    """Relative to the probes folder, with forward slashes."""
    best: str | None
    similarity: float
    identity: str | None


def probe_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder`` (hidden ones skipped), sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def evaluate_probes(
    engine: FaceEngine, gallery: Gallery, probes: Path, *, threshold: float | None = None
) -> list[ProbeResult]:
    """Match every probe photo under ``probes``; unreadable or faceless ones score -1."""
    results: list[ProbeResult] = []
    for path in probe_files(probes):
        rel = path.relative_to(probes).as_posix()
        try:
            img = read_image(path, name=rel)
        except ImageError as exc:
            log.warning("probe skipped as faceless: %s", exc)
            results.append(ProbeResult(rel, None, -1.0, None))
            continue
        face = main_face(engine.detect_photo(img), img.shape)
        if face is None:
            results.append(ProbeResult(rel, None, -1.0, None))
            continue
        emb = engine.embed(img, [face])
        m = gallery.match(emb, model_id=engine.model_id, threshold=threshold)[0]
        results.append(ProbeResult(rel, m.best, m.similarity, m.identity))
    return results


def cli_eval(args: argparse.Namespace) -> int:
    """Entry point of ``lintel-edge eval`` (arguments from :mod:`edge.cli`)."""
    config = ModelConfig(
        pack=args.model,
        threads=args.threads or 1,
        match_threshold=args.threshold,
    )
    probes = Path(args.probes)
    if not probes.is_dir():
        raise LintelEdgeError(f"probes folder {probes} does not exist or is not a directory")
    engine = FaceEngine.load(config)
    # A refused gallery photo is a result (failed_to_enrol), not a reason to stop;
    # --strict keeps the stop-at-any-refusal behaviour.
    gallery = Gallery.from_folder(
        args.gallery, engine, skip_unusable=not getattr(args, "strict", False)
    )
    results = evaluate_probes(engine, gallery, probes, threshold=engine.threshold)
    if args.json:
        doc = {
            "model": engine.model_id,
            "threshold": engine.threshold,
            "failed_to_enrol": [f.as_json() for f in gallery.failed_to_enrol],
            "probes": [
                {
                    "path": r.path,
                    "best": r.best,
                    "similarity": round(r.similarity, 6),
                    "identity": r.identity,
                }
                for r in results
            ],
        }
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        return 0
    width = max([len("probe"), *(len(r.path) for r in results)])
    lines = [
        f"model {engine.model_id}, threshold {engine.threshold:.3f}, "
        f"gallery {len(gallery)} identities, {len(results)} probes",
        *([line] if (line := failed_to_enrol_line(gallery.failed_to_enrol)) else []),
        f"{'probe':<{width}}  {'similarity':>10}  {'best':<24}  decision",
    ]
    for r in results:
        sim = "no face" if r.best is None else f"{r.similarity:.3f}"
        lines.append(
            f"{r.path:<{width}}  {sim:>10}  {r.best or '-':<24}  {r.identity or 'unknown'}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
