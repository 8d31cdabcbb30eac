"""edge.adaptive: adaptive templates, their guards, persistence and sync (fake embeddings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge.adaptive import FILE_NAME, AdaptConfig, AdaptiveGallery
from edge.gallery import Gallery, Template

DIM = 64
MODEL = "fake-model"
THRESHOLD = 0.40
Vec = npt.NDArray[np.float32]


def axis(i: int) -> Vec:
    """Unit vector along axis ``i``: distinct axes are orthogonal (similarity 0)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def toward(a: Vec, b: Vec, sim: float) -> Vec:
    """A unit vector with cosine ``sim`` to unit ``a``, turned toward ``b`` (orthogonal to a)."""
    out = sim * a + np.sqrt(1.0 - sim * sim) * b
    return (out / np.linalg.norm(out)).astype(np.float32)


def drifted() -> tuple[Vec, Vec]:
    """(capture, later): the capture is 0.6 to photo A; ``later`` is 0.74 to the capture
    but only 0.30 to A (the same face on another day, or a look-alike of the capture)."""
    capture = 0.6 * A + 0.8 * axis(10)
    later = 0.30 * A + 0.7 * axis(10) + np.sqrt(1 - 0.09 - 0.49) * axis(20)
    return capture.astype(np.float32), later.astype(np.float32)


def gallery(names: dict[str, Vec], model_id: str = MODEL) -> Gallery:
    return Gallery.from_templates(
        [Template(n, v, model_id) for n, v in names.items()],
        model_id=model_id,
        threshold=THRESHOLD,
    )


A, B = axis(0), axis(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Path | None = None, clock: Clock | None = None, **cfg: object
) -> AdaptiveGallery:
    ag = AdaptiveGallery(
        AdaptConfig(**cfg),  # type: ignore[arg-type]
        path=None if tmp_path is None else tmp_path / FILE_NAME,
        model_id=MODEL,
        clock=clock or Clock(),
    )
    ag.set_base(gallery({"1": A, "2": B}))
    return ag


def test_high_confidence_matches_add_templates_up_to_the_cap() -> None:
    ag = make(max_per_identity=4)
    # Six captures of occupant 1, each at 0.7 to the enrolled photo, unlike one another.
    kept = [ag.observe("1", toward(A, axis(10 + i), 0.7), quality=0.9) for i in range(6)]
    assert kept == [True] * 6
    assert len(ag.templates("1")) == 4
    assert ag.templates("2") == []
    assert ag.count() == 4


def test_low_confidence_or_low_quality_adds_nothing() -> None:
    ag = make()
    weak = toward(A, axis(10), 0.45)  # known (>= 0.40) but below adapt_threshold 0.55
    assert ag.match(weak)[0].identity == "1"
    assert not ag.observe("1", weak, quality=0.9)
    assert not ag.observe("1", toward(A, axis(11), 0.8), quality=0.2)  # blurry track
    assert not ag.observe(None, toward(A, axis(12), 0.8), quality=0.9)  # unknown track
    assert not ag.observe("99", toward(A, axis(13), 0.8), quality=0.9)  # not in the gallery
    assert ag.count() == 0


def test_matching_uses_the_max_over_enrolled_and_adaptive_templates() -> None:
    ag = make()
    capture, later = drifted()
    assert float(later @ A) < THRESHOLD
    assert ag.match(later)[0].identity is None
    assert ag.observe("1", capture, quality=0.9)
    m = ag.match(later)[0]
    assert m.identity == "1"
    assert m.similarity == pytest.approx(float(later @ capture), abs=1e-5)


def test_a_stranger_cannot_poison_through_an_adaptive_template() -> None:
    ag = make()
    capture, stranger = drifted()
    assert ag.observe("1", capture, quality=0.9)
    # A look-alike of that capture (0.74) who is far from the registry photo (< anchor 0.40):
    # matched through the capture, but never kept.
    assert float(stranger @ A) < THRESHOLD
    assert ag.match(stranger)[0].identity == "1"
    assert not ag.observe("1", stranger, quality=0.9)
    assert len(ag.templates("1")) == 1
    # A chain of ever-further captures stops at the anchor: no walk away from the photo.
    step, refused = capture, 0
    for i in range(8):
        step = toward(step, axis(30 + i), 0.9)
        if ag.observe("1", step, quality=0.9):
            assert float(step @ A) >= THRESHOLD
        else:
            refused += 1
    assert refused > 0
    assert all(float(t.embedding @ A) >= THRESHOLD for t in ag.templates("1"))


def test_an_ambiguous_face_between_two_occupants_is_not_kept() -> None:
    ag = make()
    between = (A + B) / np.linalg.norm(A + B)  # 0.707 to both
    assert not ag.observe("1", between.astype(np.float32), quality=0.9)
    assert ag.count() == 0


def test_a_near_duplicate_only_refreshes() -> None:
    clock = Clock()
    ag = make(clock=clock)
    capture = toward(A, axis(10), 0.7)
    assert ag.observe("1", capture, quality=0.9)
    clock.now += 3600
    assert not ag.observe("1", toward(capture, axis(20), 0.99), quality=0.9)
    (only,) = ag.templates("1")
    assert only.seen_at == clock.now
    assert only.added_at == clock.now - 3600


def test_persisted_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    ag = make(tmp_path, clock)
    capture, later = drifted()
    assert ag.observe("1", capture, quality=0.9)
    assert (tmp_path / FILE_NAME).is_file()

    again = AdaptiveGallery(AdaptConfig(), path=tmp_path / FILE_NAME, model_id=MODEL, clock=clock)
    assert len(again.templates("1")) == 1
    again.set_base(gallery({"1": A, "2": B}))
    assert again.match(later)[0].identity == "1"


def test_the_gallery_dropping_an_occupant_deletes_their_templates(tmp_path: Path) -> None:
    ag = make(tmp_path)
    assert ag.observe("1", toward(A, axis(10), 0.7), quality=0.9)
    assert ag.observe("2", toward(B, axis(11), 0.7), quality=0.9)
    ag.set_base(gallery({"2": B}))  # occupant 1 moved out / was deleted on the server
    assert ag.templates("1") == []
    assert len(ag.templates("2")) == 1
    # ...on disk too: a restart does not bring them back.
    again = AdaptiveGallery(AdaptConfig(), path=tmp_path / FILE_NAME, model_id=MODEL)
    assert again.templates("1") == []
    assert len(again.templates("2")) == 1
    ag.set_base(gallery({"3": axis(5)}))
    assert ag.count() == 0
    assert not (tmp_path / FILE_NAME).exists()


def test_a_re_enrolment_re_checks_the_anchor() -> None:
    ag = make()
    capture = toward(A, axis(10), 0.6)
    assert ag.observe("1", capture, quality=0.9)
    ag.set_base(gallery({"1": axis(40), "2": B}))  # a new photo of someone else entirely
    assert ag.templates("1") == []


def test_a_model_change_clears_them(tmp_path: Path) -> None:
    ag = make(tmp_path)
    assert ag.observe("1", toward(A, axis(10), 0.7), quality=0.9)
    other = AdaptiveGallery(AdaptConfig(), path=tmp_path / FILE_NAME, model_id="another-model")
    assert other.count() == 0
    assert not (tmp_path / FILE_NAME).exists()

    ag2 = make(tmp_path)
    assert ag2.observe("1", toward(A, axis(10), 0.7), quality=0.9)
    ag2.set_base(gallery({"1": A}, model_id="another-model"))
    assert ag2.count() == 0
    assert ag2.model_id == "another-model"


def test_templates_expire_when_not_refreshed() -> None:
    clock = Clock()
    ag = make(clock=clock, max_age_days=30)
    assert ag.observe("1", toward(A, axis(10), 0.7), quality=0.9)
    clock.now += 29 * 86400
    ag.set_base(ag.base)
    assert ag.count() == 1
    clock.now += 2 * 86400
    ag.set_base(ag.base)
    assert ag.count() == 0


def test_disabled_matches_enrolled_only_and_keeps_nothing() -> None:
    ag = make(enabled=False)
    assert not ag.observe("1", toward(A, axis(10), 0.7), quality=0.9)
    assert ag.count() == 0
    assert ag.match(A)[0].identity == "1"


def test_an_unreadable_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not an npz")
    ag = AdaptiveGallery(AdaptConfig(), path=tmp_path / FILE_NAME, model_id=MODEL)
    assert ag.count() == 0


def test_the_daemon_keeps_them_locally_and_drops_them_with_the_occupant(tmp_path: Path) -> None:
    """EdgeDaemon against the real server app: a known track feeds the adaptive
    gallery, matching uses it, and a server-side deletion reaches the local copies."""
    from dataclasses import replace

    from tests.edge.test_daemon import Server, _track, daemon

    server = Server(tmp_path / "server")
    try:
        alice, alice_vec = server.enrol(1)
        edge = daemon(tmp_path / "edge", server.client())
        assert edge.gallery_sync.sync_once() is True
        rng = np.random.default_rng(7)
        side = rng.standard_normal(512).astype(np.float32)
        side -= (side @ alice_vec) * alice_vec
        side /= np.linalg.norm(side)
        capture = (0.6 * alice_vec + 0.8 * side).astype(np.float32)
        other = rng.standard_normal(512).astype(np.float32)
        other -= (other @ alice_vec) * alice_vec + (other @ side) * side
        other /= np.linalg.norm(other)
        later = (0.3 * alice_vec + 0.7 * side + np.sqrt(0.42) * other).astype(np.float32)
        view = edge.gallery_sync  # what the pipelines match against
        assert view.match(later)[0].identity is None

        known = replace(_track(1, 1000.0, crop=None), identity=str(alice), embedding=capture)
        assert edge.cameras.record("door", known)
        assert (tmp_path / "edge" / FILE_NAME).is_file()
        assert edge.status()["gallery"]["adaptive_templates"] == 1
        assert view.match(later)[0].identity == str(alice)
        (queued,) = edge.outbox.peek(10)  # the face stays local: an occupant id only
        assert queued.sighting.kind == "known" and queued.sighting.embedding_b64 is None

        server.forget(alice)
        assert edge.gallery_sync.sync_once() is True
        assert edge.adaptive.count() == 0
        assert not (tmp_path / "edge" / FILE_NAME).exists()
        assert view.match(later)[0].identity is None
        edge.outbox.close()
    finally:
        server.close()


@pytest.mark.models
def test_replay_with_adapt_keeps_strangers_unknown(tmp_path: Path) -> None:
    """``lintel-edge replay --adapt`` on a generated entrance video (real models): the
    known walk-ins are still known and the unknown ones stay unknown."""
    import contextlib
    import io
    import json

    from edge.cli import main
    from lintel_demo.videogen import write_gallery
    from tests.edge.pipeline_fixtures import DISTRACTOR, KNOWN, make_scenario_video

    video = make_scenario_video(tmp_path)
    folder = write_gallery(tmp_path / "gallery", [*KNOWN, DISTRACTOR])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["replay", str(video.path), "--gallery", str(folder), "--adapt", "--json"])
    assert rc == 0
    names = sorted(str(t["identity"]) for t in json.loads(out.getvalue())["tracks"])
    assert names == sorted([*KNOWN, "None", "None"])


def test_a_refresh_alone_is_written_at_most_hourly(tmp_path: Path) -> None:
    clock = Clock()
    ag = make(tmp_path, clock)
    capture = toward(A, axis(10), 0.7)
    assert ag.observe("1", capture, quality=0.9)
    added = clock.now

    def seen_on_disk() -> float:
        again = AdaptiveGallery(AdaptConfig(), path=tmp_path / FILE_NAME, model_id=MODEL)
        (only,) = again.templates("1")
        return only.seen_at

    clock.now += 60
    assert not ag.observe("1", capture, quality=0.9)  # a refresh: memory only for now
    assert ag.templates("1")[0].seen_at == clock.now
    assert seen_on_disk() == added
    clock.now += 3600
    assert not ag.observe("1", capture, quality=0.9)
    assert seen_on_disk() == clock.now
