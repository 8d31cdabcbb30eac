"""Box geometry shared by the face engine, the tracker and the pipeline.

Written once here so that the detector's photo-scale merge, the tracker's
association and the pipeline's follow-region merge agree on what "overlap" is.
"""

from __future__ import annotations

from edge.face.types import BBox, Detection


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two boxes (0 when disjoint or degenerate)."""
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def nms(dets: list[Detection], iou_max: float) -> list[Detection]:
    """Best-score-first non-maximum suppression: drop boxes overlapping a kept one by > ``iou_max``.

    The caller passes the overlap bound (0..1) that fits its source of duplicates.
    """
    keep: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.det_score):
        if all(iou(d.bbox, k.bbox) <= iou_max for k in keep):
            keep.append(d)
    return keep
