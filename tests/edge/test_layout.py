"""The edge package's shape (issue 16): helpers written once, no sideways imports,
and the shared helpers doing what their callers rely on."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import edge
from edge.face.boxes import nms
from edge.face.types import BBox, Detection
from edge.files import atomic_write

EDGE = Path(edge.__file__).parent


def _modules() -> dict[str, ast.Module]:
    return {
        str(p.relative_to(EDGE)): ast.parse(p.read_text(encoding="utf-8"))
        for p in sorted(EDGE.rglob("*.py"))
    }


def _body_without_docstring(fn: ast.FunctionDef) -> str:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return "\n".join(ast.dump(stmt) for stmt in body)


def test_no_function_body_is_written_twice() -> None:
    # A helper copied into a second module drifts (as iou did, once in the engine,
    # once in the tracker): one home each. Bodies of three statements or fewer
    # (one-line accessors and the like) are too small to count as a copy.
    seen: dict[str, str] = {}
    copies = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and len(node.body) > 3:
                key = _body_without_docstring(node)
                where = f"{name}:{node.name}"
                if key in seen:
                    copies.append((seen[key], where))
                seen.setdefault(key, where)
    assert copies == []


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_daemon_and_the_replay_command_do_not_import_each_other() -> None:
    # Both map a track to a sighting through edge.pipeline.sightings, below them.
    modules = _modules()
    daemon = set().union(*(_imported(t) for n, t in modules.items() if n.startswith("daemon/")))
    assert "edge.replay" not in daemon
    assert not any(m.startswith("edge.daemon") for m in _imported(modules["replay.py"]))
    assert "edge.pipeline.sightings" in daemon
    assert "edge.pipeline.sightings" in _imported(modules["replay.py"])


def _det(x: float, score: float) -> Detection:
    return Detection(bbox=BBox(x, 0.0, x + 10.0, 10.0), det_score=score, landmarks=())


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one() -> None:
    weak, strong, apart = _det(1.0, 0.6), _det(0.0, 0.9), _det(50.0, 0.5)
    assert nms([weak, strong, apart], 0.5) == [strong, apart]
    # A bound above their overlap (9/11) keeps both.
    assert nms([weak, strong], 0.85) == [strong, weak]


def test_atomic_write_replaces_whole_or_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state" / "status.json"
    atomic_write(path, b"old")
    assert path.read_bytes() == b"old"

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]  # no temp left
