"""The local gallery: enrolled identities' templates and 1:N matching.

A template is one L2-normalised embedding: of one enrolment photo, or (the
default for folders) the quality-weighted mean of all of one identity's photos.
An identity may have several templates (e.g. synced from a server, one per
photo); its similarity to a probe is the MAX cosine over them.

Why folders fuse by default (bench/accuracy.py, buffalo_s, faces/, 5 splits,
same genuine probes): with 3 enrolment photos at the default threshold 0.40,
FNIR is 1.06% fused vs 1.81% keeping every photo (max) vs 4.90% with one photo;
and max gives a stranger three chances, so at a fixed threshold its FPIR is
the higher (t=0.30: 0.26% max vs 0.11% fused). At FPIR-matched thresholds the
two tie (FNIR@FPIR 1%: 0.06% max, 0.12% fused).

Templates are only comparable with embeddings of the same recogniser, so the
gallery carries the ``model_id`` it was built with and refuses anything else.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge.errors import GalleryError
from edge.face.errors import EnrolmentError
from edge.face.quality import fuse_embeddings

if TYPE_CHECKING:
    from edge.face.engine import FaceEngine

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True, slots=True)
class Match:
    """Result of matching one embedding against the gallery."""

    identity: str | None
    """The decision: the closest identity if its similarity reaches the threshold."""
    best: str | None
    """The closest identity whatever the threshold (None for an empty gallery)."""
    similarity: float
    """Cosine similarity to ``best`` (max over its templates); -1 when there is none."""


@dataclass(frozen=True, slots=True)
class Template:
    """One enrolled embedding of one identity, as a server sync delivers it."""

    identity: str
    embedding: npt.NDArray[np.float32]
    model_id: str


@dataclass(frozen=True, slots=True)
class EnrolmentFailure:
    """A gallery photo that did not enrol: a result to report, not a crash."""

    path: str
    """Relative to the gallery folder, forward slashes (``<identity>/<photo>``)."""
    reason: str
    """Enrolment reason code (:class:`edge.face.errors.EnrolmentError`), or ``no_photos``."""
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        """The ``failed_to_enrol`` entry of the eval / calibrate / replay JSON."""
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


def failed_to_enrol_line(failures: Sequence[EnrolmentFailure]) -> str:
    """One readable line for the text outputs ('' when nothing failed)."""
    if not failures:
        return ""
    return f"failed to enrol {len(failures)} gallery photo(s): " + "; ".join(
        f"{f.path} ({f.reason}{': ' + f.detail if f.detail else ''})" for f in failures
    )


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (not hidden), in a stable order."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


class Gallery:
    """Identities, their template matrix and the owner of each template row."""

    def __init__(
        self,
        identities: Sequence[str],
        templates: npt.NDArray[np.float32],
        owners: npt.NDArray[np.intp],
        *,
        model_id: str,
        threshold: float,
    ) -> None:
        """Low-level constructor; prefer :meth:`from_folder` / :meth:`from_templates`.

        ``templates`` is (m, dim), ``owners[i]`` the index in ``identities`` of
        row ``i``. Rows are re-normalised and grouped by owner here.
        """
        tpl = np.asarray(templates, dtype=np.float32)
        own = np.asarray(owners, dtype=np.intp)
        if tpl.ndim != 2 or own.shape != (tpl.shape[0],):
            raise GalleryError(f"templates {tpl.shape} and owners {own.shape} do not line up")
        if len(set(identities)) != len(identities):
            raise GalleryError("identity names must be unique")
        if own.size and (own.min() < 0 or own.max() >= len(identities)):
            raise GalleryError("template owner index out of range")
        if not np.all(np.isfinite(tpl)):
            raise GalleryError("templates hold NaN or infinite values")
        norms = np.linalg.norm(tpl, axis=1, keepdims=True)
        if np.any(norms < 1e-6):
            raise GalleryError("a template is the zero vector")
        # Group rows by owner so a per-identity max is one np.maximum.reduceat.
        order = np.argsort(own, kind="stable")
        self.identities: tuple[str, ...] = tuple(identities)
        self.templates: npt.NDArray[np.float32] = np.ascontiguousarray(tpl[order] / norms[order])
        self.owners: npt.NDArray[np.intp] = own[order]
        self.model_id = model_id
        self.threshold = float(threshold)
        present = np.unique(self.owners)
        self._present = present  # identities that have at least one template
        self._starts = np.searchsorted(self.owners, present)
        self.failed_to_enrol: tuple[EnrolmentFailure, ...] = ()
        """Photos :meth:`from_folder` left out (``skip_unusable``), in folder order."""

    @property
    def dim(self) -> int:
        """Embedding dimension (0 for a gallery without templates)."""
        return int(self.templates.shape[1]) if self.templates.size else 0

    def __len__(self) -> int:
        return len(self.identities)

    # ----------------------------------------------------------------- builders

    @classmethod
    def from_folder(
        cls,
        folder: Path | str,
        engine: FaceEngine,
        *,
        cache: Path | str | None = None,
        fuse: bool = True,
        skip_unusable: bool = False,
    ) -> Gallery:
        """Enrol ``folder/<identity>/<photo>`` with ``engine``.

        Every photo must hold exactly one usable face; otherwise
        :class:`GalleryError` lists EVERY bad file with its reason (fix them all
        in one pass, not one per run). With ``skip_unusable`` bad photos are
        logged and left out instead, and so is an identity left without a usable
        photo. Files outside identity folders and non-image files are ignored
        with a warning.

        ``fuse`` (default): one template per identity, the quality-weighted mean of
        its photos (:func:`edge.face.quality.fuse_embeddings`); ``fuse=False`` keeps one
        template per photo, matched by max. See the module docstring for why.

        ``cache``: an ``.npz`` file of enrolled embeddings keyed by the photo's
        SHA-256, the model id and the quality gates, so re-running over an
        unchanged folder skips detection and embedding. A stale or unreadable
        cache is ignored and rewritten.
        """
        root = Path(folder)
        if not root.is_dir():
            raise GalleryError(f"gallery folder {root} does not exist or is not a directory")
        identities: list[str] = []
        rows: list[npt.NDArray[np.float32]] = []
        weights: list[float] = []
        owners: list[int] = []
        problems: list[str] = []
        failed: list[EnrolmentFailure] = []
        store = _EmbeddingCache(Path(cache), engine) if cache is not None else None
        for sub in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
            if not sub.is_dir():
                log.warning("gallery %s: ignoring %s (not in an identity folder)", root, sub.name)
                continue
            photos = image_files(sub)
            if not photos:
                problems.append(f"{sub.relative_to(root)}/: no photos")
                failed.append(EnrolmentFailure(f"{sub.relative_to(root).as_posix()}/", "no_photos"))
                continue
            idx = len(identities)
            identities.append(sub.name)
            for photo in photos:
                rel = photo.relative_to(root)
                key = store.key(photo) if store is not None else None
                cached = store.get(key) if store is not None and key is not None else None
                if cached is not None:
                    rows.append(cached[0])
                    weights.append(cached[1])
                    owners.append(idx)
                    continue
                try:
                    face = engine.enrol(photo, name=str(rel))
                except EnrolmentError as exc:
                    detail = str(exc).removeprefix(f"{rel}: ")
                    problems.append(f"{rel}: {exc.reason}: {detail}")
                    failed.append(EnrolmentFailure(rel.as_posix(), exc.reason, detail))
                    continue
                if store is not None and key is not None:
                    store.put(key, face.embedding, face.quality.score)
                rows.append(face.embedding)
                weights.append(face.quality.score)
                owners.append(idx)
            if skip_unusable and (not owners or owners[-1] != idx):
                # Left out altogether: an identity without a template cannot match.
                identities.pop()
                problems.append(f"{sub.relative_to(root)}/: no usable photo, identity left out")
        if problems and skip_unusable and not identities:
            raise GalleryError(
                f"gallery {root}: not one photo enrolled; {len(problems)} unusable:\n  "
                + "\n  ".join(problems)
            )
        if problems and skip_unusable:
            log.warning(
                "gallery %s: %d unusable photo(s) left out:\n  %s",
                root,
                len(problems),
                "\n  ".join(problems),
            )
            problems = []
        if problems:
            raise GalleryError(
                f"gallery {root}: {len(problems)} unusable photo(s):\n  " + "\n  ".join(problems)
            )
        if not identities:
            raise GalleryError(f"gallery {root}: no identity folders")
        if store is not None:
            store.save()
        matrix = np.stack(rows)
        owner_arr = np.asarray(owners, dtype=np.intp)
        if fuse:
            w = np.asarray(weights, dtype=np.float32)
            matrix = np.stack(
                [
                    fuse_embeddings(matrix[owner_arr == k], w[owner_arr == k])
                    for k in range(len(identities))
                ]
            )
            owner_arr = np.arange(len(identities), dtype=np.intp)
        log.info(
            "gallery %s: %d identities, %d templates from %d photos",
            root,
            len(identities),
            matrix.shape[0],
            len(rows),
        )
        gallery = cls(
            identities,
            matrix,
            owner_arr,
            model_id=engine.model_id,
            threshold=engine.threshold,
        )
        gallery.failed_to_enrol = tuple(failed)
        return gallery

    @classmethod
    def from_templates(
        cls, templates: Iterable[Template], *, model_id: str, threshold: float
    ) -> Gallery:
        """Build from synced templates; every template must carry ``model_id``."""
        identities: dict[str, int] = {}
        rows: list[npt.NDArray[np.float32]] = []
        owners: list[int] = []
        for t in templates:
            if t.model_id != model_id:
                raise GalleryError(
                    f"template of {t.identity!r} was made by model {t.model_id!r}; "
                    f"this gallery is for {model_id!r} (re-enrol with this model)"
                )
            vec = np.asarray(t.embedding, dtype=np.float32).reshape(-1)
            if rows and vec.shape != rows[0].shape:
                raise GalleryError(
                    f"template of {t.identity!r} has {vec.size} values, others {rows[0].size}"
                )
            rows.append(vec)
            owners.append(identities.setdefault(t.identity, len(identities)))
        matrix = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        return cls(
            list(identities),
            matrix,
            np.asarray(owners, dtype=np.intp),
            model_id=model_id,
            threshold=threshold,
        )

    # ----------------------------------------------------------------- matching

    def similarities(
        self, embeddings: npt.NDArray[np.float32], *, model_id: str | None = None
    ) -> npt.NDArray[np.float32]:
        """(n, identities) matrix: max cosine of each probe to each identity (-1 if none)."""
        probes = self._check(embeddings, model_id)
        out = np.full((probes.shape[0], len(self.identities)), -1.0, dtype=np.float32)
        if probes.shape[0] == 0 or self.templates.shape[0] == 0:
            return out
        sims = probes @ self.templates.T  # (n, m)
        out[:, self._present] = np.maximum.reduceat(sims, self._starts, axis=1)
        return out

    def match(
        self,
        embeddings: npt.NDArray[np.float32],
        *,
        model_id: str | None = None,
        threshold: float | None = None,
    ) -> list[Match]:
        """Match (n, dim) or (dim,) embeddings; one :class:`Match` per row.

        Pass ``model_id`` (the engine's) so embeddings of another recogniser are
        refused instead of silently compared. ``threshold`` overrides the gallery's.
        """
        thr = self.threshold if threshold is None else float(threshold)
        sims = self.similarities(embeddings, model_id=model_id)
        if sims.shape[1] == 0:
            return [Match(None, None, -1.0) for _ in range(sims.shape[0])]
        best_idx = np.argmax(sims, axis=1)
        out: list[Match] = []
        for row, j in zip(sims, best_idx, strict=True):
            sim = float(row[j])
            if sim <= -1.0 and j not in self._present:
                out.append(Match(None, None, -1.0))
                continue
            name = self.identities[int(j)]
            out.append(Match(name if sim >= thr else None, name, sim))
        return out

    def _check(
        self, embeddings: npt.NDArray[np.float32], model_id: str | None
    ) -> npt.NDArray[np.float32]:
        if model_id is not None and model_id != self.model_id:
            raise GalleryError(
                f"embeddings from model {model_id!r} cannot be matched against a gallery "
                f"enrolled with {self.model_id!r}"
            )
        arr = np.asarray(embeddings, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise GalleryError(f"embeddings must be (n, dim), got shape {arr.shape}")
        if self.dim and arr.shape[0] and arr.shape[1] != self.dim:
            raise GalleryError(
                f"embeddings have {arr.shape[1]} values, the gallery's templates {self.dim} "
                f"(model {self.model_id!r})"
            )
        return arr


class _EmbeddingCache:
    """Enrolled embeddings on disk, keyed by photo hash + model id + quality gates."""

    def __init__(self, path: Path, engine: FaceEngine) -> None:
        self.path = path
        # Enrolment decisions depend on the gates, so they are part of the key.
        self._salt = f"{engine.model_id}|{engine.quality_config.model_dump_json()}"
        self._data: dict[str, tuple[npt.NDArray[np.float32], float]] = {}
        self._dirty = False
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as npz:
                    keys = [str(k) for k in npz["keys"]]
                    embs = np.asarray(npz["embeddings"], np.float32)
                    quals = np.asarray(npz["qualities"], np.float64)
                    self._data = {
                        k: (e, float(q)) for k, e, q in zip(keys, embs, quals, strict=True)
                    }
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable gallery cache %s: %s", path, exc)

    def key(self, photo: Path) -> str | None:
        try:
            digest = hashlib.sha256(photo.read_bytes()).hexdigest()
        except OSError:
            return None  # enrol() will report the unreadable file
        return hashlib.sha256(f"{self._salt}|{digest}".encode()).hexdigest()

    def get(self, key: str) -> tuple[npt.NDArray[np.float32], float] | None:
        """(embedding, quality score) of a photo enrolled before, or None."""
        return self._data.get(key)

    def put(self, key: str, embedding: npt.NDArray[np.float32], quality: float) -> None:
        self._data[key] = (np.asarray(embedding, np.float32), float(quality))
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        keys = sorted(self._data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(
            tmp,
            keys=np.asarray(keys),
            embeddings=np.stack([self._data[k][0] for k in keys]),
            qualities=np.asarray([self._data[k][1] for k in keys]),
        )
        tmp.replace(self.path)  # atomic: a crash never leaves half a cache
