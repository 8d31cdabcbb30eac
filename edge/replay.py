"""``lintel-edge replay``: run the stream pipeline over a video and print the tracks.

``--json`` prints one object::

    {"frames": int, "failed_to_enrol": [{"path", "reason", "detail"}],
     "fps": float, "cpu_s": float,
     "tracks": [{"start_frame", "end_frame", "identity", "similarity", "quality"}],
     (a long stay is several consecutive tracks: see edge.pipeline.tracker, max_track_s)
     "stats": {...pipeline counters...}}

``identity`` is the gallery folder name, or null for an unknown face.
``--adapt`` matches as the daemon does: high-confidence known tracks become
adaptive templates (:mod:`edge.adaptive`, in memory only) for later tracks.
``--server URL --token T`` uploads the tracks as sightings through
:class:`edge.client.LintelClient` (unknowns with embedding and crop, knowns with
the occupant id only: their faces never leave the box).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from edge.adaptive import AdaptiveGallery
from edge.client import LintelClient
from edge.face.engine import FaceEngine
from edge.face.errors import LintelEdgeError
from edge.face.models import ModelConfig
from edge.gallery import EnrolmentFailure, Gallery, failed_to_enrol_line
from edge.pipeline.capture import VideoSource
from edge.pipeline.results import PipelineStats, TrackResult
from edge.pipeline.sightings import track_to_sighting
from edge.pipeline.stream import Pipeline
from edge.wire import MAX_BATCH

log = logging.getLogger(__name__)


def track_json(result: TrackResult) -> dict[str, Any]:
    """The ``--json`` view of one track."""
    return {
        "start_frame": result.start_frame,
        "end_frame": result.end_frame,
        "identity": result.identity,
        "similarity": round(result.similarity, 4),
        "quality": round(result.quality, 4),
    }


def replay_json(
    results: Sequence[TrackResult],
    stats: PipelineStats,
    failed_to_enrol: Sequence[EnrolmentFailure] = (),
) -> dict[str, Any]:
    """The whole ``--json`` document."""
    return {
        "frames": stats.frames_read,
        "failed_to_enrol": [f.as_json() for f in failed_to_enrol],
        "fps": round(stats.fps, 3),
        "cpu_s": round(stats.cpu_s, 3),
        "tracks": [track_json(r) for r in results],
        "stats": {
            "frames_analysed": stats.frames_analysed,
            "sample_every": stats.sample_every,
            "burst_every": stats.burst_every,
            "burst_frames": stats.burst_frames,
            "motion_frames": stats.motion_frames,
            "detector_calls": stats.detector_calls,
            "roi_searches": stats.roi_searches,
            "faces_embedded": stats.faces_embedded,
            "tracks_too_short": stats.tracks_too_short,
            "tracks_without_usable_face": stats.tracks_without_usable_face,
            "dropped_frames": stats.dropped_frames,
            "wall_s": round(stats.wall_s, 3),
        },
    }


def cli_replay(args: argparse.Namespace) -> int:
    """``lintel-edge replay VIDEO [--gallery DIR] [--json] [--server URL --token T]``."""
    token = args.token or os.environ.get("LINTEL_DEVICE_TOKEN")
    upload_token: str | None = None
    if args.server:
        if not token:
            raise LintelEdgeError("--server needs --token (or LINTEL_DEVICE_TOKEN)")
        upload_token = token

    # Open the video before loading models: a bad path fails in milliseconds.
    source = VideoSource(args.video).open()
    config_kwargs: dict[str, Any] = {"pack": args.model}
    if args.threads:
        config_kwargs["threads"] = args.threads
    if args.threshold is not None:
        config_kwargs["match_threshold"] = args.threshold
    engine = FaceEngine.load(ModelConfig(**config_kwargs))
    gallery = None
    if args.gallery is not None:
        # A refused gallery photo is reported (failed_to_enrol) and the rest replayed;
        # --strict stops at it instead.
        gallery = Gallery.from_folder(
            args.gallery, engine, skip_unusable=not getattr(args, "strict", False)
        )
    failed = gallery.failed_to_enrol if gallery is not None else ()
    adaptive = None
    if gallery is not None and getattr(args, "adapt", False):
        adaptive = AdaptiveGallery(model_id=engine.model_id)
        adaptive.set_base(gallery)
    pipeline = Pipeline(engine, adaptive if adaptive is not None else gallery)
    origin = datetime.now(UTC)
    results = []
    for r in pipeline.run(source):
        results.append(r)
        if adaptive is not None:  # what this track taught is used by the next ones
            adaptive.observe(r.identity, r.embedding, quality=r.quality)
    stats = pipeline.stats

    if upload_token is not None:
        sightings = [
            track_to_sighting(
                r, device=args.camera, source=str(args.video), camera=args.camera, origin=origin
            )
            for r in results
        ]
        with LintelClient(args.server, upload_token, model_id=engine.model_id) as client:
            for start in range(0, len(sightings), MAX_BATCH):
                res = client.upload_sightings(sightings[start : start + MAX_BATCH])
                log.info("uploaded: %d created, %d duplicates", res.created, res.duplicates)

    if args.json:
        sys.stdout.write(json.dumps(replay_json(results, stats, failed)) + "\n")
        return 0
    out = sys.stdout
    out.write(
        f"{args.video}: {stats.frames_read} frames at {stats.fps:.2f} fps, "
        f"{stats.frames_analysed} analysed, {stats.detector_calls} detector calls, "
        f"{stats.cpu_s:.2f} CPU s\n"
    )
    if line := failed_to_enrol_line(failed):
        out.write(f"  {line}\n")
    for r in results:
        who = r.identity or f"unknown (closest {r.best_candidate})"
        out.write(
            f"  frames {r.start_frame:>6}-{r.end_frame:<6} {who:<32} "
            f"similarity {r.similarity:.3f}  quality {r.quality:.2f}\n"
        )
    if not results:
        out.write("  no face tracks\n")
    return 0
