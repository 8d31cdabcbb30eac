"""`lintel-demo` names the port it took, and never wipes a workdir under a live server
(issue 14)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from lintel_demo.cli import main
from lintel_demo.demo import SERVER_MARK, Demo, _port, running_server
from tests.integration.harness import free_port


def test_a_busy_port_is_named_with_the_one_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        wanted = int(busy.getsockname()[1])
        got = _port(wanted)
    assert got != wanted
    out = capsys.readouterr().out
    assert f"port {wanted} is busy on 127.0.0.1: the demo server takes port {got} instead" in out
    free = free_port()
    assert _port(free) == free
    assert capsys.readouterr().out == ""  # a free port is taken without a word


def test_a_workdir_under_a_running_server_is_not_wiped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "server").mkdir()
    demo = Demo(tmp_path, port=free_port())
    try:
        server = demo.start("server.cli", "run", "--port", str(demo.port), log="server.log")
        demo.mark_server(server)
        demo.wait_healthy(server)
        db = tmp_path / "server" / "lintel.sqlite3"
        before = sorted(p.name for p in (tmp_path / "server").iterdir())
        assert db.exists()
        assert running_server(tmp_path) == (server.pid, demo.port)

        code = main(["--workdir", str(tmp_path), "--no-serve", "--port", str(free_port())])
        assert code == 2
        err = capsys.readouterr().err
        assert f"a Lintel server (pid {server.pid} on port {demo.port}) still runs" in err
        assert "not wiping them" in err
        assert sorted(p.name for p in (tmp_path / "server").iterdir()) == before
        assert server.poll() is None  # and it still serves
    finally:
        demo.close()
    # Stopped: the mark is gone, so the next demo may start afresh.
    assert not (tmp_path / SERVER_MARK).exists()
    assert running_server(tmp_path) is None


def test_a_stale_mark_does_not_block(tmp_path: Path) -> None:
    # A pid that is not a Lintel server (this test's own process) and one that is gone.
    (tmp_path / SERVER_MARK).write_text(f'{{"pid": {os.getpid()}, "port": 1}}')
    assert running_server(tmp_path) is None
    (tmp_path / SERVER_MARK).write_text('{"pid": 999999999, "port": 1}')
    assert running_server(tmp_path) is None
    (tmp_path / SERVER_MARK).write_text("not json")
    assert running_server(tmp_path) is None
