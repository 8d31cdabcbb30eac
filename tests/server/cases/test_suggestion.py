"""Which occupant a case names as "may be" (the case page's one-click merge): the rule's edges."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from server.cases.attribution import (
    SECOND_TEMPLATE_MIN,
    SUGGEST_MIN_MARGIN,
    SUGGEST_MIN_SHARE,
    SUGGEST_MIN_SIMILARITY,
    OccupantEvidence,
    desk_check,
    suggested_occupant,
)


def _evidence(**changes: Any) -> dict[str, Any]:
    """Evidence just above every threshold of the rule."""
    ev = {
        "occupant_id": 7,
        "share": SUGGEST_MIN_SHARE + 0.05,
        "centroid_similarity": SUGGEST_MIN_SIMILARITY + 0.01,
        "margin": SUGGEST_MIN_MARGIN + 0.01,
    }
    return {"evidence": ev | changes}


def test_a_bare_possible_occupant_hint_names_nobody() -> None:
    # Issue 13: a centroid or exemplar at 0.30 to some template, whatever the other
    # members say, named a stranger on a case. Only the measured rule names anyone.
    scattered = _evidence(occupant_id=9, share=0.3, margin=0.0)
    assert suggested_occupant({"possible_occupant_id": 9, "similarity": 0.31} | scattered) is None
    named = suggested_occupant({"possible_occupant_id": 9, "similarity": 0.31} | _evidence())
    assert named is not None and named.occupant_id == 7  # the evidence's occupant, not the hint


def test_the_decision_recorded_when_the_case_opened_is_kept() -> None:
    strong = _evidence()
    assert suggested_occupant(strong | {"desk_check": None}) is None
    recorded = {"occupant_id": 5, "similarity": 0.3, "share": 0.9}
    hint = suggested_occupant(strong | {"desk_check": recorded})
    assert hint is not None and (hint.occupant_id, hint.similarity, hint.share) == (5, 0.3, 0.9)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({}, True),
        ({"share": SUGGEST_MIN_SHARE - 0.01}, False),
        ({"centroid_similarity": SUGGEST_MIN_SIMILARITY - 0.01}, False),
        ({"margin": SUGGEST_MIN_MARGIN - 0.001}, False),
        ({"second_template_similarity": SECOND_TEMPLATE_MIN}, True),
        ({"second_template_similarity": SECOND_TEMPLATE_MIN - 0.001}, False),
    ],
)
def test_a_new_case_records_its_desk_check(changes: dict[str, Any], named: bool) -> None:
    fields = {
        "occupant_id": 7,
        "members": 6,
        "share": SUGGEST_MIN_SHARE,
        "median_similarity": 0.25,
        "centroid_similarity": SUGGEST_MIN_SIMILARITY,
        "margin": SUGGEST_MIN_MARGIN,
    } | changes
    recorded = desk_check(OccupantEvidence(**fields))
    if not named:
        assert recorded is None
        return
    assert recorded == {
        "occupant_id": 7,
        "similarity": round(SUGGEST_MIN_SIMILARITY, 4),
        "share": round(SUGGEST_MIN_SHARE, 4),
    }
    assert desk_check(dataclasses.replace(OccupantEvidence(**fields), occupant_id=None)) is None


def test_consistent_weak_evidence_names_the_occupant() -> None:
    hint = suggested_occupant(_evidence())
    assert hint is not None
    assert (hint.occupant_id, hint.similarity, hint.share) == (
        7,
        SUGGEST_MIN_SIMILARITY + 0.01,
        SUGGEST_MIN_SHARE + 0.05,
    )


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
        # Two or more templates: the second-best must match too (a look-alike of one
        # registry photo does not match the other). None: one template, no check.
        ({"second_template_similarity": None}, True),
        ({"second_template_similarity": SECOND_TEMPLATE_MIN}, True),
        ({"second_template_similarity": SECOND_TEMPLATE_MIN - 0.001}, False),
    ],
)
def test_the_evidence_rule_at_its_edges(changes: dict[str, Any], named: bool) -> None:
    assert (suggested_occupant(_evidence(**changes)) is not None) is named


def test_nothing_to_suggest_without_evidence() -> None:
    assert suggested_occupant({}) is None
    assert suggested_occupant({"evidence": None}) is None
