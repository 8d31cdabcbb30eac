"""The floors of the code (issue 16, docs/architecture.md): walked with ``ast``, never imported.

Floors, lowest first; an import may only go to its own floor or a lower one:

0. the wire contract and the face engine: ``edge.wire``, ``edge.face.*``; each
   imports nothing of ours outside itself
1. the rest of ``edge`` (pipeline, daemon, tools) and the pure ``registry``
   library, side by side: neither imports the other except through floor 0
2. ``server``
3. entry points: every ``*.cli`` module and ``lintel_demo``

Besides the floors: no circle among module-level imports, and no import of
ours inside a function unless :data:`INLINE_ALLOWED` names it with its
reason (an optional extra that may not be installed, or a measured start-up
cost). A second check runs real interpreters: the server's command line loads
no face engine, the edge's tools no server stack.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "registry", "server", "lintel_demo")

INLINE_ALLOWED: dict[tuple[str, str], str] = {
    # (importing module, imported module): why the import waits for the call
    **{
        ("edge.cli", target): "sub-command dispatch: `lintel-edge --help` answers in 0.15 s; "
        "importing every sub-command's module first (cv2, numpy, pydantic, the pipeline) "
        "takes ~1.1 s on the 2-core dev box"
        for target in (
            "edge.replay",
            "edge.evaluate",
            "edge.face.models",
            "edge.calibrate",
            "edge.daemon.run",
            "edge.enrol",
        )
    },
    ("registry.enrol", "edge.face.engine"): "optional extra: the server imports the registry "
    "library (registry.importer -> registry.enrol) without the face engine installed (no cv2, "
    "no onnxruntime); only enrolling a photo loads it",
}

# The server never loads the edge's runtime: the pipeline, the daemon, or the
# engine (cv2 + onnxruntime); the server extra installs none of them.
SERVER_MUST_NOT_IMPORT = ("edge.pipeline", "edge.daemon", "edge.face.engine")


@dataclass(frozen=True, slots=True)
class Import:
    source: str
    target: str
    path: Path
    line: int
    in_function: bool
    type_checking: bool

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def floor(module: str) -> int:
    """0 wire + face engine, 1 edge and registry, 2 server, 3 entry points."""
    if module == "edge.wire" or module == "edge.face" or module.startswith("edge.face."):
        return 0
    if module.split(".")[-1] == "cli" or module.split(".")[0] == "lintel_demo":
        return 3
    if module.split(".")[0] == "server":
        return 2
    return 1


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _target(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (a name imported from a
    package may be its submodule: ``from server.sightings import crops``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports_of(source: str, path: Path, known: set[str]) -> list[Import]:
    """The project imports of one module, each marked in-function and TYPE_CHECKING-only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, func, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, func, type_checking)
            else:
                visit_stmt(child, func, type_checking)

    def visit_stmt(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                here = package[: len(package) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            visit(node, in_function, type_checking)
            return
        for name in names:
            target = _target(name, known)
            if target is not None and target != source:
                found.append(Import(source, target, path, node.lineno, in_function, type_checking))

    visit(tree, False, False)
    return found


def collect(root: Path, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """Every import of a project module by a project module under ``root``."""
    files = {
        _module_name(root, p): p
        for pkg in packages
        if (root / pkg).is_dir()
        for p in sorted((root / pkg).rglob("*.py"))
    }
    known = set(files)
    return [imp for source, path in files.items() for imp in _imports_of(source, path, known)]


def _column(module: str) -> str:
    return module.split(".")[0]


def _bottom_part(module: str) -> str:
    """``edge.wire`` or ``edge.face``: the two parts of floor 0."""
    return ".".join(module.split(".")[:2])


def _circles(imports: list[Import], root: Path) -> list[str]:
    """Strongly connected components of the module-level import graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], Import] = {}
    for imp in imports:
        if imp.in_function or imp.type_checking:
            continue
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
        edges.setdefault((imp.source, imp.target), imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    problems = []
    for component in components:
        members = set(component)
        links = [
            f"{imp.where(root)} ({imp.source} -> {imp.target})"
            for (a, b), imp in sorted(edges.items())
            if a in members and b in members
        ]
        problems.append(f"import circle among {', '.join(component)}: " + "; ".join(links))
    return problems


def check(
    root: Path,
    packages: Iterable[str] = PACKAGES,
    inline_allowed: Mapping[tuple[str, str], str] = INLINE_ALLOWED,
) -> list[str]:
    """Every breach of the floors under ``root``, each naming file and line ([] if none)."""
    imports = collect(root, packages)
    problems: list[str] = []
    used_allowances: set[tuple[str, str]] = set()
    for imp in imports:
        a, b = floor(imp.source), floor(imp.target)
        where = imp.where(root)
        if b > a:
            problems.append(
                f"{where}: upward import: {imp.source} (floor {a}) imports {imp.target} (floor {b})"
            )
        elif a == b == 0 and _bottom_part(imp.source) != _bottom_part(imp.target):
            problems.append(
                f"{where}: {imp.source} imports {imp.target}: the wire contract and the face "
                "engine each import nothing of ours outside themselves"
            )
        elif a == b == 1 and _column(imp.source) != _column(imp.target):
            problems.append(
                f"{where}: sideways import: {imp.source} imports {imp.target} (edge and "
                "registry meet only through floor 0: edge.wire, edge.face)"
            )
        if (
            _column(imp.source) == "server"
            and not imp.in_function
            and any(
                imp.target == m or imp.target.startswith(m + ".") for m in SERVER_MUST_NOT_IMPORT
            )
        ):
            problems.append(f"{where}: {imp.source} imports the edge runtime {imp.target}")
        if imp.in_function:
            key = (imp.source, imp.target)
            if key in inline_allowed:
                used_allowances.add(key)
            else:
                problems.append(
                    f"{where}: import inside a function: {imp.source} imports {imp.target} "
                    "(move it to the top, or list it in INLINE_ALLOWED with the reason)"
                )
    problems.extend(_circles(imports, root))
    # An allowance nothing uses any more is removed, so the list stays the truth.
    problems.extend(
        f"INLINE_ALLOWED names {source} -> {target}, which no function imports any more"
        for source, target in sorted(set(inline_allowed) - used_allowances)
    )
    return problems


def test_the_code_keeps_its_floors() -> None:
    assert check(REPO) == []


def test_every_inline_import_allowance_gives_a_reason() -> None:
    assert all(len(reason) > 40 for reason in INLINE_ALLOWED.values())


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_finds_upward_imports_circles_and_hidden_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "edge/__init__.py": "",
            "edge/wire.py": "import numpy\nfrom server.app import create_app\n",
            "edge/face/types.py": "from edge.wire import API_PREFIX\n",
            "edge/face/__init__.py": "",
            "edge/face/engine.py": "from edge.pipeline import stream\n",
            "edge/pipeline/__init__.py": "",
            "edge/pipeline/stream.py": "from registry import store\n",
            "registry/__init__.py": "",
            "registry/store.py": "def f() -> None:\n    from edge.face import engine\n",
            "server/__init__.py": "",
            "server/app.py": "from .cases import service\n",
            "server/cases/__init__.py": "",
            "server/cases/service.py": "from server.clusters.service import merge\n",
            "server/clusters/__init__.py": "",
            "server/clusters/service.py": (
                "from typing import TYPE_CHECKING\n"
                "from server.cases import service\n"
                "from edge.daemon.run import EdgeDaemon\n"
                "if TYPE_CHECKING:\n    from server.app import create_app\n"
            ),
            "edge/daemon/__init__.py": "",
            "edge/daemon/run.py": "",
            "edge/cli.py": "def main() -> None:\n    from edge.daemon import run\n",
        },
    )
    problems = check(
        tmp_path, inline_allowed={("edge.cli", "edge.daemon.run"): "why", ("a", "b"): "gone"}
    )
    assert problems == [
        "edge/face/engine.py:1: upward import: edge.face.engine (floor 0) imports "
        "edge.pipeline.stream (floor 1)",
        "edge/face/types.py:1: edge.face.types imports edge.wire: the wire contract and the "
        "face engine each import nothing of ours outside themselves",
        "edge/pipeline/stream.py:1: sideways import: edge.pipeline.stream imports registry.store "
        "(edge and registry meet only through floor 0: edge.wire, edge.face)",
        "edge/wire.py:2: upward import: edge.wire (floor 0) imports server.app (floor 2)",
        "registry/store.py:2: import inside a function: registry.store imports edge.face.engine "
        "(move it to the top, or list it in INLINE_ALLOWED with the reason)",
        "server/clusters/service.py:3: server.clusters.service imports the edge runtime "
        "edge.daemon.run",
        "import circle among server.cases.service, server.clusters.service: "
        "server/cases/service.py:1 (server.cases.service -> server.clusters.service); "
        "server/clusters/service.py:2 (server.clusters.service -> server.cases.service)",
        "INLINE_ALLOWED names a -> b, which no function imports any more",
    ]


def _loaded_by(code: str) -> list[str]:
    """Modules a fresh interpreter has loaded after running ``code`` (from the repo root)."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        # The server's command line and app: no face engine (the server extra has none).
        (
            "import server.cli, server.app, registry.importer; server.cli.build_parser()",
            ("cv2", "onnxruntime", "insightface", "edge.face.engine", "edge.pipeline"),
        ),
        # The edge's tools and daemon: no server stack (the edge extra has none).
        (
            "import edge.cli, edge.replay, edge.evaluate, edge.calibrate, edge.daemon.run",
            ("fastapi", "sqlalchemy", "psycopg", "jinja2", "server", "registry"),
        ),
        # `lintel-edge --help`: the reason its sub-command imports wait (INLINE_ALLOWED).
        (
            "import edge.cli; edge.cli.build_parser()",
            ("cv2", "numpy", "pydantic", "onnxruntime", "edge.pipeline", "edge.face.engine"),
        ),
        # The office PC's registry tool: neither the server nor the engine until it enrols.
        (
            "import registry.cli; registry.cli.build_parser()",
            ("fastapi", "sqlalchemy", "server", "cv2", "onnxruntime"),
        ),
    ],
)
def test_each_role_loads_only_its_own_stack(code: str, forbidden: tuple[str, ...]) -> None:
    loaded = _loaded_by(code)
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)] == []
