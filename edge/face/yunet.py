"""YuNet face detector (OpenCV zoo, MIT) on ONNX Runtime, shaped like insightface's SCRFD.

:class:`YuNetDetector` has the two things :class:`edge.face.engine.FaceEngine` uses
of insightface's ``SCRFD``: a ``det_thresh`` attribute and
``detect(img, input_size=(w, h)) -> (boxes, kpss)`` with ``boxes`` (n, 5) as
``x1, y1, x2, y2, score`` and ``kpss`` (n, 5, 2), in pixels of ``img``.

The output decoding follows OpenCV's ``FaceDetectorYN`` (modules/objdetect,
face_detect.cpp) for the 2023mar export: for each stride s in (8, 16, 32) the
graph gives per-cell ``cls`` and ``obj`` probabilities (already through a
sigmoid), a box ``(dx, dy, log w, log h)`` and 5 keypoints ``(dx, dy)``, all in
units of the stride from the cell's top-left corner. The score is
``sqrt(cls * obj)``. The input is BGR in 0..255, no mean or scale, padded at the
bottom and right to a multiple of 32.

Keypoint order is the subject's right eye, left eye, nose tip, right and left
mouth corners, i.e. image-left eye first: the same order as SCRFD's, which is
what ``face_align.norm_crop`` and the quality module expect.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.face.errors import ModelPackError

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
NMS_IOU = 0.3
"""OpenCV FaceDetectorYN's default NMS threshold."""
TOP_K = 5000
"""Candidates kept before NMS (FaceDetectorYN's default)."""


class YuNetDetector:
    """YuNet on an ONNX Runtime session whose input height and width are dynamic.

    The session must come from :func:`edge.face.models.loadable_model` with
    ``dynamic_input=True`` (the shipped graph is fixed at 640x640 and its int8
    weights do not load in ONNX Runtime as they are).
    """

    use_kps = True  # FaceEngine checks this on every detector

    def __init__(self, session: Any, *, det_thresh: float = 0.5) -> None:
        self.session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelPackError(f"YuNet graph should have one input, has {len(inputs)}")
        self.input_name: str = inputs[0].name
        names = [o.name for o in session.get_outputs()]
        expected = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        if sorted(names) != sorted(expected):
            raise ModelPackError(f"not a YuNet 2023mar graph: outputs {names}")
        self.output_names = expected
        self.det_thresh = det_thresh

    def detect(
        self, img: npt.NDArray[np.uint8], input_size: tuple[int, int] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Faces in a BGR image: ``(boxes (n, 5), keypoints (n, 5, 2))``, best first.

        The image is scaled (aspect kept) to fit ``input_size`` (default 640x640)
        and padded to a multiple of 32; unlike a square letterbox, a 16:9 frame
        costs only the pixels it has.
        """
        in_w, in_h = input_size or (640, 640)
        h, w = img.shape[:2]
        scale = min(in_w / w, in_h / h)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = img if (rw, rh) == (w, h) else cv2.resize(img, (rw, rh))
        pw, ph = -(-rw // 32) * 32, -(-rh // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :rh, :rw] = np.transpose(resized, (2, 0, 1))
        outs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, kpss = self._decode(outs, pw, ph)
        if boxes.shape[0]:
            boxes[:, :4] /= scale
            kpss /= scale
        return boxes, kpss

    def _decode(
        self, outs: list[npt.NDArray[np.float32]], pw: int, ph: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        n = len(STRIDES)
        all_boxes: list[npt.NDArray[np.float32]] = []
        all_kps: list[npt.NDArray[np.float32]] = []
        for i, stride in enumerate(STRIDES):
            cols, rows = pw // stride, ph // stride
            cls = np.clip(outs[i].reshape(-1), 0.0, 1.0)
            obj = np.clip(outs[i + n].reshape(-1), 0.0, 1.0)
            if cls.size != rows * cols:
                raise ModelPackError(
                    f"YuNet stride {stride}: {cls.size} cells for a {pw}x{ph} input"
                )
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.det_thresh)[0]
            if keep.size == 0:
                continue
            bbox = outs[i + 2 * n].reshape(-1, 4)[keep]
            kps = outs[i + 3 * n].reshape(-1, 5, 2)[keep]
            cx = (keep % cols).astype(np.float32)
            cy = (keep // cols).astype(np.float32)
            ctr_x = (cx + bbox[:, 0]) * stride
            ctr_y = (cy + bbox[:, 1]) * stride
            bw = np.exp(bbox[:, 2]) * stride
            bh = np.exp(bbox[:, 3]) * stride
            boxes = np.stack(
                [ctr_x - bw / 2, ctr_y - bh / 2, ctr_x + bw / 2, ctr_y + bh / 2, score[keep]],
                axis=1,
            )
            pts = np.empty_like(kps)
            pts[:, :, 0] = (kps[:, :, 0] + cx[:, None]) * stride
            pts[:, :, 1] = (kps[:, :, 1] + cy[:, None]) * stride
            all_boxes.append(boxes.astype(np.float32))
            all_kps.append(pts.astype(np.float32))
        if not all_boxes:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes = np.concatenate(all_boxes)
        kpss = np.concatenate(all_kps)
        order = np.argsort(-boxes[:, 4])[:TOP_K]
        boxes, kpss = boxes[order], kpss[order]
        xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
        picked = cv2.dnn.NMSBoxes(xywh, [float(s) for s in boxes[:, 4]], self.det_thresh, NMS_IOU)
        idx = np.asarray(picked, dtype=np.intp).reshape(-1)
        return boxes[idx], kpss[idx]
