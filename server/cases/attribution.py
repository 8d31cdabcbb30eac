"""Is an unknown cluster a registered occupant the edge keeps missing?

The edge reports a sighting as ``unknown`` when its fused embedding is below
the match threshold against every template of the site. A registered resident
whose enrolment photo is far from how they look at the door is missed on
some of their entries; those misses form a cluster that comes back daily and
would become a case, although the person is on the register.

A stranger's cluster and such a resident's cluster look alike from the
centroid alone (both can sit at 0.30-0.45 against some template), so the
decision uses the *members*:

* each member sighting's embedding is compared with every occupant of the
  site (best template per occupant); it *votes* for its best occupant when that
  similarity reaches ``attribute_member_floor``;
* the cluster is attributed to occupant X when X got at least
  ``attribute_min_share`` of all members' votes (members below the floor and
  votes for others count against), the members' centroid matches X at
  ``attribute_centroid_min`` or more, and beats every other occupant by
  ``attribute_margin``.

A resident seen badly points at themselves again and again (the same face,
one template); a stranger's best matches are the maxima of near-zero noise
over all occupants, so they scatter, stay low and have no margin. The hard
case is a look-alike of one occupant: the thresholds in
:class:`server.cases.rules.CaseRule` were chosen on the site simulation (see
its docstring and ``server/README.md``) with margin against both errors.

Calibration (``bench/site_simulation.py --no-attribution --dump-evidence``,
seeds 0-5, every cluster that reached the case rule, evidence at that moment)::

                       clusters  share      centroid     margin
    missed residents   74        1.0 (all)  0.23-0.45    0.04-0.33
    unregistered       61        <= 0.67    <= 0.26      <= 0.09

Defaults share >= 0.60, centroid >= 0.30, margin >= 0.10 attribute 69 of the
74 residents (all to the right person) and none of the 61 unregistered;
0.30 / 0.10 sit 0.04 / 0.01 above the best stranger seen. Lowering them to
catch the last residents (0.23-0.28) would meet strangers head-on: a
courier's cluster in a ``--enrol-photo medoid`` run had share 1.0, centroid
0.26, margin 0.10. At a site with more occupants a stranger's best match
rises but its margin over the runner-up shrinks; a resident's margin
shrinks too, so errors move towards resident cases (safe), not towards lost
strangers. The edge's evidence (days it recognised the occupant) adds a
stricter centroid (0.35, above the 0.33 impostor maximum of the checked
facts) for an occupant with no recognised day in the window.

An attributed cluster opens no case; it is labelled ``likely_occupant`` with
``occupant_id`` set, so a manager can confirm it (its best crops become
templates of the occupant: :func:`server.cases.likely.confirm_likely_occupant`)
or reject it (a case opens). Pure numpy here; the database side is in
:mod:`server.cases.opening` and :mod:`server.cases.likely`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from server.cases.rules import CaseRule


@dataclass(frozen=True, slots=True)
class OccupantEvidence:
    """How consistently a cluster's members point at one occupant of the site."""

    occupant_id: int | None
    """The occupant most members vote for (None: no member reached the floor)."""
    members: int
    """Member embeddings considered."""
    share: float
    """Share of all members whose best occupant is ``occupant_id`` at or above the floor."""
    median_similarity: float
    """Median over all members of their similarity to ``occupant_id``."""
    centroid_similarity: float
    """Cosine between the members' centroid and ``occupant_id`` (best template)."""
    margin: float
    """``centroid_similarity`` minus the centroid's best similarity to any other occupant."""
    occupant_known_days: int = 0
    """Distinct days in the case window on which the edge recognised ``occupant_id``."""
    second_template_similarity: float | None = None
    """Cosine between the members' centroid and ``occupant_id``'s *second-best* template
    (None: they have one template). A resident matches both of their registry photos; a
    look-alike of one photo does not (see :data:`SECOND_TEMPLATE_MIN`)."""

    def as_detail(self) -> dict[str, Any]:
        """JSON-ready form for case events and audit records (rounded)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


NO_EVIDENCE = OccupantEvidence(
    occupant_id=None,
    members=0,
    share=0.0,
    median_similarity=0.0,
    centroid_similarity=0.0,
    margin=0.0,
)


def occupant_evidence(
    members: npt.NDArray[np.float32],
    templates: npt.NDArray[np.float32],
    template_occupants: Sequence[int],
    *,
    member_floor: float,
) -> OccupantEvidence:
    """Score which occupant (if any) a cluster's member embeddings point at.

    ``members`` (n, d) and ``templates`` (m, d) are L2-normalised rows;
    ``template_occupants[j]`` owns template j (occupants may have several).
    """
    if len(members) == 0 or len(templates) == 0:
        return NO_EVIDENCE
    occ_ids = sorted(set(template_occupants))
    col = {o: i for i, o in enumerate(occ_ids)}
    owner = np.array([col[o] for o in template_occupants], dtype=np.int64)
    # Best template per occupant, for every member and for the centroid.
    per_template = members @ templates.T  # (n, m)
    per_occ = np.full((len(members), len(occ_ids)), -np.inf, dtype=np.float32)
    np.maximum.at(per_occ.T, owner, per_template.T)
    centroid = members.sum(axis=0)
    centroid = (centroid / max(float(np.linalg.norm(centroid)), 1e-12)).astype(np.float32)
    cent_t = templates @ centroid
    cent_occ = np.full(len(occ_ids), -np.inf, dtype=np.float32)
    np.maximum.at(cent_occ, owner, cent_t)

    best = per_occ.argmax(axis=1)
    best_sim = per_occ[np.arange(len(members)), best]
    voting = best_sim >= member_floor
    if not voting.any():
        return OccupantEvidence(
            occupant_id=None,
            members=len(members),
            share=0.0,
            median_similarity=float(np.median(best_sim)),
            centroid_similarity=float(cent_occ.max()),
            margin=0.0,
        )
    votes = np.bincount(best[voting], minlength=len(occ_ids))
    # Most votes wins; a tie goes to the occupant the centroid prefers (then lower id).
    top = int(max(range(len(occ_ids)), key=lambda i: (votes[i], cent_occ[i], -i)))
    others = np.delete(cent_occ, top)
    runner_up = float(others.max()) if len(others) else -1.0
    own = np.sort(cent_t[owner == top])
    second = float(own[-2]) if len(own) >= 2 else None
    return OccupantEvidence(
        occupant_id=occ_ids[top],
        members=len(members),
        share=float(votes[top]) / len(members),
        median_similarity=float(np.median(per_occ[:, top])),
        centroid_similarity=float(cent_occ[top]),
        margin=float(cent_occ[top]) - runner_up,
        second_template_similarity=second,
    )


def second_template_agrees(evidence: OccupantEvidence, minimum: float) -> bool:
    """True when the occupant has one template, or the centroid matches their second-best
    template at ``minimum`` or more (see :data:`SECOND_TEMPLATE_MIN`)."""
    return (
        evidence.second_template_similarity is None
        or evidence.second_template_similarity >= minimum
    )


def attributes(evidence: OccupantEvidence, rule: CaseRule) -> bool:
    """True when the evidence is strong enough to call the cluster that occupant.

    An occupant the edge has not recognised once in the case window (away,
    moved out unrecorded, or an enrolment photo so poor it never matches) needs
    a stronger centroid match (``attribute_centroid_min_unseen``): the server
    has no sign that this person passes the door at all. An occupant with two
    or more templates must be matched by the second-best of them too
    (``attribute_second_template_min``, :data:`SECOND_TEMPLATE_MIN`).
    """
    centroid_min = (
        rule.attribute_centroid_min
        if evidence.occupant_known_days > 0
        else max(rule.attribute_centroid_min, rule.attribute_centroid_min_unseen)
    )
    return (
        rule.attribute_weak_matches
        and evidence.occupant_id is not None
        and evidence.members >= rule.attribute_min_members
        and evidence.share >= rule.attribute_min_share
        and evidence.centroid_similarity >= centroid_min
        and evidence.margin >= rule.attribute_margin
        and second_template_agrees(evidence, rule.attribute_second_template_min)
    )


SECOND_TEMPLATE_MIN = 0.22
"""An occupant with two or more templates (two registry photos, or faces merged by
"It is X") is named, by the worker's attribution or a desk check, only when the
members' centroid also matches their *second-best* template at 0.22 or more. A
resident's door captures match both of their registry photos; a stranger who
resembles one photo of X is, to X's other photo, just another face.

Measured (``bench/suggestion_rule.py --fit-seeds 200 --report-seeds 200``, two
registry photos): the residents the worker attributes on the fit sites match their
weaker photo at 0.213 or more (1st percentile 0.219, 2nd 0.22); 0.22 is that 2nd
percentile, chosen on the fit half's *residents* (the fit half's strangers would
have allowed anything above 0.16, which lets report-half strangers through). On the
report sites the strangers the worker named before this check (3 of 2,200, all one
look-alike of one resident's first photo) match that resident's second photo at
0.183-0.204, and no report stranger near the attribution thresholds (centroid >=
0.27) exceeds 0.223. Cost: 11 of 866 resident attributions on the fit sites, 0 of
758 on the report sites, become cases. With one registry photo it does not apply."""

SUGGEST_MIN_SHARE = 0.50
SUGGEST_MIN_SIMILARITY = 0.30
SUGGEST_MIN_MARGIN = 0.09
"""The desk-check rule: a case names a registered occupant X ("May be registered
occupant X", settled at the desk with "It is X") only when at least half of its
members vote for X, the members' centroid matches X at 0.30 or more and beats every
other occupant by 0.09, and (X with two or more templates) matches X's second-best
template at :data:`SECOND_TEMPLATE_MIN`. Otherwise the case names nobody (the safe
default): confirming a stranger would teach the edge to call them X.

Fitted for precision and measured out of sample (``bench/suggestion_rule.py
--fit-seeds 200 --report-seeds 200``: the eval set's people split in two halves, fit
on 200 sites of one half, reported on 200 sites of the other, 1 and 2 registry photos
per resident, 14 days of residents-only traffic before strangers arrive; the rule must
name no fit stranger even with centroid, margin and second-template thresholds 0.02
looser): on the report sites it names 0 of 4,400 stranger clusters, also 0.02 looser
(the closest: share 1.0, centroid 0.303, margin 0.129, kept out by its second
template at 0.183), and 1 of the 6 resident cases; on the fit sites 8 of 159 (one
photo) and 10 of 22 (two photos). Before the second-template check the same fit gave
0.32 / 0.13, which names 0 of the 6 report resident cases. Most residents left as
cases sit at 0.20-0.30 to their registry photo, where strangers also reach: they open
a case that names nobody. The edge's recognised days of X (is X recognised less on
the cluster's days?) did not separate them (``interleaving`` in the bench's output).
Numbers in ``server/README.md``."""


@dataclass(frozen=True, slots=True)
class SuggestedOccupant:
    """The registered occupant a case names as a desk check."""

    occupant_id: int
    similarity: float
    share: float | None


def _names(evidence: Mapping[str, Any]) -> bool:
    """The desk-check rule on an evidence detail (:meth:`OccupantEvidence.as_detail`)."""
    return bool(
        evidence.get("occupant_id")
        and float(evidence.get("share") or 0.0) >= SUGGEST_MIN_SHARE
        and float(evidence.get("centroid_similarity") or 0.0) >= SUGGEST_MIN_SIMILARITY
        and float(evidence.get("margin") or 0.0) >= SUGGEST_MIN_MARGIN
        and (
            evidence.get("second_template_similarity") is None
            or float(evidence["second_template_similarity"]) >= SECOND_TEMPLATE_MIN
        )
    )


def desk_check(evidence: OccupantEvidence) -> dict[str, Any] | None:
    """What a new case's 'opened' event records under ``desk_check``: the occupant it
    names (None: it names nobody). Recorded once, so the case page and the API show
    the decision made when the case opened."""
    detail = evidence.as_detail()
    if not _names(detail):
        return None
    return {
        "occupant_id": int(detail["occupant_id"]),
        "similarity": detail["centroid_similarity"],
        "share": detail["share"],
    }


def suggested_occupant(opened_detail: Mapping[str, Any]) -> SuggestedOccupant | None:
    """The occupant a case's 'opened' event names as a desk check, if any.

    A case opened with a recorded ``desk_check`` keeps that decision. An older case
    gets the same rule applied to its recorded evidence. The bare
    ``possible_occupant_id`` hint (a centroid or exemplar at 0.30 to some template,
    whatever the other members say) names nobody on its own: strangers reach 0.30.
    """
    if "desk_check" in opened_detail:
        named = opened_detail.get("desk_check")
        if not named:
            return None
        return SuggestedOccupant(
            occupant_id=int(named["occupant_id"]),
            similarity=float(named.get("similarity") or 0.0),
            share=float(named["share"]) if named.get("share") is not None else None,
        )
    evidence = opened_detail.get("evidence") or {}
    if not _names(evidence):
        return None
    return SuggestedOccupant(
        occupant_id=int(evidence["occupant_id"]),
        similarity=float(evidence["centroid_similarity"]),
        share=float(evidence["share"]),
    )
