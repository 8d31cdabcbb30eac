"""SFace face recogniser (OpenCV zoo, Apache-2.0) on ONNX Runtime, shaped like ArcFaceONNX.

:class:`SFaceRecognizer` has what :class:`edge.face.engine.FaceEngine` uses of
insightface's ``ArcFaceONNX``: ``input_size`` (w, h), ``output_shape`` and
``get_feat(list of aligned BGR crops) -> (n, dim)``.

Input convention, as OpenCV's ``FaceRecognizerSF::feature`` feeds it
(``blobFromImage(aligned, 1, 112x112, 0, swapRB=true)``): RGB, float 0..255,
NCHW. The graph itself subtracts 127.5 and multiplies by 1/128 (its first two
nodes), so no normalisation happens here. Faces are aligned on the same 5-point
template as ArcFace (OpenCV's ``alignCrop`` uses the ArcFace reference points),
so ``face_align.norm_crop`` serves both packs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.face.errors import ModelPackError


class SFaceRecognizer:
    """SFace on an ONNX Runtime session (from :func:`edge.face.models.loadable_model`)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelPackError(
                f"SFace graph should have one input, has {len(inputs)} "
                "(was it repaired by edge.face.models.loadable_model?)"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or shape[2] != shape[3] or not isinstance(shape[2], int):
            raise ModelPackError(f"SFace graph input is not a square image: {shape}")
        self.input_name: str = inputs[0].name
        self.input_size: tuple[int, int] = (int(shape[3]), int(shape[2]))
        self.output_shape: list[Any] = list(session.get_outputs()[0].shape)
        # The batch dimension is symbolic only when the graph was repaired with
        # dynamic_batch; otherwise feed faces one by one.
        self._batched = not isinstance(shape[0], int)

    def get_feat(self, imgs: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Raw (not normalised) embeddings of aligned BGR crops, shape (n, dim)."""
        if not imgs:
            return np.zeros((0, int(self.output_shape[-1])), dtype=np.float32)
        # BGR -> RGB, HWC -> NCHW, 0..255 floats (the graph normalises).
        blob = np.stack([np.transpose(img[:, :, ::-1], (2, 0, 1)) for img in imgs])
        blob = np.ascontiguousarray(blob, dtype=np.float32)
        if self._batched:
            out = self.session.run(None, {self.input_name: blob})[0]
        else:
            out = np.concatenate(
                [self.session.run(None, {self.input_name: b[None]})[0] for b in blob]
            )
        return np.asarray(out, dtype=np.float32).reshape(len(imgs), -1)
