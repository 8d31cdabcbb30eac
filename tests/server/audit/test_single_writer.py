"""Every audit write goes through server.audit.service.record (else the chain would break).

A static check over the packages' source: nothing but the audit service builds
an ``AuditEvent`` or writes the ``audit_events`` table (the migrations aside,
which create it and backfill the chain).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("server", "registry", "edge")
ALLOWED = {Path("server/audit/service.py")}
WRITES = re.compile(
    r"(?<!class )AuditEvent\s*\("
    r"|(insert|update|delete)\s*\(\s*AuditEvent"
    r"|(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+audit_events",
    re.IGNORECASE,
)


def _sources() -> list[Path]:
    out = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "migrations" not in rel.parts:
                out.append(rel)
    return sorted(out)


def test_the_scan_sees_the_code() -> None:
    sources = _sources()
    assert Path("server/audit/service.py") in sources and len(sources) > 40
    assert WRITES.search((ROOT / "server/audit/service.py").read_text())  # it can match


@pytest.mark.parametrize("path", _sources(), ids=str)
def test_no_audit_write_outside_the_service(path: Path) -> None:
    if path in ALLOWED:
        return
    hits = [
        f"{path}:{n}: {line.strip()}"
        for n, line in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1)
        if WRITES.search(line)
    ]
    assert not hits, "write audit events with server.audit.service.record:\n" + "\n".join(hits)
