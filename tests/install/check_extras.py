"""Install each role's extra into a fresh venv and run its commands there (`make check-extras`).

For ``.[server]``, ``.[edge]`` and ``.[registry]`` in turn: a fresh venv in a temporary
folder, the project installed from a wheel (not editable, the repository is not on the
path), then the role's commands, each run through a probe that records every module the
command loaded:

* server: ``db upgrade`` on a SQLite file, ``site add``, ``device add``, ``user add``,
  ``run`` answering ``/healthz`` and the login page, the device's gallery, ``worker
  --once``, and ``lintel-registry import --db`` of a register without photos into a new
  site (whose model id must be the edges' though the model wheel is absent); cv2,
  onnxruntime, insightface are neither installed nor imported.
* registry: ``template``, a ``--dry-run`` and a real import of a small CSV with one
  photo through the server above (``--server``: the photo is enrolled in the registry
  venv and the lean server stores the face; the device's gallery then holds it), and
  ``import --db`` refused with a clear error; no web or database stack installed.
* edge: ``replay`` of a generated entrance video (the tracks and who they are),
  ``eval`` of a photo against a gallery, and the daemon (``run``) on that video against
  the server above until its sightings are delivered (the server counts them); no web or
  database stack installed.

Prints a table (extra, MB the install added to site-packages, distributions, seconds,
result) and exits 1 if any check failed. Test data (video, photos, CSV) is made with the
dev venv running this script: ``.venv/bin/python -m tests.install.check_extras``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lintel_demo.videogen import write_gallery
from tests.edge.pipeline_fixtures import DISTRACTOR, KNOWN, make_scenario_video
from tests.registry.helpers import HEADER, make_id

ROOT = Path(__file__).resolve().parents[2]
# The face stack: what `.[engine]` adds and `.[server]` does without.
FACE_STACK = ("cv2", "onnxruntime", "insightface", "onnx", "skimage", "scipy")
# The server stack: what `.[server]` adds and `.[edge]` / `.[registry]` do without.
SERVER_STACK = ("fastapi", "starlette", "sqlalchemy", "alembic", "psycopg", "jinja2", "argon2")
EXTRAS = ("server", "registry", "edge")
# What must not even be installed: the other role's stack (the `dev` extra has all).
NOT_INSTALLED: dict[str, tuple[str, ...]] = {
    "server": ("cv2", "onnxruntime", "insightface", "onnx", "skimage"),
    "edge": SERVER_STACK,
    "registry": SERVER_STACK,
}
NOT_IMPORTED: dict[str, tuple[str, ...]] = {
    "server": FACE_STACK,
    "edge": SERVER_STACK,
    "registry": SERVER_STACK,
}
SITE = "Sunrise Court"
NEW_SITE = "New Court"
# The bundled pack's model id, as every edge of a new site reports it.
BUNDLED_MODEL_ID = "buffalo_s/w600k_mbf"

# Runs a console script's entry point as the script would, and on exit writes every loaded
# module and where our packages came from (so a check can prove it ran the installed copy).
PROBE = """\
import atexit, json, os, sys
from importlib.metadata import entry_points

def _dump():
    ours = {p: getattr(sys.modules.get(p), "__file__", None) for p in ("edge", "server")}
    with open(os.environ["LINTEL_PROBE_OUT"], "w") as f:
        json.dump({"modules": sorted(sys.modules), "ours": ours}, f)

atexit.register(_dump)
name = sys.argv[1]
(ep,) = entry_points(group="console_scripts", name=name)
sys.argv = [name, *sys.argv[2:]]
sys.exit(ep.load()())
"""


class CheckFailed(Exception):
    """One check of one extra did not hold."""


@dataclass
class Venv:
    """A fresh venv holding one extra, and what its commands loaded."""

    extra: str
    path: Path
    work: Path
    install_s: float = 0.0
    size_mb: float = 0.0
    distributions: int = 0
    loaded: set[str] = field(default_factory=set)
    probes: int = 0

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def run(
        self,
        script: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        expect: int = 0,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        """Run a console script of this venv through the probe; check its exit code."""
        out = self._next_probe_out()
        done = subprocess.run(
            [str(self.python), "-I", str(self.work / "probe.py"), script, *args],
            cwd=self.work,
            env=self._env(env, out),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != expect:
            raise CheckFailed(
                f"{self.extra}: `{script} {' '.join(args)}` exited {done.returncode} "
                f"(expected {expect})\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )
        self._read_probe(out, f"{script} {args[0] if args else ''}")
        return done

    def start(self, script: str, *args: str, env: Mapping[str, str]) -> tuple[Any, Path]:
        out = self._next_probe_out()
        proc = subprocess.Popen(
            [str(self.python), "-I", str(self.work / "probe.py"), script, *args],
            cwd=self.work,
            env=self._env(env, out),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return proc, out

    def _next_probe_out(self) -> Path:
        self.probes += 1
        return self.work / f"probe-{self.probes}.json"

    def _env(self, extra_env: Mapping[str, str] | None, out: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LINTEL_", "PYTHON"))}
        env.update(extra_env or {})
        env["LINTEL_PROBE_OUT"] = str(out)
        return env

    def _read_probe(self, out: Path, what: str) -> None:
        if not out.exists():
            raise CheckFailed(f"{self.extra}: `{what}` left no module list")
        doc = json.loads(out.read_text())
        for package, file in doc["ours"].items():
            if file is not None and not Path(file).is_relative_to(self.path):
                raise CheckFailed(f"{self.extra}: {package} came from {file}, not the venv")
        modules = {m.split(".")[0] for m in doc["modules"]}
        bad = sorted(modules & set(NOT_IMPORTED[self.extra]))
        if bad:
            raise CheckFailed(f"{self.extra}: `{what}` imported {', '.join(bad)}")
        self.loaded |= modules


def copy_source(dest: Path) -> Path:
    """What the wheel is built from: pyproject.toml, README.md and the packages it lists.

    Not the checkout itself: setuptools keeps a build/ folder there, and a module since
    deleted or moved would still be in it and in the wheel, hiding a broken import.
    """
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for folder in sorted(ROOT.iterdir()):
        if folder.is_dir() and any(fnmatch.fnmatch(folder.name, p) for p in patterns):
            shutil.copytree(
                folder, dest / folder.name, ignore=shutil.ignore_patterns("__pycache__")
            )
    return dest


def site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


def tree_mb(folder: Path) -> float:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def make_venv(extra: str, wheel: Path, base: Path) -> Venv:
    """A venv without pip (the dev venv's pip installs into it, so site-packages holds
    only what the extra brings), with the wheel and the extra installed."""
    path = base / f"venv-{extra}"
    work = base / f"work-{extra}"
    work.mkdir()
    (work / "probe.py").write_text(PROBE)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    empty = tree_mb(site_packages(path))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(path / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            # bytecode is written on first import instead: compiling scipy and the rest
            # up front doubles the install time
            "--no-compile",
            f"{wheel}[{extra}]",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CheckFailed(f"pip install .[{extra}] failed:\n{done.stderr[-4000:]}")
    venv = Venv(extra, path, work, install_s=time.monotonic() - started)
    venv.size_mb = tree_mb(site_packages(path)) - empty
    listing = subprocess.run(
        [str(venv.python), "-I", "-c", _INSTALLED_PROBE, *NOT_INSTALLED[extra]],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(listing.stdout)
    venv.distributions = doc["distributions"]
    if doc["installed"]:
        raise CheckFailed(f".[{extra}] installed {', '.join(doc['installed'])}")
    return venv


_INSTALLED_PROBE = """\
import importlib.metadata, importlib.util, json, sys
print(json.dumps({
    "distributions": len({d.metadata["Name"].lower() for d in importlib.metadata.distributions()}),
    "installed": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None],
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Data:
    """Test data made once with the dev venv."""

    video: Path
    gallery: Path
    photos: Path
    csv_no_photos: Path
    csv_with_photo: Path


def make_data(folder: Path) -> Data:
    video = make_scenario_video(folder).path
    gallery = write_gallery(folder / "gallery", [*KNOWN, DISTRACTOR])
    photos = folder / "photos"
    photos.mkdir()
    (photos / "yao.jpg").write_bytes((gallery / "yao_ming" / "1.jpg").read_bytes())
    no_photo = f"张三,{make_id(1)},13800000001,3幢2单元1203室,业主,2024-03-01,,E1\n"
    with_photo = f"李四,{make_id(2)},13800000002,3幢2单元1204室,租户,2024-03-01,yao.jpg,E2\n"
    csv_no_photos = folder / "register-no-photos.csv"
    csv_no_photos.write_text(HEADER + no_photo, encoding="utf-8")
    csv_with_photo = folder / "register.csv"
    csv_with_photo.write_text(HEADER + no_photo + with_photo, encoding="utf-8")
    return Data(video, gallery, photos, csv_no_photos, csv_with_photo)


@dataclass
class Live:
    """The lean server, running: its address and the tokens the CLI made."""

    server: Venv
    env: dict[str, str]
    url: str
    device_token: str
    admin_token: str


@contextlib.contextmanager
def serving(server: Venv) -> Iterator[Live]:
    """Migrate, create a site, a device and an admin through the CLI, then serve."""
    env = {
        "LINTEL_DATABASE_URL": f"sqlite:///{server.work / 'lintel.sqlite3'}",
        "LINTEL_DATA_DIR": str(server.work / "data"),
        "LINTEL_SECRET_KEY": secrets.token_hex(16),
    }
    server.run("lintel-server", "db", "upgrade", env=env)
    server.run("lintel-server", "site", "add", SITE, "--json", env=env)
    device = json.loads(
        server.run(
            "lintel-server", "device", "add", "--site", SITE, "--name", "gate-1", "--json", env=env
        ).stdout
    )
    user = json.loads(
        server.run(
            "lintel-server",
            "user",
            "add",
            "office",
            "--role",
            "admin",
            "--password-stdin",
            "--json",
            env=env,
            stdin="correct horse battery staple\n",
        ).stdout
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, probe_out = server.start(
        "lintel-server", "run", "--port", str(port), "--no-access-log", env=env
    )
    try:
        deadline = time.monotonic() + 60
        last = "no answer yet"
        while True:
            if proc.poll() is not None:
                raise CheckFailed(f"server: `run` exited {proc.returncode}:\n{proc.stdout.read()}")
            try:
                status, _ = http_get(f"{url}/healthz")
                if status == 200:
                    break
                last = f"answered {status}"
            except OSError as exc:  # not listening yet
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise CheckFailed(f"server: /healthz did not answer 200 within 60 s ({last})")
            time.sleep(0.3)
        status, body = http_get(f"{url}/web/login")
        if status != 200 or b"<form" not in body:
            raise CheckFailed(f"server: /web/login answered {status}")
        yield Live(server, env, url, device["token"], user["api_token"])
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful stop; the probe writes at exit
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    server._read_probe(probe_out, "lintel-server run")
    server.run("lintel-server", "worker", "--once", env=env)


def check_server_host_import(server: Venv, data: Data, env: Mapping[str, str]) -> None:
    """``lintel-registry import --db`` of a register without photos, on the lean server's
    host: the new site carries the model id the edges' bundled pack reports, though the
    pack's wheel is not installed here."""
    server.run("lintel-registry", "import", "--site", NEW_SITE, str(data.csv_no_photos), env=env)
    sites = server.run("lintel-server", "site", "list", env=env).stdout
    models = [line.split("\t")[2] for line in sites.splitlines() if f"\t{NEW_SITE}\t" in line]
    if models != [BUNDLED_MODEL_ID]:
        raise CheckFailed(f"server: the imported site's model is {models}, not {BUNDLED_MODEL_ID}")


def server_stats(live: Live) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads(
        live.server.run("lintel-server", "stats", "--json", env=live.env).stdout
    )
    return stats


def check_registry(registry: Venv, data: Data, live: Live) -> None:
    registry.run("lintel-registry", "template", "register.xlsx")
    if not (registry.work / "register.xlsx").stat().st_size:
        raise CheckFailed("registry: the template is empty")
    refused = registry.run(
        "lintel-registry",
        "import",
        "--site",
        SITE,
        str(data.csv_no_photos),
        "--db",
        "sqlite:///x.sqlite3",
        expect=2,
    )
    if "--server URL" not in refused.stderr or "Traceback" in refused.stderr:
        raise CheckFailed(f"registry: `import --db` was not a clear refusal:\n{refused.stderr}")
    remote = ["--site", SITE, "--server", live.url, "--token", live.admin_token]
    dry = registry.run("lintel-registry", "import", str(data.csv_no_photos), *remote, "--dry-run")
    if "would create 1" not in dry.stdout:
        raise CheckFailed(f"registry: dry run said:\n{dry.stdout}")
    real = registry.run(
        "lintel-registry",
        "import",
        str(data.csv_with_photo),
        "--photos",
        str(data.photos),
        *remote,
        "--threads",
        "1",
    )
    if "created 2" not in real.stdout:
        raise CheckFailed(f"registry: the import said:\n{real.stdout}")
    # The face enrolled here reached the lean server and is served to the site's edges.
    status, body = http_get(f"{live.url}/api/v1/device/gallery", live.device_token)
    gallery = json.loads(body) if status == 200 else {}
    if len(gallery.get("templates", ())) != 1:
        raise CheckFailed(f"registry: the device's gallery after the import: {status} {body!r}")


def check_edge(edge: Venv, data: Data, live: Live | None) -> None:
    replay = edge.run(
        "lintel-edge", "replay", str(data.video), "--gallery", str(data.gallery), "--json"
    )
    tracks = json.loads(replay.stdout)["tracks"]
    names = sorted(str(t["identity"]) for t in tracks)
    if names != sorted([*KNOWN, "None", "None"]):
        raise CheckFailed(f"edge: replay found {names}")
    found = edge.run(
        "lintel-edge",
        "eval",
        "--gallery",
        str(data.gallery),
        "--probes",
        str(data.photos),
        "--json",
    )
    probes = json.loads(found.stdout)["probes"]
    if [p.get("identity") for p in probes] != ["yao_ming"]:
        raise CheckFailed(f"edge: eval matched {probes}")
    if live is not None:
        check_daemon(edge, data, live)


def check_daemon(edge: Venv, data: Data, live: Live) -> None:
    """The daemon on the video file, uploading to the lean server until a sighting lands."""
    data_dir = edge.work / "daemon"
    config = edge.work / "edge.yaml"
    # JSON is YAML: no YAML writer needed here.
    doc = {
        "device": {"name": "gate-1", "data_dir": str(data_dir), "status_interval_s": 0.5},
        "server": {"url": live.url, "upload_interval_s": 0.5, "heartbeat_s": 2},
        "model": {"threads": 1},
        "cameras": [{"name": "door", "source": str(data.video)}],
    }
    config.write_text(json.dumps(doc))
    env = {"LINTEL_DEVICE_TOKEN": live.device_token}
    edge.run("lintel-edge", "run", "--config", str(config), "--validate-config", env=env)
    before = server_stats(live)
    proc, probe_out = edge.start("lintel-edge", "run", "--config", str(config), env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise CheckFailed(f"edge: `run` exited {proc.returncode}:\n{proc.stdout.read()}")
            try:
                status = json.loads((data_dir / "status.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                status = {}
            if status.get("outbox", {}).get("delivered", 0) >= 1:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"edge: no sighting delivered within 90 s; status {status}")
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)  # the daemon's own stop: drains, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    edge._read_probe(probe_out, "lintel-edge run")
    after = server_stats(live)
    seen = sum(after[k] - before[k] for k in ("sightings_known", "sightings_unknown"))
    if seen < 1:
        raise CheckFailed(f"edge: the server recorded no sighting ({before} -> {after})")


@dataclass
class Row:
    extra: str
    venv: Venv | None
    result: str
    seconds: float


def run_checks(venvs: Mapping[str, Venv], data: Data) -> dict[str, tuple[str, float]]:
    """Each venv's checks -> (result, seconds); the registry and the daemon use the server."""
    results: dict[str, tuple[str, float]] = {}

    def attempt(extra: str, check: Callable[[], None]) -> None:
        t0 = time.monotonic()
        try:
            check()
            results[extra] = ("ok", time.monotonic() - t0)
        except (CheckFailed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
            results[extra] = (f"FAIL: {exc}", time.monotonic() - t0)

    if "server" not in venvs:
        if "edge" in venvs:
            attempt("edge", lambda: check_edge(venvs["edge"], data, None))
        if "registry" in venvs:
            results["registry"] = ("FAIL: not run (no server to import into)", 0.0)
        return results

    def server_checks() -> None:
        with serving(venvs["server"]) as live:
            if "registry" in venvs:
                attempt("registry", lambda: check_registry(venvs["registry"], data, live))
            if "edge" in venvs:
                attempt("edge", lambda: check_edge(venvs["edge"], data, live))
            check_server_host_import(live.server, data, live.env)

    attempt("server", server_checks)
    result, seconds = results["server"]
    others = sum(results[e][1] for e in ("registry", "edge") if e in results)
    results["server"] = (result, seconds - others)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lintel-extras-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        source = copy_source(base / "src")
        wheel_cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source)]
        subprocess.run([*wheel_cmd, "-w", str(base)], check=True, capture_output=True)
        (wheel,) = base.glob("lintel-*.whl")
        data_dir = base / "data"
        data_dir.mkdir()
        data = make_data(data_dir)
        # Installs mostly wait on disk and the index; three at once take about the time of
        # the largest.
        with ThreadPoolExecutor(len(EXTRAS)) as pool:
            futures = {e: pool.submit(make_venv, e, wheel, base) for e in EXTRAS}
        rows: dict[str, Row] = {}
        venvs: dict[str, Venv] = {}
        for extra, future in futures.items():
            try:
                venvs[extra] = future.result()
            except CheckFailed as exc:
                rows[extra] = Row(extra, None, f"FAIL: {exc}", 0.0)
        for extra, (result, seconds) in run_checks(venvs, data).items():
            rows[extra] = Row(extra, venvs[extra], result, seconds)
    # After the clean-up (about 1.5 GB of files), so the total is the whole wait.
    print_table([rows[e] for e in EXTRAS], time.monotonic() - started)
    return 0 if all(r.result == "ok" for r in rows.values()) else 1


def print_table(rows: Sequence[Row], total_s: float) -> None:
    lines = [
        "| extra | site-packages (MB) | distributions | install (s) | checks (s) | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    failures = []
    for r in rows:
        v = r.venv
        ok = "ok" if r.result == "ok" else "FAIL"
        if v is None:
            lines.append(f"| `.[{r.extra}]` | - | - | - | - | {ok} |")
        else:
            lines.append(
                f"| `.[{r.extra}]` | {v.size_mb:.0f} | {v.distributions} | {v.install_s:.0f} "
                f"| {r.seconds:.0f} | {ok} |"
            )
        if r.result != "ok":
            failures.append(f"{r.extra}: {r.result}")
    sys.stdout.write("\n".join([*lines, f"total {total_s:.0f} s", *failures]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
