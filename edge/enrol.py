"""``lintel-edge enrol``: fetch this box's token with a one-time code from the web.

The manager adds the device in the web (Devices), which shows a code such as
``K7QM-3XRT`` for 15 minutes. On the box::

    lintel-edge enrol --config /etc/lintel/edge.yaml --code K7QM-3XRT

trades it for the device's token and writes the token to the config's token
file (``server.token_file``, default ``<data_dir>/device.token``), mode 0600;
``lintel-edge run`` reads it from there. The token never appears in edge.yaml,
on the command line of ``run``, or on screen.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge.client import enrol
from edge.daemon.config import ConfigError, load_config


def write_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # Created 0600 from the start: never a moment when others may read it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # an existing tmp kept its old mode
    os.replace(tmp, path)


def cli_enrol(args: argparse.Namespace) -> int:
    """``lintel-edge enrol --config FILE --code XXXX-XXXX [--server URL]``."""
    config = load_config(args.config)
    if config.server is None:
        raise ConfigError(f"{args.config}: add a server: section (url: ...) to enrol this box")
    url = args.server or config.server.url
    result = enrol(url, args.code, timeout=config.server.timeout_s)
    path = config.token_path()
    write_token(path, result.token)
    sys.stdout.write(
        f"enrolled as device {result.device!r} (#{result.device_id}, site #{result.site_id}); "
        f"token written to {path}\n"
    )
    if result.device != config.device.name:
        sys.stdout.write(
            f"note: the server calls this box {result.device!r}, edge.yaml {config.device.name!r}; "
            "sighting ids use the edge.yaml name, so keep it stable\n"
        )
    return 0
