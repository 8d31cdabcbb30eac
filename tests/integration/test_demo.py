"""`lintel-demo --no-serve`: registry import, server, edge daemon, worker, cases."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lintel_demo.cli import main
from lintel_demo.demo_site import DAYS, expected_cases, expected_likely
from tests.integration.harness import free_port

pytestmark = pytest.mark.models


def test_demo_seeds_a_site_whose_unregistered_residents_become_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert main(["--workdir", str(tmp_path), "--no-serve", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    walk_ins = sum(len(people) for _d, _t, people in DAYS)
    assert f"{walk_ins} sightings sent" in out
    assert f"{expected_cases()} open case(s) (expected {expected_cases()})" in out
    assert f"http://127.0.0.1:{port}/web/queue" in out
    # Two unregistered residents and 王芳, whose register photo is far from her door
    # look (a desk check); 姚明's poor photo makes him a likely resident, not a case.
    assert expected_cases() == 3 and expected_likely() == 1
    assert f"{expected_likely()} likely resident(s) for the manager to confirm" in out
    # 王芳's case names her (a desk check); the unregistered residents' cases name nobody.
    assert out.count("; desk check: names registered occupant ") == 1
    # What a manager would get: one signed webhook message per case opened (issue 15).
    assert out.count("notification (webhook, signature verified): New case #") == expected_cases()
    # The server it started is gone: nothing listens on its port any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
