"""Which occupant a case names as "may be" (the case page's one-click merge): the rule's edges."""

from __future__ import annotations

from typing import Any

import pytest

from server.cases.attribution import (
    SUGGEST_MIN_MARGIN,
    SUGGEST_MIN_SHARE,
    SUGGEST_MIN_SIMILARITY,
    suggested_occupant,
)


def _evidence(**changes: Any) -> dict[str, Any]:
    ev = {"occupant_id": 7, "share": 0.8, "centroid_similarity": 0.26, "margin": 0.05}
    return {"evidence": ev | changes}


def test_the_possible_occupant_hint_wins_and_keeps_its_similarity() -> None:
    detail = {"possible_occupant_id": 9, "similarity": 0.31} | _evidence(occupant_id=9)
    hint = suggested_occupant(detail)
    assert hint is not None
    assert (hint.occupant_id, hint.similarity, hint.share) == (9, 0.31, 0.8)
    # The hint names someone else than the votes: no share is claimed for them.
    other = suggested_occupant({"possible_occupant_id": 9, "similarity": 0.31} | _evidence())
    assert other is not None and (other.occupant_id, other.share) == (9, None)


def test_consistent_weak_evidence_names_the_occupant() -> None:
    hint = suggested_occupant(_evidence())
    assert hint is not None
    assert (hint.occupant_id, hint.similarity, hint.share) == (7, 0.26, 0.8)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"share": SUGGEST_MIN_SHARE}, True),
        ({"share": SUGGEST_MIN_SHARE - 0.01}, False),
        ({"centroid_similarity": SUGGEST_MIN_SIMILARITY}, True),
        ({"centroid_similarity": SUGGEST_MIN_SIMILARITY - 0.01}, False),
        ({"margin": SUGGEST_MIN_MARGIN}, True),
        ({"margin": SUGGEST_MIN_MARGIN - 0.001}, False),
        ({"occupant_id": None}, False),
    ],
)
def test_the_evidence_rule_at_its_edges(changes: dict[str, Any], named: bool) -> None:
    assert (suggested_occupant(_evidence(**changes)) is not None) is named


def test_nothing_to_suggest_without_evidence() -> None:
    assert suggested_occupant({}) is None
    assert suggested_occupant({"evidence": None}) is None
