"""Edge throughput: our stream pipeline vs. a naive per-frame baseline, same video, one run.

    .venv/bin/python bench/edge_throughput.py [VIDEO ...] [--gallery DIR] [--json OUT]
        [--idle-1080p] [--repeat N] [--baseline-cache DIR] [--analyse-fps F] [--det-size S]

Defaults: every ``../shared/eval/video/*.mp4`` (relative to the repository
root) and a gallery built from ``../shared/eval/faces/Lin-Manuel_Miranda`` (the
enrolment photo for the hamilton clip). ``--gallery`` takes a folder of
``<identity>/<photos>`` or a single identity's photo folder.

For each video it measures, as CPU seconds per second of video (i.e. the
fraction of one core a live stream would use), with ``time.process_time``:

* decode: grab + retrieve every frame (what any analysis pays at least);
  grab: grab only (what our sampling pays for frames it does not analyse);
* ours: :class:`edge.pipeline.stream.Pipeline` with its defaults (burst sampling,
  motion gate, detector on crops or the frame, quality gate, tracker, at most
  two embedding batches per track);
* baseline: insightface ``FaceAnalysis``-like: decode every frame, detect at
  640, align and embed EVERY face on EVERY frame, match each face. Built from
  the same model_zoo models through :class:`edge.face.engine.FaceEngine`.

The machine may be shared: ``--repeat N`` runs both N times and the table
shows the median (best in brackets). ``--baseline-cache DIR`` keeps the
baseline's runs between invocations (it does not depend on our settings).

Walk-ins: the baseline's per-frame detections are clustered with the same
IoU tracker (expiry is in seconds, so the same settings apply). A "walk-in" is
a baseline cluster that lasts >= 0.5 s and holds at least one face that passes
the quality gate (quality and clustering are bookkeeping: their CPU is not
charged to the baseline). A walk-in is "found" when one of our tracks
has a box overlapping the cluster's box (IoU >= 0.3) in a same frame;
"agree" counts found walk-ins whose identity (gallery name or unknown)
is the same in both (the baseline's identity is the majority vote of its
per-frame matches). Every lost walk-in is listed with its frames and the
frames in which its face was usable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from edge.face.boxes import iou  # noqa: E402
from edge.face.engine import FaceEngine  # noqa: E402
from edge.face.types import BBox  # noqa: E402
from edge.gallery import Gallery, image_files  # noqa: E402
from edge.pipeline.capture import VideoSource  # noqa: E402
from edge.pipeline.config import PipelineConfig  # noqa: E402
from edge.pipeline.results import TrackResult  # noqa: E402
from edge.pipeline.stream import Pipeline  # noqa: E402
from edge.pipeline.tracker import IoUTracker, Track  # noqa: E402
from lintel_demo.videogen import background  # noqa: E402

DEFAULT_EVAL = REPO.parent / "shared" / "eval"
MIN_WALKIN_S = 0.5


@dataclass
class Walkin:
    """A baseline cluster: its boxes, votes and whether it ever had a usable face."""

    track: Track
    votes: Counter[str | None] = field(default_factory=Counter)
    usable_frames: list[int] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return bool(self.usable_frames)

    @property
    def identity(self) -> str | None:
        return self.votes.most_common(1)[0][0] if self.votes else None


@dataclass
class Row:
    video: str
    resolution: str
    fps: float
    video_s: float
    decode_core: float
    grab_core: float
    ours_core: float
    """Median over --repeat runs (CPU s per video s)."""
    base_core: float
    """Median over --repeat runs (or the cached runs)."""
    ours_best: float
    base_best: float
    ours_burst: int
    ours_roi_calls: int
    ours_det_mpix: float
    ours_analysed: int
    base_analysed: int
    ours_detector_calls: int
    ours_faces_embedded: int
    base_faces_embedded: int
    ours_tracks: int
    base_clusters: int
    walkins: int
    found: int
    agree: int
    ours_identities: dict[str, int]
    base_identities: dict[str, int]
    lost: list[str]

    @property
    def ratio(self) -> float:
        """Median ours / median baseline."""
        return self.ours_core / self.base_core if self.base_core else float("nan")

    @property
    def ratio_best(self) -> float:
        """Best (lowest) ours / best baseline."""
        return self.ours_best / self.base_best if self.base_best else float("nan")


def decode_cost(path: Path) -> tuple[float, float, int, float, str]:
    """(decode CPU s, grab-only CPU s, frames, fps, WxH) of a whole file."""
    with VideoSource(path) as src:
        t0 = time.process_time()
        n = sum(1 for _ in src.frames())
        decode = time.process_time() - t0
        fps, res = src.fps, f"{src.width}x{src.height}"
    with VideoSource(path) as src:
        t0 = time.process_time()
        list(src.frames(sample_every=10**9))  # retrieves frame 0 only
        grab = time.process_time() - t0
    return decode, grab, n, fps, res


class RecordingPipeline(Pipeline):
    """Our pipeline, also keeping each reported track's boxes (for the comparison only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.boxes: dict[int, dict[int, BBox]] = {}

    def _finish(self, track: Track) -> TrackResult | None:
        result = super()._finish(track)
        if result is not None:
            self.boxes[result.track_id] = dict(track.boxes)
        return result


def run_ours(
    engine: FaceEngine, gallery: Gallery, path: Path, config: PipelineConfig
) -> tuple[list[TrackResult], RecordingPipeline]:
    pipe = RecordingPipeline(engine, gallery, config)
    return list(pipe.run(path)), pipe


def run_baseline(
    engine: FaceEngine, gallery: Gallery, path: Path, config: PipelineConfig
) -> tuple[float, int, int, list[Walkin]]:
    """(charged CPU s, frames, faces embedded, clusters) of the naive per-frame loop."""
    src = VideoSource(path).open()
    # Same tracker settings: expiry is in seconds, so the frame rate does not matter.
    tracker = IoUTracker(config.tracker)
    clusters: dict[int, Walkin] = {}
    done: list[Walkin] = []
    bookkeeping = 0.0
    frames = embedded = 0
    t0 = time.process_time()
    for frame in src.frames():
        frames += 1
        dets = engine.detect(frame.image, det_size=640)
        aligned = [engine.align(frame.image, d) for d in dets]
        names: list[str | None] = []
        if aligned:
            emb = engine.embed_aligned(aligned)
            embedded += len(aligned)
            names = [m.identity for m in gallery.match(emb)]
        b0 = time.process_time()
        tracks, ended = tracker.update(
            [d.bbox for d in dets], frame_index=frame.index, timestamp=frame.timestamp
        )
        for det, crop, name, track in zip(dets, aligned, names, tracks, strict=True):
            c = clusters.setdefault(track.track_id, Walkin(track))
            c.votes[name] += 1
            if engine.quality(frame.image, det, aligned=crop).usable:
                c.usable_frames.append(frame.index)
        done.extend(clusters.pop(t.track_id) for t in ended if t.track_id in clusters)
        bookkeeping += time.process_time() - b0
    cpu = time.process_time() - t0 - bookkeeping
    for t in tracker.flush():
        if t.track_id in clusters:
            done.append(clusters.pop(t.track_id))
    return cpu, frames, embedded, done


def cached_baseline(
    cache: Path | None,
    engine: FaceEngine,
    gallery: Gallery,
    path: Path,
    config: PipelineConfig,
    repeat: int,
) -> tuple[list[float], int, int, list[Walkin]]:
    """``run_baseline`` ``repeat`` times, or its stored answer (``--baseline-cache``).

    The key is the video's size and first MiB, the gallery and the tracker settings:
    the baseline does not depend on our pipeline, so iterating on ours need not
    pay ~80 CPU s of baseline per run.
    """
    key = ""
    if cache is not None:
        h = hashlib.sha1()
        h.update(str(path.stat().st_size).encode())
        with path.open("rb") as f:
            h.update(f.read(1 << 20))
        h.update(config.tracker.model_dump_json().encode())
        h.update(repr(sorted(gallery.identities)).encode())
        key = h.hexdigest()[:16]
        stored = cache / f"{path.stem}-{key}.pickle"
        if stored.is_file():
            with stored.open("rb") as f:
                cpus, frames, emb, clusters = pickle.load(f)  # our own cache file
            if len(cpus) >= repeat:
                return cpus, frames, emb, clusters
    cpus = []
    for _ in range(repeat):
        cpu, frames, emb, clusters = run_baseline(engine, gallery, path, config)
        cpus.append(cpu)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / f"{path.stem}-{key}.pickle").open("wb") as f:
            pickle.dump((cpus, frames, emb, clusters), f)
    return cpus, frames, emb, clusters


def compare(
    walkins: list[Walkin], ours: list[TrackResult], boxes: dict[int, dict[int, BBox]], fps: float
) -> tuple[int, int, int, list[str]]:
    """(walk-ins, found, agree, notes on the lost ones); see the module docstring.

    Found: one of our reported tracks has a box with IoU >= 0.3 to the
    cluster's box in the same frame (our frames are a sample of the baseline's).
    """
    real = [
        w
        for w in walkins
        if w.usable and (w.track.end_frame - w.track.start_frame + 1) / fps >= MIN_WALKIN_S
    ]
    found = agree = 0
    lost: list[str] = []
    for w in real:
        theirs = dict(w.track.boxes)
        best: TrackResult | None = None
        best_n = 0
        for r in ours:
            n = sum(
                1 for f, b in boxes[r.track_id].items() if f in theirs and iou(theirs[f], b) >= 0.3
            )
            if n > best_n:
                best, best_n = r, n
        if best is not None:
            found += 1
            agree += best.identity == w.identity
        else:
            u = w.usable_frames
            lost.append(
                f"frames {w.track.start_frame}-{w.track.end_frame}: usable in {len(u)} of "
                f"{w.track.hits} frames ({u[0]}-{u[-1]})"
            )
    return len(real), found, agree, lost


def load_gallery(arg: Path | None, engine: FaceEngine, tmp: Path) -> Gallery:
    folder = arg or DEFAULT_EVAL / "faces" / "Lin-Manuel_Miranda"
    if not folder.is_dir():
        raise SystemExit(f"gallery folder not found: {folder}")
    if image_files(folder):  # a single identity's photos: wrap it
        target = tmp / "gallery" / folder.name
        target.mkdir(parents=True)
        for p in image_files(folder):
            shutil.copy(p, target / p.name)
        folder = tmp / "gallery"
    return Gallery.from_folder(folder, engine)


def make_idle_1080p(folder: Path, seconds: float = 10.0) -> Path | None:
    """An empty-entrance H.264 1080p25 clip (videogen's background + sensor-like noise).

    OpenCV's wheel has no H.264 writer, so this needs the ``ffmpeg`` CLI; None without it.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    still = folder / "idle.png"
    cv2.imwrite(str(still), background(1920, 1080))
    out = folder / "idle_1080p_h264.mp4"
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-loop",
            "1",
            "-i",
            str(still),
            "-t",
            str(seconds),
            "-r",
            "25",
            "-vf",
            "noise=alls=4:allf=t,format=yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            str(out),
        ],
        check=True,
    )
    return out


def fmt_ids(ids: dict[str, int]) -> str:
    return ", ".join(f"{k}:{v}" for k, v in sorted(ids.items())) or "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", type=Path)
    ap.add_argument("--gallery", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--analyse-fps", type=float, default=None)
    ap.add_argument("--det-size", type=int, default=None)
    ap.add_argument(
        "--idle-1080p",
        action="store_true",
        help="also measure a synthetic empty-entrance 1080p25 H.264 clip (needs ffmpeg)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run ours and the baseline N times each; the table shows median (best)",
    )
    ap.add_argument(
        "--baseline-cache",
        type=Path,
        default=None,
        help="folder to keep the baseline's runs in (reused while video, gallery and tracker "
        "settings are unchanged)",
    )
    args = ap.parse_args(argv)
    videos = args.videos or sorted((DEFAULT_EVAL / "video").glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos given and none in {DEFAULT_EVAL / 'video'}")
    overrides: dict[str, object] = {}
    if args.analyse_fps:
        overrides["analyse_fps"] = args.analyse_fps
    if args.det_size:
        overrides["det_size"] = args.det_size
    config = PipelineConfig.model_validate(overrides)
    engine = FaceEngine.load()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        gallery = load_gallery(args.gallery, engine, Path(tmp))
        if args.idle_1080p:
            idle = make_idle_1080p(Path(tmp))
            if idle is None:
                print("no ffmpeg: skipping --idle-1080p", file=sys.stderr)
            else:
                videos = [*videos, idle]
        for path in videos:
            decode, grab, n, fps, res = decode_cost(path)
            video_s = n / fps
            ours_cpu: list[float] = []
            for _ in range(args.repeat):
                results, pipe = run_ours(engine, gallery, path, config)
                ours_cpu.append(pipe.stats.cpu_s)
            base_cpu, base_frames, base_emb, clusters = cached_baseline(
                args.baseline_cache, engine, gallery, path, config, args.repeat
            )
            walkins, found, agree, lost = compare(clusters, results, pipe.boxes, fps)
            st = pipe.stats
            rows.append(
                Row(
                    video=path.name,
                    resolution=res,
                    fps=round(fps, 2),
                    video_s=round(video_s, 2),
                    decode_core=decode / video_s,
                    grab_core=grab / video_s,
                    ours_core=statistics.median(ours_cpu) / video_s,
                    base_core=statistics.median(base_cpu) / video_s,
                    ours_best=min(ours_cpu) / video_s,
                    base_best=min(base_cpu) / video_s,
                    ours_burst=st.burst_frames,
                    ours_roi_calls=st.roi_detector_calls,
                    ours_det_mpix=st.detector_pixels / 1e6,
                    ours_analysed=st.frames_analysed,
                    base_analysed=base_frames,
                    ours_detector_calls=st.detector_calls,
                    ours_faces_embedded=st.faces_embedded,
                    base_faces_embedded=base_emb,
                    ours_tracks=len(results),
                    base_clusters=len(clusters),
                    walkins=walkins,
                    found=found,
                    agree=agree,
                    ours_identities=dict(Counter(str(r.identity) for r in results)),
                    base_identities=dict(Counter(str(w.identity) for w in clusters if w.usable)),
                    lost=lost,
                )
            )
            print(f"done {path.name}", file=sys.stderr)

    n = args.repeat
    print(
        f"CPU seconds per video second (= cores); ours and baseline: median of {n} run(s), "
        "best in brackets"
    )
    header = (
        "| video | res | decode | grab only | ours | baseline | ours/base "
        "| analysed ours (burst)/base | det calls (roi) | det Mpix | embedded ours/base "
        "| tracks | walk-ins | found | lost | same id |"
    )
    print(header)
    print("|" + "---|" * 16)
    for r in rows:
        print(
            f"| {r.video} | {r.resolution}@{r.fps:g} | {r.decode_core:.3f} "
            f"| {r.grab_core:.3f} | {r.ours_core:.3f} ({r.ours_best:.3f}) "
            f"| {r.base_core:.3f} ({r.base_best:.3f}) | {r.ratio:.3f} ({r.ratio_best:.3f}) "
            f"| {r.ours_analysed} ({r.ours_burst})/{r.base_analysed} "
            f"| {r.ours_detector_calls} ({r.ours_roi_calls}) | {r.ours_det_mpix:.1f} "
            f"| {r.ours_faces_embedded}/{r.base_faces_embedded} | {r.ours_tracks} "
            f"| {r.walkins} | {r.found} | {r.walkins - r.found} | {r.agree}/{r.found} |"
        )
    print()
    for r in rows:
        print(
            f"{r.video}: identities ours {{{fmt_ids(r.ours_identities)}}}; "
            f"baseline clusters with a usable face {{{fmt_ids(r.base_identities)}}}"
        )
        print(f"  walk-ins (baseline) {r.walkins}, found by ours {r.found}, lost {len(r.lost)}")
        for note in r.lost:
            print(f"  lost walk-in: {note}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [asdict(r) | {"ratio": r.ratio, "ratio_best": r.ratio_best} for r in rows],
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
