"""bench/accuracy.py: a person who failed to enrol counts in FNIR (all probes missed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _accuracy() -> object:
    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = module
    spec.loader.exec_module(module)
    return module


def test_failed_to_enrol_probes_are_misses_in_fnir() -> None:
    acc = _accuracy()
    rng = np.random.default_rng(0)
    dim = 16

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v)).astype(np.float32)

    centres = {i: unit(rng.normal(size=dim)) for i in ("a", "b", "s1", "s2")}
    pop = acc.Population("toy")  # type: ignore[attr-defined]
    probes = {}
    for ident, centre in centres.items():
        paths = [Path(f"{ident}/{k}.jpg") for k in range(1, 4)]
        pop.photos[ident] = paths
        for p in paths:  # every photo close to its person's centre
            probes[p] = acc.PhotoResult(unit(centre + 0.05 * rng.normal(size=dim)), None, 0.0)  # type: ignore[attr-defined]
    enrol = {
        "a": acc.Enrolment([probes[pop.photos["a"][0]].embedding], {0}, None),  # type: ignore[attr-defined]
        "b": acc.Enrolment([], {0}, "bad_pose"),  # type: ignore[attr-defined]  # refused
        "s1": acc.Enrolment([], {0}, None),  # type: ignore[attr-defined]
        "s2": acc.Enrolment([], {0}, None),  # type: ignore[attr-defined]
    }
    m = acc.evaluate_split(  # type: ignore[attr-defined]
        pop, enrol, probes, {"a", "b"}, model_id="toy", default_threshold=0.5
    )
    assert m.n_fte == 1
    # a's two probes match; b's two are misses because b has no template.
    assert m.n_genuine == 4
    assert m.fnir_enrolled_only[0.01] == 0.0
    assert m.fnir[0.01] == 0.5 and m.fnir_at_default == 0.5
