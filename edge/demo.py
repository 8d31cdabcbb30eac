"""``lintel-edge demo``: a self-contained run of the edge pipeline, in seconds.

Builds a gallery of two "occupants" (plus a distractor) from photos that the
installed packages ship, synthesises an entrance video in which the occupants
and two strangers walk in (two of them side by side), replays it through the
pipeline and prints each walk-in next to what the pipeline made of it.
Exit code 0 when every walk-in got exactly one track with the right answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from edge.pipeline import Pipeline, TrackResult
from edge.videogen import GeneratedVideo, WalkIn, make_video, write_gallery

OCCUPANTS = ("t1_p3", "yao_ming")
DISTRACTOR = "t1_p6"  # enrolled, never walks in
STRANGERS = ("t1_p1", "t1_p4")


def demo_walkins(fps: float) -> list[WalkIn]:
    """Occupant, stranger, then an occupant and a stranger side by side."""
    walk, gap = round(1.8 * fps), round(1.2 * fps)
    t = round(1.0 * fps)
    left = ((0.25, 0.35), (0.3, 0.5))
    right = ((0.75, 0.35), (0.7, 0.5))
    out = [WalkIn(OCCUPANTS[0], t, t + walk - 1, *left)]
    t += walk + gap
    out.append(WalkIn(STRANGERS[0], t, t + walk - 1, *right))
    t += walk + gap
    out.append(WalkIn(OCCUPANTS[1], t, t + walk - 1, *left, mirror=False))
    out.append(WalkIn(STRANGERS[1], t, t + walk - 1, *right, mirror=False))
    return out


def assign(
    video: GeneratedVideo, results: Sequence[TrackResult]
) -> list[tuple[WalkIn, list[TrackResult]]]:
    """For each walk-in, the tracks that overlap it in time and sit on its side."""
    out = []
    for wi in video.walkins:
        mine = []
        for r in results:
            if r.start_frame > wi.end_frame or wi.start_frame > r.end_frame:
                continue
            cx = (r.bbox.x1 + r.bbox.x2) / 2 / video.width
            if abs(cx - wi.to_xy[0]) < 0.25:
                mine.append(r)
        out.append((wi, mine))
    return out


def cli_demo(args: argparse.Namespace) -> int:
    """Build the sample gallery and video in ``--workdir``, replay, print a summary."""
    from edge.config import ModelConfig
    from edge.engine import FaceEngine
    from edge.gallery import Gallery

    out = sys.stdout
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    gallery_dir = write_gallery(workdir / "gallery", [*OCCUPANTS, DISTRACTOR])
    video = make_video(workdir / "entrance.mp4", demo_walkins(25.0), fps=25.0)
    out.write(
        f"gallery: {gallery_dir} ({len(OCCUPANTS) + 1} people)\n"
        f"video:   {video.path} ({video.frames} frames, {video.frames / video.fps:.1f} s, "
        f"{len(video.walkins)} walk-ins)\n"
    )
    config: dict[str, object] = {"pack": args.model}
    if args.threads:
        config["threads"] = args.threads
    t0 = time.perf_counter()
    engine = FaceEngine.load(ModelConfig.model_validate(config))
    gallery = Gallery.from_folder(gallery_dir, engine)
    pipeline = Pipeline(engine, gallery)
    results = list(pipeline.run(video.path))
    stats = pipeline.stats

    ok = 0
    out.write("\nwalk-in (truth)            frames     -> pipeline\n")
    for wi, tracks in assign(video, results):
        truth = wi.identity if wi.identity in OCCUPANTS else f"stranger ({wi.identity})"
        if len(tracks) != 1:
            verdict = f"{len(tracks)} tracks  WRONG"
        else:
            r = tracks[0]
            said = r.identity or "unknown"
            right = r.identity == (wi.identity if wi.identity in OCCUPANTS else None)
            ok += right
            verdict = (
                f"{said:<10} similarity {r.similarity:.2f}  quality {r.quality:.2f}  "
                f"{'ok' if right else 'WRONG'}"
            )
        out.write(f"{truth:<26} {wi.start_frame:>4}-{wi.end_frame:<4}  -> {verdict}\n")
    extra = len(results) - sum(len(t) for _, t in assign(video, results))
    out.write(
        f"\n{ok}/{len(video.walkins)} walk-ins right, {len(results)} tracks"
        f"{f' ({extra} spurious)' if extra else ''}; "
        f"{stats.frames_analysed}/{stats.frames_read} frames analysed, "
        f"{stats.detector_calls} detector calls, {stats.faces_embedded} faces embedded; "
        f"{stats.cpu_s:.2f} CPU s for {stats.video_s:.1f} s of video "
        f"(total {time.perf_counter() - t0:.1f} s with model loading)\n"
    )
    return 0 if ok == len(video.walkins) and extra == 0 else 1
