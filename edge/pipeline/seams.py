"""What the stream pipeline needs of the face engine and the gallery (seams for tests and fakes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.face.types import Detection, FaceQuality


class EngineLike(Protocol):
    """The slice of :class:`edge.face.engine.FaceEngine` the pipeline uses (a seam for fakes)."""

    @property
    def model_id(self) -> str: ...

    def detect(
        self, image_bgr: npt.NDArray[np.uint8], *, det_size: int | None = None
    ) -> list[Detection]: ...

    def quality(
        self,
        image_bgr: npt.NDArray[np.uint8],
        det: Detection,
        *,
        aligned: npt.NDArray[np.uint8] | None = None,
    ) -> FaceQuality: ...

    def align(self, image_bgr: npt.NDArray[np.uint8], det: Detection) -> npt.NDArray[np.uint8]: ...

    def embed_aligned(self, crops: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]: ...


class MatchLike(Protocol):
    """One gallery answer: ``identity`` is None below the threshold."""

    @property
    def identity(self) -> str | None: ...

    @property
    def best(self) -> str | None: ...

    @property
    def similarity(self) -> float: ...


class GalleryLike(Protocol):
    """The slice of :class:`edge.gallery.Gallery` the pipeline uses."""

    def match(self, embeddings: npt.NDArray[np.float32]) -> Sequence[MatchLike]: ...
