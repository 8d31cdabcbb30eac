"""``lintel-edge``: the edge box's command line.

Thin dispatcher: each sub-command's work lives in its own module, imported
lazily so ``lintel-edge --help`` does not load ONNX Runtime.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


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

    p = sub.add_parser(
        "demo", help="seed a sample site, run server + edge on generated video, serve the queue"
    )
    p.add_argument("--workdir", type=Path, default=Path("var/demo"))
    p.add_argument("--port", type=int, default=8000, help="server port (another if busy)")
    p.add_argument(
        "--no-serve", action="store_true", help="exit after seeding and checking the cases"
    )
    p.add_argument(
        "--serve", action="store_true", help="keep serving even when stdin is not a terminal"
    )
    p.add_argument(
        "--offline", action="store_true", help="replay only: sample gallery + video, no server"
    )
    _add_model_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from edge.errors import LintelEdgeError

    try:
        if args.command == "replay":
            from edge.replay import cli_replay

            return cli_replay(args)
        if args.command == "eval":
            from edge.evaluate import cli_eval

            return cli_eval(args)
        if args.command == "models":
            from edge.models import cli_models

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
            from edge.demo import cli_demo

            return cli_demo(args)
    except LintelEdgeError as exc:
        print(f"lintel-edge: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
