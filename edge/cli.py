"""``lintel-edge``: the edge box's command line.

Thin dispatcher: each sub-command's work lives in its own module, imported
when the sub-command runs, so ``lintel-edge --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.face.errors import LintelEdgeError

DEMO_MOVED = (
    "lintel-edge: the demo is no longer part of the edge: run `lintel-demo` "
    "(same options) or `make demo`"
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="buffalo_s",
        help="model pack: 'buffalo_s' (bundled; non-commercial), 'sface' (commercially "
        "safe) or a path to an insightface pack directory; see `lintel-edge models`",
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")


def _add_strict_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop with an error if any gallery photo fails to enrol (default: report the "
        "refused photos as failed_to_enrol and go on with the others)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lintel-edge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="run the pipeline over a video file and print the tracks")
    p.add_argument("video", help="video file, RTSP URL or USB camera index")
    p.add_argument("--gallery", type=Path, help="folder of <identity>/<photos>")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threshold", type=float, default=None, help="match threshold (cosine)")
    p.add_argument("--server", help="upload the results to this Lintel server URL")
    p.add_argument("--token", help="device token for --server (or LINTEL_DEVICE_TOKEN)")
    p.add_argument("--camera", default="replay", help="camera name reported to the server")
    p.add_argument(
        "--adapt",
        action="store_true",
        help="adaptive templates in memory, as the daemon keeps them (edge.adaptive)",
    )
    _add_strict_arg(p)
    _add_model_args(p)

    p = sub.add_parser("eval", help="match probe photos against a gallery")
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--probes", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--threshold", type=float, default=None)
    _add_strict_arg(p)
    _add_model_args(p)

    p = sub.add_parser("models", help="list the model packs, their licences and files")
    p.add_argument("--json", action="store_true", help="print one JSON array")

    p = sub.add_parser(
        "calibrate",
        help="set a site's match threshold from its own labelled photos",
        description="Match labelled probe photos (probes/<identity>/...) against a gallery "
        "(gallery/<identity>/...); identities absent from the gallery are strangers. Prints "
        "the lowest threshold whose FPIR on the strangers is at most --target-fpir, and the "
        "FNIR it costs; --out also writes it as JSON.",
    )
    p.add_argument("--gallery", type=Path, required=True, help="folder of <identity>/<photos>")
    p.add_argument("--probes", type=Path, required=True, help="folder of <identity>/<photos>")
    p.add_argument(
        "--target-fpir", type=float, default=0.01, help="false-positive identification rate"
    )
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    _add_strict_arg(p)
    _add_model_args(p)

    p = sub.add_parser("run", help="run the edge daemon (cameras -> outbox -> server)")
    p.add_argument("--config", type=Path, required=True, help="edge.yaml (see deploy/)")
    p.add_argument(
        "--validate-config",
        action="store_true",
        help="check the config file, print the problems (file:line: key: why) and exit",
    )

    p = sub.add_parser(
        "enrol",
        help="fetch this box's device token with a one-time code from the web (Devices)",
    )
    p.add_argument("--config", type=Path, required=True, help="edge.yaml (server: url)")
    p.add_argument("--code", required=True, help="the one-time code, e.g. K7QM-3XRT")
    p.add_argument("--server", help="server URL (default: the config's server.url)")

    # The demo left the edge package (it starts the server: top floor, see
    # docs/architecture.md). The old command stays only to say where it went; any
    # options are accepted (main) so the pointer, not an argparse error, is what is seen.
    sub.add_parser("demo", help="moved: run `lintel-demo` (or `make demo`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Each sub-command's module is imported when it runs: importing them all (cv2,
    # numpy, pydantic, the pipeline) takes ~1.1 s on a 2-core box where `--help`
    # takes ~0.1 s without them. tests/test_architecture.py allows exactly these.
    try:
        if args.command == "replay":
            from edge.replay import cli_replay

            return cli_replay(args)
        if args.command == "eval":
            from edge.evaluate import cli_eval

            return cli_eval(args)
        if args.command == "models":
            from edge.face.models import cli_models

            return cli_models(args)
        if args.command == "calibrate":
            from edge.calibrate import cli_calibrate

            return cli_calibrate(args)
        if args.command == "run":
            from edge.daemon.run import cli_run

            return cli_run(args)
        if args.command == "enrol":
            from edge.enrol import cli_enrol

            return cli_enrol(args)
        if args.command == "demo":
            print(DEMO_MOVED, file=sys.stderr)  # noqa: T201
            return 2
    except LintelEdgeError as exc:
        print(f"lintel-edge: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
