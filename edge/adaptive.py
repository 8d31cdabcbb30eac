"""Adaptive templates: a resident's own recent door captures, kept on the box.

A resident is enrolled from ONE registry photo. When that photo is unlike how
the door camera sees them (another year, glasses, pose), their tracks match at
or just under the threshold, are missed on some days, upload as unknowns and
may end up as a case. :class:`AdaptiveGallery` wraps the synced
:class:`~edge.gallery.Gallery` (the *enrolled* templates) and adds, per
occupant, a few *adaptive* templates: fused embeddings of that occupant's own
tracks that matched with high confidence. Matching is the max over enrolled and
adaptive templates (as for several enrolled photos).

Local only, by design: adaptive templates are faces of registered occupants,
which never leave the box. They are never uploaded; they live in
``<data_dir>/adaptive.npz`` (written atomically) next to the gallery cache.

Guards against drift and poisoning (a stranger's face becoming an occupant's
template would make that stranger "known" and hide them from the cases):

1. confidence: a track is adopted only if it matches the occupant (enrolled or
   adaptive templates) at ``>= adapt_threshold`` (default 0.55; different
   people's maximum cosine is ~0.41 on the eval set, 0.34 in the simulation);
2. anchor: it must ALSO match the occupant's ENROLLED templates at
   ``>= anchor_threshold`` (default: the match threshold). An adaptive template
   may therefore seed the next one (a chain), but every link stays within the
   normal match distance of the registry photo, so chains cannot walk away
   from the enrolled person;
3. margin: no other occupant may be within ``margin`` of it (an ambiguous
   face teaches nothing);
4. quality: the track's best face quality is ``>= min_quality``;
5. bounds: at most ``max_per_identity`` per occupant (the one seen least
   recently is replaced), a near-duplicate of an existing one only refreshes
   it, and one not refreshed for ``max_age_days`` expires;
6. sync: when the synced gallery drops an occupant (deletion, move-out) their
   adaptive templates are deleted on disk at once; when their enrolled
   templates change, the anchor is re-checked; when the model changes, all are
   dropped (embeddings of another recogniser are meaningless).

Trade-off (bench/site_simulation.py, see docs/operator-guide.md): the anchor
guard means adaptation cannot rescue a resident whose captures never reach
the match threshold against their photo; it helps residents who are matched on
good days and missed on bad ones.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge.files import atomic_write
from edge.gallery import Gallery, Match

log = logging.getLogger(__name__)

DAY_S = 86400.0
REFRESH_SAVE_S = 3600.0
"""A refresh alone (a ``seen_at`` update) is written at most this often: it only
matters to expiry and replacement, which count in days, and every known track
of a regular would otherwise rewrite the file (SD cards wear)."""
FILE_NAME = "adaptive.npz"


class AdaptConfig(BaseModel):
    """Adaptive template settings (``adapt:`` in edge.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Keep high-confidence captures of occupants as extra templates."
    )
    adapt_threshold: float = Field(
        default=0.55,
        ge=0.3,
        le=1.0,
        description="A track must match the occupant at least this well to be kept (well above "
        "different people's maximum cosine, ~0.41 on the eval set for buffalo_s).",
    )
    anchor_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="It must also match the occupant's ENROLLED templates this well (the drift "
        "guard); default: the gallery's match threshold.",
    )
    margin: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="The next-closest occupant must be at least this much further away.",
    )
    min_quality: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Minimum best-face quality score of the track."
    )
    max_per_identity: int = Field(
        default=4, ge=1, le=32, description="Adaptive templates kept per occupant."
    )
    duplicate_similarity: float = Field(
        default=0.92,
        gt=0.0,
        le=1.0,
        description="A capture this close to a kept one only refreshes it (it adds nothing new).",
    )
    max_age_days: float = Field(
        default=60.0, gt=0, description="An adaptive template not refreshed for this long expires."
    )


@dataclass(frozen=True, slots=True, eq=False)
class AdaptiveTemplate:
    """One kept capture of one occupant."""

    identity: str
    embedding: npt.NDArray[np.float32]
    added_at: float
    """Unix time it was adopted."""
    seen_at: float
    """Unix time it was last the occupant's closest adaptive template (refresh)."""


def _unit(vec: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else v


def _atomic_save(path: Path, **arrays: npt.NDArray[np.generic]) -> None:
    """Write an .npz so that a crash leaves the old or the new file, never half of one."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write(path, buf.getvalue())


class AdaptiveGallery:
    """Enrolled gallery + per-occupant adaptive templates; thread-safe.

    ``match`` has :class:`~edge.gallery.Gallery`'s shape (the pipeline's
    ``GalleryLike``); ``observe`` is called with every ended known track;
    ``set_base`` with every newly synced gallery. ``path`` None keeps
    everything in memory (the simulation, tests).
    """

    def __init__(
        self,
        config: AdaptConfig | None = None,
        *,
        path: Path | None = None,
        model_id: str,
        clock: object = time.time,
    ) -> None:
        self.config = config or AdaptConfig()
        self.path = path
        self.model_id = model_id
        self._clock = clock
        self._lock = threading.Lock()
        self._base: Gallery | None = None
        self._combined: Gallery | None = None
        self._kept: dict[str, list[AdaptiveTemplate]] = {}
        self._saved_at = float("-inf")
        self.adopted = 0
        """Templates adopted since start (a counter for status/benchmarks)."""
        if path is not None:
            self._load(path)

    # ------------------------------------------------------------- state
    @property
    def base(self) -> Gallery | None:
        """The enrolled (synced) gallery."""
        return self._base

    def templates(self, identity: str) -> list[AdaptiveTemplate]:
        """The adaptive templates kept for ``identity`` (a copy)."""
        with self._lock:
            return list(self._kept.get(identity, []))

    def count(self) -> int:
        """Adaptive templates kept, all occupants."""
        with self._lock:
            return sum(len(v) for v in self._kept.values())

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                model = str(npz["model_id"])
                idents = [str(x) for x in npz["identities"]]
                embs = np.asarray(npz["embeddings"], dtype=np.float32)
                added = np.asarray(npz["added_at"], dtype=np.float64)
                seen = np.asarray(npz["seen_at"], dtype=np.float64)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable adaptive templates %s: %s", path, exc)
            return
        if model != self.model_id:
            # Embeddings of another recogniser cannot be compared: drop them.
            log.info("adaptive templates of model %r dropped (now %r)", model, self.model_id)
            path.unlink(missing_ok=True)
            return
        for ident, emb, a, s in zip(idents, embs, added, seen, strict=True):
            self._kept.setdefault(ident, []).append(
                AdaptiveTemplate(ident, _unit(emb), float(a), float(s))
            )

    def _save(self, *, lazy: bool = False) -> None:
        """Persist (caller holds the lock). Never fatal: matching goes on from memory.

        ``lazy``: only refreshes changed; skip if the file was written recently.
        """
        if self.path is None:
            return
        now = self._now()
        if lazy and now - self._saved_at < REFRESH_SAVE_S:
            return
        self._saved_at = now
        rows = [t for ts in self._kept.values() for t in ts]
        try:
            if not rows:
                self.path.unlink(missing_ok=True)  # deletion reaches the disk too
                return
            _atomic_save(
                self.path,
                model_id=np.asarray(self.model_id),
                identities=np.asarray([t.identity for t in rows]),
                embeddings=np.stack([t.embedding for t in rows]).astype(np.float32),
                added_at=np.asarray([t.added_at for t in rows], dtype=np.float64),
                seen_at=np.asarray([t.seen_at for t in rows], dtype=np.float64),
            )
        except OSError as exc:
            log.warning("cannot write adaptive templates %s: %s", self.path, exc)

    def _rebuild(self) -> None:
        """Recompute the combined matcher (caller holds the lock); one reference swap."""
        base = self._base
        if base is None:
            self._combined = None
            return
        extra = [t for ts in self._kept.values() for t in ts]
        if not extra or base.templates.shape[0] == 0:
            self._combined = base
            return
        index = {name: i for i, name in enumerate(base.identities)}
        self._combined = Gallery(
            base.identities,
            np.vstack([base.templates, np.stack([t.embedding for t in extra])]),
            np.concatenate(
                [base.owners, np.asarray([index[t.identity] for t in extra], dtype=np.intp)]
            ),
            model_id=base.model_id,
            threshold=base.threshold,
        )

    def _anchor(self, base: Gallery) -> float:
        a = self.config.anchor_threshold
        return base.threshold if a is None else a

    # ------------------------------------------------------------- sync
    def set_base(self, gallery: Gallery | None) -> None:
        """Install a newly synced gallery.

        Occupants no longer in it lose their adaptive templates (on disk too);
        templates that no longer reach the anchor on the new enrolled templates
        are dropped; a gallery of another model drops every template.
        """
        with self._lock:
            changed = False
            if gallery is not None and gallery.model_id != self.model_id:
                log.info(
                    "gallery model %r replaces %r: adaptive templates dropped",
                    gallery.model_id,
                    self.model_id,
                )
                self.model_id = gallery.model_id
                changed = bool(self._kept)
                self._kept = {}
            self._base = gallery
            if gallery is not None:
                index = {name: i for i, name in enumerate(gallery.identities)}
                anchor = self._anchor(gallery)
                for ident in list(self._kept):
                    if ident not in index:
                        del self._kept[ident]
                        changed = True
                        continue
                    sims = gallery.similarities(np.stack([t.embedding for t in self._kept[ident]]))[
                        :, index[ident]
                    ]
                    keep = [t for t, s in zip(self._kept[ident], sims, strict=True) if s >= anchor]
                    if len(keep) != len(self._kept[ident]):
                        changed = True
                        self._kept[ident] = keep
                    if not keep:
                        del self._kept[ident]
            changed |= self._expire()
            self._rebuild()
            if changed:
                self._save()

    def _expire(self) -> bool:
        limit = self._now() - self.config.max_age_days * DAY_S
        changed = False
        for ident in list(self._kept):
            keep = [t for t in self._kept[ident] if t.seen_at >= limit]
            if len(keep) != len(self._kept[ident]):
                changed = True
                if keep:
                    self._kept[ident] = keep
                else:
                    del self._kept[ident]
        return changed

    # ------------------------------------------------------------- matching
    def match(self, embeddings: npt.NDArray[np.float32]) -> list[Match]:
        """Match against enrolled + adaptive templates (max per occupant)."""
        combined = self._combined if self.config.enabled else self._base
        n = np.atleast_2d(embeddings).shape[0]
        if combined is None:
            return [Match(None, None, 0.0) for _ in range(n)]
        return combined.match(embeddings)

    def observe(
        self, identity: str | None, embedding: npt.NDArray[np.float32], *, quality: float
    ) -> bool:
        """Consider one ended track of ``identity`` (its fused embedding); True if kept.

        Call it for known tracks; None (unknown) is ignored. Every guard of the
        module docstring is applied here.
        """
        if not self.config.enabled or identity is None:
            return False
        cfg = self.config
        with self._lock:
            base = self._base
            combined = self._combined
            if base is None or combined is None or identity not in base.identities:
                return False
            if quality < cfg.min_quality:
                return False
            emb = _unit(embedding)
            j = base.identities.index(identity)
            sims = combined.similarities(emb)[0]
            if float(sims[j]) < cfg.adapt_threshold:
                return False  # low confidence: teaches nothing safely
            others = np.delete(sims, j)
            if others.size and float(sims[j]) - float(others.max()) < cfg.margin:
                return False  # ambiguous between occupants
            if float(base.similarities(emb)[0, j]) < self._anchor(base):
                return False  # drift guard: too far from the registry photo
            now = self._now()
            kept = self._kept.setdefault(identity, [])
            if kept:
                close = np.stack([t.embedding for t in kept]) @ emb
                k = int(np.argmax(close))
                kept[k] = replace(kept[k], seen_at=now)  # the closest one is still in use
                if float(close[k]) >= cfg.duplicate_similarity:
                    self._save(lazy=True)
                    return False
            kept.append(AdaptiveTemplate(identity, emb, now, now))
            if len(kept) > cfg.max_per_identity:
                # Replace the one that has gone longest without being the closest.
                del kept[min(range(len(kept)), key=lambda i: (kept[i].seen_at, kept[i].added_at))]
            self.adopted += 1
            self._expire()
            self._rebuild()
            self._save()
            log.debug("adaptive template kept for %s (%d now)", identity, len(kept))
            return True
