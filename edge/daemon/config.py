"""The edge daemon's config file (``lintel-edge run --config edge.yaml``).

A tree of pydantic models: unknown keys are refused, every threshold is
bounded and described, and :func:`load_config` turns a validation error into a
message that names the file, the key path and the line of the bad value.
Secrets (the device token) come from the environment, never the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from edge.adaptive import AdaptConfig
from edge.face.errors import LintelEdgeError
from edge.face.models import ModelConfig
from edge.pipeline.capture import ReconnectPolicy
from edge.pipeline.config import PipelineConfig
from edge.wire import check_roi


class ConfigError(LintelEdgeError):
    """The config file is missing, not YAML, or invalid (names file, key and line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Strict):
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="This box's name; part of every sighting id, so keep it stable.",
    )
    data_dir: Path = Field(
        default=Path("var/edge"),
        description="Where the outbox, the cached gallery and status.json live "
        "(must survive reboots).",
    )
    status_interval_s: float = Field(
        default=5.0,
        ge=0.2,
        le=300,
        description="How often <data_dir>/status.json (per-camera state, fps, drops, "
        "outbox counters) is rewritten; also the camera watchdog's tick.",
    )


class ServerConfig(_Strict):
    url: str = Field(description="Base URL of the Lintel server, e.g. https://lintel.example.org")
    token_env: str = Field(
        default="LINTEL_DEVICE_TOKEN",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the device token (never put it in the file).",
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the device token, read when the environment variable is "
        "unset; `lintel-edge enrol` writes it (mode 0600). Default: <data_dir>/device.token.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="HTTP timeout per request.")
    batch_size: int = Field(default=50, ge=1, le=500, description="Sightings per upload request.")
    upload_interval_s: float = Field(
        default=2.0, gt=0, le=600, description="Pause between outbox drains when it is empty."
    )
    retry_max_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Cap on the doubling wait after failed uploads (server unreachable); "
        "the wait between uploads while the token is refused, unless a new one arrives.",
    )
    gallery_sync_s: float = Field(
        default=60.0, ge=5, le=86400, description="How often to ask for a new gallery (ETag)."
    )
    heartbeat_s: float = Field(default=30.0, ge=1, le=3600, description="Heartbeat period.")
    drain_on_stop_s: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="On SIGTERM, how long to keep uploading what is queued before exiting "
        "(the rest stays in the outbox for the next start). Keep it below systemd's "
        "TimeoutStopSec minus the camera shutdown.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class CameraConfig(_Strict):
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Camera name as the server knows it (bound to an entrance there).",
    )
    source: str = Field(
        min_length=1,
        description="rtsp://…/http:// URL, a USB camera index ('0'), or a video file path. "
        "${NAME} is replaced by the environment variable NAME (keep camera passwords "
        "out of the file: rtsp://admin:${CAM_PASSWORD}@192.0.2.10/stream1).",
    )
    reconnect: ReconnectPolicy = Field(
        default_factory=lambda: ReconnectPolicy(max_attempts=None),
        description="Backoff for a stream that fails; the daemon retries forever by default.",
    )
    stall_timeout_s: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="A stream open but delivering no frame for this long is reopened.",
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Give up opening a stream after this long."
    )
    queue_size: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Frames buffered between the camera reader and the analysis; when "
        "full the oldest is dropped and counted (a fresh frame beats a backlog).",
    )
    pipeline: PipelineConfig | None = Field(
        default=None, description="Per-camera override of the top-level pipeline settings."
    )
    enabled: bool = Field(
        default=True,
        description="False: the camera is not opened. Set here, it pins the camera off or "
        "on whatever the web says; left out, the web's on/off applies.",
    )
    roi: tuple[float, float, float, float] | None = Field(
        default=None,
        description="Region of interest [x1, y1, x2, y2], fractions 0..1 of the frame: only "
        "faces in it are analysed. Set here, it pins the region; left out, the one drawn in "
        "the web applies.",
    )
    loop: bool = Field(
        default=False,
        description="Video files only: play the file again when it ends (demos, soak "
        "tests). Without it a file camera ends, and when every camera has ended the "
        "daemon forwards what is queued and exits.",
    )
    start_at: AwareDatetime | None = Field(
        default=None,
        description="Video files only: the wall-clock time of the file's first frame "
        "(e.g. 2026-11-20T18:00:00+08:00). Sighting times and ids derive from it, so "
        "processing the same recording twice sends nothing twice. Default: the time "
        "the file is opened.",
    )

    @field_validator("source")
    @classmethod
    def _expand_env(cls, v: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]

        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, v)

    @field_validator("roi")
    @classmethod
    def _check_roi(
        cls, v: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        return check_roi(v)


class OutboxConfig(_Strict):
    max_mb: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="Disk cap for undelivered sightings; when full the oldest are dropped "
        "(and counted). An unknown sighting is ~10 KiB (160 px crop + embedding), a known "
        "one ~0.5 KiB, so 512 MiB holds ~50,000 unknowns.",
    )


class EdgeConfig(_Strict):
    """The whole ``edge.yaml``."""

    device: DeviceConfig = Field(description="This box: its name and its state directory.")
    server: ServerConfig | None = Field(
        default=None,
        description="Omit to run offline: sightings are kept in the outbox (bounded) and "
        "sent once a server is configured.",
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Face models (bundled buffalo_s by default)."
    )
    pipeline: PipelineConfig = Field(
        default_factory=PipelineConfig, description="Analysis settings of every camera."
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="Store-and-forward queue on disk."
    )
    adapt: AdaptConfig = Field(
        default_factory=AdaptConfig,
        description="Adaptive templates: occupants' own high-confidence captures kept as "
        "extra local templates (never uploaded; see edge.adaptive).",
    )
    cameras: list[CameraConfig] = Field(
        min_length=1,
        max_length=64,
        description="Entrance cameras; each runs in its own worker with its own reader.",
    )

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cams: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique: {', '.join(dupes)}")
        return cams

    def token_path(self) -> Path:
        """Where the token file is (``server.token_file`` or ``<data_dir>/device.token``)."""
        assert self.server is not None
        return self.server.token_file or self.device.data_dir / "device.token"

    def token(self) -> str:
        """The device token from the environment, else the token file; a clear error when
        neither holds one."""
        assert self.server is not None
        value = os.environ.get(self.server.token_env, "").strip()
        if value:
            return value
        path = self.token_path()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            value = ""
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc}") from exc
        if not value:
            raise ConfigError(
                f"the device token is not set: export {self.server.token_env}=… or run "
                f"`lintel-edge enrol --config FILE --code XXXX-XXXX` (writes {path}); "
                "a device and its code are added in the web (Devices) or with "
                "`lintel-server device add`"
            )
        return value


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key's value."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            # PyYAML keeps the last of two equal keys silently; a config typo
            # like two `source:` lines must not pick one at random.
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    mapping = loader.construct_mapping(node, deep=True)
    # The key's line, not the value's: for a nested mapping the value starts
    # on the next line, and "the bad line" is where the key is written.
    lines = {loader.construct_object(k): k.start_mark.line + 1 for k, _v in node.value}
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _strip_lines(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_lines(v) for k, v in data.items() if k != "__lines__"}
    if isinstance(data, list):
        return [_strip_lines(v) for v in data]
    return data


def _line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    line = None
    for part in loc:
        if isinstance(data, dict):
            line = data.get("__lines__", {}).get(part, line)
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            item_lines = data.get("__lines__") if isinstance(data, dict) else None
            if item_lines:
                line = min(item_lines.values())  # the list item's first line
        else:
            break
    return line


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a config file; raises :class:`ConfigError` naming the bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        raw = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (device:, cameras:, …)")
    try:
        return EdgeConfig.model_validate(_strip_lines(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(raw, loc)
            where = f"{path}:{line}" if line else str(path)
            problems.append(f"{where}: {key}: {err['msg']}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from exc
