"""`lintel-demo --offline`: the sample gallery and video, replayed without a server;
and `lintel-edge demo`, which only points to it now."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import DEMO_MOVED
from edge.cli import main as edge_main
from lintel_demo.cli import main


@pytest.mark.models
def test_demo_gets_every_walk_in_right(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--offline", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4/4 walk-ins right, 4 tracks;" in out
    assert (tmp_path / "entrance.mp4").is_file() and (tmp_path / "gallery" / "t1_p3").is_dir()


@pytest.mark.parametrize("argv", [["demo"], ["demo", "--offline", "--workdir", "x"]])
def test_lintel_edge_demo_points_to_lintel_demo(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == DEMO_MOVED + "\n" and "lintel-demo" in captured.err
    assert captured.out == ""
