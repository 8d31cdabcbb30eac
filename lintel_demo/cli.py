"""``lintel-demo``: the whole system on one machine (see :mod:`lintel_demo.demo`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.face.errors import LintelEdgeError
from lintel_demo.demo import cli_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lintel-demo",
        description="Seed a sample site, run server + edge on generated video, serve the queue.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--workdir", type=Path, default=Path("var/demo"))
    parser.add_argument("--port", type=int, default=8000, help="server port (another if busy)")
    parser.add_argument(
        "--no-serve", action="store_true", help="exit after seeding and checking the cases"
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep serving even when stdin is not a terminal"
    )
    parser.add_argument(
        "--offline", action="store_true", help="replay only: sample gallery + video, no server"
    )
    parser.add_argument(
        "--model",
        default="buffalo_s",
        help="model pack: 'buffalo_s' (bundled; non-commercial), 'sface' (commercially "
        "safe) or a path to an insightface pack directory; see `lintel-edge models`",
    )
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return cli_demo(args)
    except LintelEdgeError as exc:
        print(f"lintel-demo: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(main())
