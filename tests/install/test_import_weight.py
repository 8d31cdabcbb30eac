"""Each role's entry points load only its own stack (the extras in pyproject.toml).

The dev venv has every package installed, so a stray import would go unnoticed until a
lean install fails at start. This runs each role's modules in a fresh interpreter and
names the chain that pulled in a package the role's extra does not install; the real
lean installs are checked in fresh venvs by tests/install/check_extras.py (make
check-extras).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The face stack: what `.[engine]` adds and `.[server]` must do without.
FACE_STACK = ("cv2", "onnxruntime", "insightface", "onnx", "skimage", "scipy")
# The server stack: what `.[server]` adds and `.[edge]` / `.[registry]` do without.
SERVER_STACK = ("fastapi", "starlette", "sqlalchemy", "alembic", "psycopg", "jinja2", "argon2")

# What each console script loads for its commands (the CLIs import a command's module
# when it runs); the server also builds its app, which imports every router.
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "server": (
        "import server.cli, server.app, server.clusters.worker, server.notify.worker, "
        "server.notify.cli, server.privacy.cli\n"
        "from server.settings import Settings\n"
        "server.app.create_app(Settings(database_url='sqlite://', migrate_on_start=False))",
        FACE_STACK,
    ),
    "edge": (
        "import edge.cli, edge.replay, edge.evaluate, edge.calibrate, edge.models, edge.daemon.run",
        SERVER_STACK,
    ),
    "registry": (
        "import registry.cli, registry.importer, registry.remote, registry.template, "
        "registry.enrol, edge.engine",
        SERVER_STACK,
    ),
}


def import_chains(importtime: str, forbidden: tuple[str, ...]) -> list[str]:
    """Who imported each forbidden package, from ``python -X importtime`` output.

    Lines come children first, indented two spaces per level, so a module's importer
    is the next line with less indentation.
    """
    rows: list[tuple[int, str]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        name = line.rsplit("|", 1)[1]
        stripped = name.lstrip(" ")
        if stripped == "package":  # the header line
            continue
        rows.append(((len(name) - len(stripped) - 1) // 2, stripped))
    chains: list[str] = []
    for i, (depth, name) in enumerate(rows):
        if name not in forbidden:
            continue
        chain = [name]
        for up_depth, up_name in rows[i + 1 :]:
            if up_depth < depth:
                chain.append(up_name)
                depth = up_depth
                if depth == 0:
                    break
        chains.append(" <- ".join(chain))
    return chains


@pytest.mark.parametrize("role", sorted(ROLES))
def test_a_role_loads_none_of_the_other_stack(role: str) -> None:
    code, forbidden = ROLES[role]
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(done.stdout.split())
    assert "numpy" in loaded  # the probe saw the modules
    assert not [m for m in forbidden if m in loaded], "\n".join(
        import_chains(done.stderr, forbidden)
    )


def test_import_chains_names_who_imported_what() -> None:
    # The shape of -X importtime output: children first, two spaces a level.
    sample = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |           cv2",
            "import time:        10 |        110 |         edge.quality",
            "import time:        10 |        120 |       registry.enrol",
            "import time:        10 |         10 |       registry.errors",
            "import time:        10 |        140 |     registry.importer",
            "import time:        10 |        150 |   server.registry_api.views",
            "import time:        10 |        160 | server.app",
        ]
    )
    assert import_chains(sample, ("cv2",)) == [
        "cv2 <- edge.quality <- registry.enrol <- registry.importer"
        " <- server.registry_api.views <- server.app"
    ]
    assert import_chains(sample, ("fastapi",)) == []
