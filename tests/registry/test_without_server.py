"""The office PC's registry tool without the server's packages (issue 16).

An office PC installs only the registry extra: no SQLAlchemy, FastAPI or
psycopg. Run in a fresh interpreter where importing those fails, as it would
there: the tool still starts, writes a template and goes to a server with
--server, and the local --db mode (which writes the server's database
directly) says in one line what it needs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.registry.helpers import HEADER, make_id

_BLOCK = (
    "import sys\n"
    "for name in ('sqlalchemy', 'fastapi', 'psycopg', 'jinja2', 'alembic'):\n"
    "    sys.modules[name] = None  # importing it now fails, as on a registry-only install\n"
    "from registry.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "loaded = sorted(m for m in sys.modules if m == 'server' or m.startswith('server.'))\n"
    "print('server modules loaded:', loaded)\n"
    "raise SystemExit(code)\n"
)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )


def test_template_works_without_the_server(tmp_path: Path) -> None:
    done = _run("template", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        (tmp_path / "t.csv")
        .read_text(encoding="utf-8-sig")
        .startswith("# Lintel registry import template")
    )
    assert "server modules loaded: []" in done.stdout


def test_local_db_mode_without_the_server_says_what_it_needs(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text(HEADER, encoding="utf-8")
    done = _run("import", str(csv), "--site", "s", "--db", "sqlite:///x.db", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "lintel-registry: error: the local --db mode needs the server (no module "
        "'sqlalchemy'): pip install 'lintel[server,registry]', or import through --server URL"
    ]
    assert not (tmp_path / "x.db").exists()


def test_remote_import_needs_no_server_packages(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text(HEADER + f"张三,{make_id(1)},13800000001,3幢2单元1203室,业主,,,E1\n", "utf-8")
    # Nothing listens on port 9: the run gets as far as asking the server, without
    # the server's packages; no photo, so the face engine is never needed either.
    done = _run(
        "import", str(csv), "--site", "s", "--server", "http://127.0.0.1:9", "--token", "t",
        "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot reach the server http://127.0.0.1:9" in done.stderr
    assert "server modules loaded: []" in done.stdout
