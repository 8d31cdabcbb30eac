"""The one check every face embedding passes before it reaches a matrix.

A template, a whitelisted face or an unknown sighting ends up as a row of a
matrix that the clustering worker multiplies with others of the same model.
One vector of another dimension makes every such product fail (``matmul:
size 4 is different from 512``), and a non-finite or non-unit one silently
breaks every cosine it takes part in. So every door that takes an embedding
in (the registry import, the whitelist, enrolment through
:func:`server.occupants.service.add_template`, sighting ingest) calls
:func:`check_embedding` with the dimension of the model
(:func:`model_dimension`), and refuses what fails with
:class:`InvalidEmbedding` (HTTP 422), naming the item and the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.wire import MAX_EMBEDDING_DIM
from server.errors import InvalidInput
from server.occupants.models import FaceTemplate
from server.sightings.models import Sighting

UNIT_TOLERANCE = 1e-3
"""Largest accepted | ||v|| - 1 |. ArcFace/SFace outputs are L2-normalised, and a
float32 round trip keeps them within ~1e-6 of 1; 1e-3 leaves room for fused or
re-normalised vectors and still refuses anything that was never normalised."""

MODEL_DIMENSIONS: dict[str, int] = {
    "buffalo_s/w600k_mbf": 512,
    "sface/face_recognition_sface_2021dec_int8bq": 128,
}
"""Embedding sizes of the recognisers the edge ships (``edge.face.models``: ``<pack>/<stem>``)."""

_CACHE_KEY = "lintel.model_dimensions"
_SAMPLE = 100
"""Stored sightings looked at to learn the dimension of a model no table or template names."""


class InvalidEmbedding(InvalidInput, ValueError):
    """An embedding of the wrong size, with NaN/inf, or not unit length.

    Also a :class:`ValueError`, so a pydantic validator that calls
    :func:`check_embedding` turns it into an ordinary 422 validation error.
    """

    code = "invalid_embedding"


def check_embedding(
    vec: npt.ArrayLike, *, dim: int | None, what: str = "embedding"
) -> npt.NDArray[np.float32]:
    """``vec`` as a 1-D float32 array, or :class:`InvalidEmbedding` saying why not.

    ``dim`` is the model's embedding size (:func:`model_dimension`; None: not
    known yet, any size up to ``MAX_EMBEDDING_DIM``); ``what`` names the item
    in the message (``"templates[3] (row 7)"``).
    """
    try:
        arr = np.asarray(vec, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidEmbedding(f"{what} is not a vector of numbers") from None
    if arr.ndim != 1:
        raise InvalidEmbedding(f"{what} is not a flat vector (shape {arr.shape})")
    if not 1 <= arr.size <= MAX_EMBEDDING_DIM:
        raise InvalidEmbedding(f"{what} has {arr.size} values (1 to {MAX_EMBEDDING_DIM} allowed)")
    if dim is not None and arr.size != dim:
        raise InvalidEmbedding(f"{what} has {arr.size} values; the model's embeddings have {dim}")
    if not np.all(np.isfinite(arr)):
        raise InvalidEmbedding(f"{what} holds NaN or infinite values")
    norm = float(np.linalg.norm(arr))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        raise InvalidEmbedding(f"{what} is not unit length (norm {norm:.4g})")
    return arr.astype(np.float32)


def check_embeddings(
    vecs: Iterable[npt.ArrayLike], *, dim: int | None, what: str = "embedding"
) -> npt.NDArray[np.float32]:
    """Several embeddings of one model as rows; the first bad one is named by its index."""
    rows = [check_embedding(v, dim=dim, what=f"{what}[{i}]") for i, v in enumerate(vecs)]
    if not rows:
        raise InvalidEmbedding(f"{what}: no embedding given")
    if dim is None and len({r.size for r in rows}) > 1:
        sizes = sorted({r.size for r in rows})
        raise InvalidEmbedding(f"{what}: embeddings of different sizes {sizes}")
    return np.vstack(rows)


def model_dimension(session: Session, model_id: str) -> int | None:
    """The embedding size of ``model_id``: known for the shipped recognisers, else the
    size most of the stored templates (then sightings) of that model have; None when
    nothing of the model is stored yet (its first embedding sets it)."""
    known = MODEL_DIMENSIONS.get(model_id)
    if known is not None:
        return known
    # Cached per session once found: an import checks thousands of templates.
    cache: dict[str, int] = session.info.setdefault(_CACHE_KEY, {})
    if model_id in cache:
        return cache[model_id]
    found = _stored_dimension(session, model_id)
    if found is not None:
        cache[model_id] = found
    return found


def _stored_dimension(session: Session, model_id: str) -> int | None:
    # Most common, not first: a wrong-size template stored before this check
    # existed must not make every good one look wrong.
    size = func.length(FaceTemplate.embedding)
    counts = session.execute(
        select(size, func.count()).where(FaceTemplate.model_id == model_id).group_by(size)
    ).all()
    if counts:
        return _mode({int(n) // 4: int(c) for n, c in counts if n})
    sizes = session.scalars(
        select(func.length(Sighting.embedding))
        .where(Sighting.model_id == model_id, Sighting.embedding.is_not(None))
        .order_by(Sighting.id.desc())
        .limit(_SAMPLE)
    ).all()
    return _mode(Counter(int(n) // 4 for n in sizes if n))


def _mode(counts: dict[int, int]) -> int | None:
    if not counts:
        return None
    # Ties go to the larger size (a real recogniser's, not a stray test vector's).
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
