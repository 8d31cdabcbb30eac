"""The daemon's YAML config: errors name file:line and key; secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main
from edge.daemon.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
device:
  name: gate-1
  data_dir: {data}
server:
  url: http://127.0.0.1:8000/
  token_env: LINTEL_TEST_TOKEN
pipeline:
  analyse_fps: 4
cameras:
  - name: door
    source: rtsp://cam.example/stream1
  - name: garage
    source: "0"
    stall_timeout_s: 5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text.replace("{data}", str(tmp_path / "data")))
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.server is not None and config.server.url == "http://127.0.0.1:8000"
    assert [c.name for c in config.cameras] == ["door", "garage"]
    assert config.pipeline.analyse_fps == 4
    assert config.cameras[1].stall_timeout_s == 5
    assert config.cameras[0].reconnect.max_attempts is None  # a daemon never gives up
    assert config.outbox.max_mb == 512


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    text = GOOD.replace("    stall_timeout_s: 5\n", "    stall_timeout_s: 5\n    fsp: 10\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:15: cameras.1.fsp: Extra inputs are not permitted" in str(err.value)


def test_out_of_bounds_threshold_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("analyse_fps: 4", "analyse_fps: 0"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:8: pipeline.analyse_fps: Input should be greater than 0" in str(err.value)


def test_missing_required_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    source: rtsp://cam.example/stream1\n", ""))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:10: cameras.0.source: Field required" in str(err.value)


def test_duplicate_key_and_broken_yaml_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  name: gate-1\n", "  name: gate-1\n  name: gate-2\n"))
    with pytest.raises(ConfigError, match=rf"{path}:3: .*duplicate key 'name' \(first on line 2\)"):
        load_config(path)
    path = write(tmp_path, GOOD.replace("cameras:\n", "cameras: [\n"))
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_config(path)


def test_duplicate_camera_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("name: garage", "name: door"))
    with pytest.raises(ConfigError, match="camera names must be unique: door"):
        load_config(path)


def test_source_takes_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = GOOD.replace("rtsp://cam.example", "rtsp://admin:${CAM_PW}@cam.example")
    path = write(tmp_path, text)
    monkeypatch.delenv("CAM_PW", raising=False)
    with pytest.raises(ConfigError, match=rf"{path}:11: cameras.0.source: .*CAM_PW is not set"):
        load_config(path)
    monkeypatch.setenv("CAM_PW", "s3cret")
    assert load_config(path).cameras[0].source == "rtsp://admin:s3cret@cam.example/stream1"


def test_token_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, GOOD))
    monkeypatch.delenv("LINTEL_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="export LINTEL_TEST_TOKEN="):
        config.token()
    monkeypatch.setenv("LINTEL_TEST_TOKEN", " tok-123 \n")
    assert config.token() == "tok-123"


def test_validate_config_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, GOOD)
    monkeypatch.setenv("LINTEL_TEST_TOKEN", "tok")
    assert main(["run", "--config", str(good), "--validate-config"]) == 0
    assert f"{good}: OK (2 camera(s), server http://127.0.0.1:8000)" in capsys.readouterr().out

    monkeypatch.delenv("LINTEL_TEST_TOKEN")
    assert main(["run", "--config", str(good), "--validate-config"]) == 2
    assert "the device token is not set: export LINTEL_TEST_TOKEN" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("{data}", str(tmp_path)).replace("analyse_fps", "analyse_fsp"))
    assert main(["run", "--config", str(bad), "--validate-config"]) == 2
    assert f"{bad}:8: pipeline.analyse_fsp: Extra inputs" in capsys.readouterr().err

    assert main(["run", "--config", str(tmp_path / "nope.yaml"), "--validate-config"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["edge.example.yaml", "edge.compose.yaml"])
def test_shipped_example_configs_are_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINTEL_DEVICE_TOKEN", "tok")
    monkeypatch.setenv("CAM1_PASSWORD", "pw")
    monkeypatch.setenv("LINTEL_CAMERA_URL", "rtsp://192.0.2.20/stream1")
    config = load_config(REPO / "deploy" / name)
    assert config.cameras
