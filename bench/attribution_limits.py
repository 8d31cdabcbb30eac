"""How well can the server tell a registered resident the edge misses from a stranger?

Usage::

    .venv/bin/python bench/attribution_limits.py [FACES_DIR] [--seeds 100]
        [--edge-looks 32] [--second-model sface] [--json]

Issue 5 asks for two things at once: every unregistered resident becomes a
case, and no registered resident ever does. A registered resident becomes a
case when the edge misses them (their door captures fall below the match
threshold against their one registry photo) on three days or more, and the
server cannot attribute that cluster back to them
(:mod:`server.cases.attribution`). This script measures how far apart the two
kinds of cluster are, on the evidence the server has, so that the trade-off
is a number and not an opinion.

It replays :mod:`site_simulation`'s population and traffic (same
``build_population``, ``day_entries``, augmented captures, edge threshold)
without the server, and with *perfect clustering*: each person's unknown
captures are one cluster (the best case for the server). At the moment the
case rule fires (third distinct day) it scores each cluster with the server's
own :func:`server.cases.attribution.occupant_evidence` against the site's
registry templates, and reports:

* quantiles of the cluster-to-occupant centroid similarity and margin for
  *missed residents* (registered residents whose misses reached the case rule)
  and *strangers* (unregistered residents and couriers that reached it);
* resident cases left and strangers wrongly attributed (each one an
  unregistered resident who would never become a case) under the default
  :class:`server.cases.rules.CaseRule`, and the best any threshold grid on
  (share, centroid, margin) reaches with zero strangers attributed;
* the same with extra evidence the system could collect: ``--edge-looks N``
  (the edge remembers the last N captures it recognised of each occupant, on
  the box, and reports for an unknown capture its best occupant over registry
  photo and those looks) and ``--second-model PACK`` (a second recogniser, e.g.
  the ``sface`` pack, scores the same clusters against its own templates).

The grid optimum is chosen on the same data it is scored on, so it is an
upper bound of what such a rule would do on faces it has not seen.

Measured on ``../shared/eval/faces`` (LFW, 177 people), 100 seeds, defaults
(60 residents, 10 unregistered, 60 visitors, 5 couriers, 21 days),
``--edge-looks 32 --second-model sface``: 1,131 resident clusters and 1,500
stranger clusters reached the case rule::

    cluster vs occupant              min    p5   p50   p95   max
    centroid     missed residents   0.20  0.22  0.26  0.30  0.42
                 strangers          0.04  0.11  0.16  0.23  0.30
    margin       missed residents   0.00  0.04  0.08  0.17  0.25
                 strangers         -0.12 -0.02  0.00  0.07  0.17

    rule (best of its family, in-sample)   resident cases  strangers attributed
    default CaseRule (server today)        55              0 of 1,500
    (share, centroid, margin) grid         52              0
    default + edge looks (32)              16              0
    default + second model (sface)          7              0
    any of them, 0 resident cases          never (not with 0 strangers attributed)

The residents left by the default rule are four people whose door look is as
far from their one registry photo as the closest strangers come to anyone:
Larry_Brown (36 of the 55: one photo of him, 0.30 from his registry photo and
0.30-0.41 from his others), Christina_Aguilera (15: 0.20-0.22 from every other
photo of her), Elton_John (3), Colin_Montgomerie (1). Face evidence on the
registry photo alone cannot separate them from strangers (the two centroid
ranges overlap from 0.20 to 0.30); the edge's memory of how an occupant
looked at the door and a second recogniser each narrow it, neither closes it.

Two registry photos per resident (``--enrol-photos 2``, each its own
template) change the picture: 457 resident clusters reach the rule instead of
1,131, and the default rule leaves 1 resident case in 100 runs (Larry_Brown)
but attributes 1 stranger cluster of 1,500 (more templates, more chances for
a look-alike). With the second-template check (the centroid must match the
occupant's second-best template at >= 0.22, ``CaseRule``) it attributes 0 of
1,500 and leaves 5 resident cases (Christina_Aguilera 4, Larry_Brown 1).
``site_simulation.py --enrol-photos 2``, seeds 0-5: 0 resident cases, 10/10
unregistered found, 0 visitor cases (before that check).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cluster_calibration import load_embeddings  # noqa: E402
from site_simulation import (  # noqa: E402
    CaptureCache,
    Person,
    add_population_args,
    build_population,
    day_entries,
    usable_faces,
)

log = logging.getLogger("attribution_limits")
Vec = npt.NDArray[np.float32]


def _unit(x: Vec) -> Vec:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass
class ClusterRow:
    """One person's unknown cluster at the moment the case rule fires."""

    seed: int
    name: str
    role: str
    members: int
    own: bool  # resident: the evidence names this very resident
    share: float
    centroid: float
    margin: float
    default_attributes: bool
    known_days: int = 0
    """Days of the case window on which the edge recognised the occupant named."""
    second_template: float | None = None
    """Centroid vs the named occupant's second-best template (None: one template)."""
    attributes_without_second: bool = False
    """What the worker's attribution decided before the second-template check."""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Embeddings:
    """Photo embeddings (enrolment) and capture embeddings for one model."""

    photos: Vec
    captures: CaptureCache

    def capture(self, photo: int, variant: int) -> Vec | None:
        e = self.captures.get(photo, variant)
        return None if e is None else _unit(e)


def interleaving(
    *, cluster_days: set[int], occupant_days: set[int], due: int, window_days: int
) -> dict[str, float]:
    """Do the cluster's days *replace* days on which the edge recognised occupant X?

    If the cluster is X missed by the edge, X's missed entries replace recognised
    ones: on the cluster's days X is recognised less often than on X's other days
    (a day on which X was missed at every passage has no recognised entry). A
    look-alike stranger comes and goes independently of X. ``p_independent`` is
    the chance, were they independent, that X is recognised on at most as many of
    the cluster's days as observed, given X's rate on the window's other days
    (Laplace-smoothed): a small value is evidence that the cluster is X.
    Days run over the case window ending on ``due`` (the day the case rule fires).
    """
    lo = due - window_days
    cdays = {d for d in cluster_days if lo < d <= due}
    kdays = {d for d in occupant_days if lo < d <= due}
    span = min(window_days, due + 1)
    other = span - len(cdays)
    both = len(cdays & kdays)
    rate = (len(kdays - cdays) + 1) / (other + 2)
    c = len(cdays)
    p = sum(math.comb(c, j) * rate**j * (1 - rate) ** (c - j) for j in range(both + 1))
    return {
        "cluster_days": float(c),
        "occupant_days": float(len(kdays)),
        "both_days": float(both),
        "p_independent": float(p),
    }


def replay(
    seed: int,
    idents: list[str],
    primary: Embeddings,
    *,
    args: argparse.Namespace,
    second: Embeddings | None,
) -> list[ClusterRow]:
    """One simulated site: the clusters that reach the case rule, with their evidence."""
    from server.cases.attribution import attributes, occupant_evidence
    from server.cases.rules import CaseRule

    rule = CaseRule()
    rng = np.random.default_rng(seed)
    people: list[Person] = build_population(
        idents,
        rng,
        residents=args.residents,
        unregistered=args.unregistered,
        visitors=args.visitors,
        couriers=args.couriers,
        days=args.days,
        embs=primary.photos,
        enrol_photos=args.enrol_photos,
    )
    residents = [p for p in people if p.role == "resident"]
    index = {p.name: i for i, p in enumerate(residents)}
    occ = list(range(len(residents)))
    # One template per registry photo; an occupant's similarity is the best of theirs.
    owners = [o for o, p in enumerate(residents) for _ in [p.enrol_photo, *p.enrol_more]]
    templates = np.stack(
        [primary.photos[ph] for p in residents for ph in [p.enrol_photo, *p.enrol_more]]
    )
    owner_of = np.array(owners)

    def per_occupant(per_template: Vec) -> Vec:
        out = np.full(len(occ), -1.0, dtype=np.float32)
        np.maximum.at(out, owner_of, per_template)
        return out

    known_days: dict[int, set[int]] = {o: set() for o in occ}
    looks: dict[int, list[Vec]] = {o: [] for o in occ}
    unknown: dict[int, list[tuple[int, Vec, Vec | None, int, float, float]]] = {
        i: [] for i in range(len(people))
    }
    # ``warmup_days``: the site runs with its residents only before anyone else
    # arrives, so a stranger's case window holds days on which X was recognised
    # before the stranger came (as at a real site), not the simulation's day 0.
    warmup = int(getattr(args, "warmup_days", 0))
    for day in range(warmup + args.days):
        for i, p in enumerate(people):
            if day < warmup and p.role != "resident":
                continue
            for _at, photo, variant in day_entries(
                p, day - warmup if p.role == "visitor" else day, rng, variants=args.variants
            ):
                e = primary.capture(photo, variant)
                if e is None:
                    continue  # no face, or refused by the quality gate: never sent
                sims = per_occupant(templates @ e)
                j = int(sims.argmax())
                if sims[j] >= args.edge_threshold:
                    known_days[j].add(day)
                    if args.edge_looks:
                        looks[j] = (looks[j] + [e])[-args.edge_looks :]
                    continue
                # The edge's hint: best occupant over registry photo and remembered looks.
                hint = sims.copy()
                if args.edge_looks:
                    for o in occ:
                        if looks[o]:
                            hint[o] = max(hint[o], float((np.stack(looks[o]) @ e).max()))
                top = int(hint.argmax())
                runner_up = float(np.delete(hint, top).max())
                e2 = second.capture(photo, variant) if second is not None else None
                unknown[i].append((day, e, e2, top, float(hint[top]), float(hint[top]) - runner_up))
    rows: list[ClusterRow] = []
    second_templates = (
        np.stack([second.photos[p.enrol_photo] for p in residents if p.enrol_photo is not None])
        if second is not None
        else None
    )
    for i, p in enumerate(people):
        if p.role not in ("resident", "unregistered", "courier"):
            continue
        days = sorted({u[0] for u in unknown[i]})
        if len(days) < rule.min_days:
            continue
        due = days[rule.min_days - 1]
        members = [u for u in unknown[i] if u[0] <= due]
        mem = np.stack([u[1] for u in members])
        ev = occupant_evidence(mem, templates, owners, member_floor=rule.attribute_member_floor)
        if ev.occupant_id is not None:
            kd = {d for d in known_days[ev.occupant_id] if due - rule.window_days < d <= due}
            ev = dataclasses.replace(ev, occupant_known_days=len(kd))
        row = ClusterRow(
            seed=seed,
            name=str(p.name),
            role=p.role,
            members=len(mem),
            own=p.role == "resident" and ev.occupant_id == index[p.name],
            share=ev.share,
            centroid=ev.centroid_similarity,
            margin=ev.margin,
            default_attributes=attributes(ev, rule),
            known_days=ev.occupant_known_days,
            second_template=ev.second_template_similarity,
            attributes_without_second=attributes(
                dataclasses.replace(ev, second_template_similarity=None), rule
            ),
        )
        x = ev.occupant_id
        if x is not None:
            row.extra.update(
                interleaving(
                    cluster_days={u[0] for u in members},
                    occupant_days=known_days[x],
                    due=due,
                    window_days=rule.window_days,
                )
            )
        if x is not None and args.edge_looks:
            pointing = [u for u in members if u[3] == x]
            row.extra["looks_share"] = len(pointing) / len(members)
            row.extra["looks_median"] = float(np.median([u[4] for u in pointing] or [0.0]))
            row.extra["looks_margin"] = float(
                np.median([u[5] if u[3] == x else 0.0 for u in members])
            )
        if x is not None and second_templates is not None:
            m2 = [u[2] for u in members if u[2] is not None]
            if m2 and np.linalg.norm(second_templates[x]) > 0.5:
                c2 = _unit(np.sum(m2, axis=0))
                s2 = second_templates @ c2
                row.extra["second_centroid"] = float(s2[x])
                row.extra["second_margin"] = float(s2[x] - np.delete(s2, x).max())
                row.extra["second_top"] = float(int(s2.argmax()) == x)
        rows.append(row)
    return rows


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.quantile(np.array(values), [0.0, 0.05, 0.5, 0.95, 1.0])
    return " ".join(f"{v:5.2f}" for v in q)


def _count(rows: list[ClusterRow], decide: Any) -> tuple[int, int, int]:
    """(resident cases, residents given to the wrong occupant, strangers attributed)."""
    res = [r for r in rows if r.role == "resident"]
    strangers = [r for r in rows if r.role != "resident"]
    left = sum(not decide(r) for r in res)
    wrong = sum(decide(r) and not r.own for r in res)
    lost = sum(bool(decide(r)) for r in strangers)
    return left, wrong, lost


def _frontier(rows: list[ClusterRow], family: list[Any]) -> dict[str, Any]:
    """Within ``family``: fewest resident cases with no stranger attributed, and fewest
    strangers attributed with no resident case (None: no rule of the family gets there)."""
    at_zero: tuple[int, Any] = (10**9, None)
    to_none: tuple[int, Any] | None = None
    for params, decide in family:
        left, wrong, lost = _count(rows, decide)
        if wrong:
            continue
        if lost == 0 and left < at_zero[0]:
            at_zero = (left, params)
        if left == 0 and (to_none is None or lost < to_none[0]):
            to_none = (lost, params)
    return {
        "resident_cases_at_0_attributed": at_zero[0],
        "params": at_zero[1],
        "attributed_for_0_resident_cases": None if to_none is None else to_none[0],
    }


def families(rows: list[ClusterRow]) -> dict[str, list[Any]]:
    """Rule families to search: (params, decide(row) -> bool)."""
    out: dict[str, list[Any]] = {}
    grid = list(
        itertools.product(
            [0.3, 0.4, 0.5, 0.6, 0.67, 0.75, 1.0],
            [round(0.14 + 0.02 * k, 2) for k in range(11)],
            [round(-0.02 + 0.02 * k, 2) for k in range(10)],
        )
    )

    def base(sh: float, c: float, m: float) -> Any:
        return lambda r: r.members >= 3 and r.share >= sh and r.centroid >= c and r.margin >= m

    out["(share, centroid, margin) grid"] = [(g, base(*g)) for g in grid]
    if any("looks_share" in r.extra for r in rows):
        looks = itertools.product([0.6, 0.8, 1.0], [0.26, 0.28, 0.30, 0.32], [0.08, 0.10, 0.13])

        def with_looks(a: float, b: float, c: float) -> Any:
            return lambda r: (
                r.default_attributes
                or (
                    r.extra.get("looks_share", 0.0) >= a
                    and r.extra.get("looks_median", 0.0) >= b
                    and r.extra.get("looks_margin", 0.0) >= c
                )
            )

        out["default + edge looks"] = [(g, with_looks(*g)) for g in looks]
    if any("second_centroid" in r.extra for r in rows):
        sec = itertools.product([0.6, 0.67, 1.0], [0.32, 0.34, 0.36, 0.38], [0.06, 0.08, 0.10])

        def with_second(a: float, b: float, c: float) -> Any:
            return lambda r: (
                r.default_attributes
                or (
                    r.share >= a
                    and r.extra.get("second_top", 0.0) == 1.0
                    and r.extra.get("second_centroid", -1.0) >= b
                    and r.extra.get("second_margin", -1.0) >= c
                )
            )

        out["default + second model"] = [(g, with_second(*g)) for g in sec]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_population_args(ap)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--edge-looks", type=int, default=0, help="captures the edge remembers per occupant"
    )
    ap.add_argument("--second-model", default=None, help="a second pack, e.g. sface")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.edge_threshold is None:
        from edge.face.models import BUFFALO_S_THRESHOLD

        args.edge_threshold = BUFFALO_S_THRESHOLD
    idents, paths, embs = load_embeddings(args.faces_dir)
    idents = usable_faces(idents, paths, args.min_face_px)
    wanted = {(r, k) for r, n in enumerate(idents) if n for k in range(args.variants)}
    primary = Embeddings(_unit(embs), CaptureCache(paths))
    primary.captures.compute(wanted)
    second = None
    if args.second_model:
        cache = CaptureCache(paths, pack=args.second_model)
        cache.compute(wanted | {(r, -1) for r, n in enumerate(idents) if n})
        dim = next(
            e.shape[0]
            for e in (cache.get(r, -1) for r, n in enumerate(idents) if n)
            if e is not None
        )
        photos = np.zeros((len(paths), dim), dtype=np.float32)
        for r, n in enumerate(idents):
            e = cache.get(r, -1) if n else None
            if e is not None:
                photos[r] = _unit(e)
        second = Embeddings(photos, cache)
    rows: list[ClusterRow] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows.extend(replay(seed, idents, primary, args=args, second=second))
    res = [r for r in rows if r.role == "resident"]
    strangers = [r for r in rows if r.role != "resident"]
    missed = [r for r in res if not r.default_attributes]
    left, wrong, lost = _count(rows, lambda r: r.default_attributes)
    result: dict[str, Any] = {
        "seeds": args.seeds,
        "resident_clusters": len(res),
        "stranger_clusters": len(strangers),
        "default_rule": {
            "resident_cases": left,
            "wrong_occupant": wrong,
            "strangers_attributed": lost,
        },
        "residents_left": dict(Counter(str(r.name) for r in missed).most_common()),
        "families": {},
    }
    for name, fam in families(rows).items():
        result["families"][name] = _frontier(rows, fam)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{args.seeds} seeds: {len(res)} resident clusters reached the case rule, "
        f"{len(strangers)} stranger clusters (unregistered + couriers)"
    )
    print("\ncluster vs occupant   min   p5    p50   p95   max")
    print(f"centroid  missed res  {_quantiles([r.centroid for r in missed])}")
    print(f"          strangers   {_quantiles([r.centroid for r in strangers])}")
    print(f"margin    missed res  {_quantiles([r.margin for r in missed])}")
    print(f"          strangers   {_quantiles([r.margin for r in strangers])}")
    for key in ("looks_median", "looks_margin", "second_centroid", "second_margin"):
        a = [r.extra[key] for r in missed if key in r.extra]
        b = [r.extra[key] for r in strangers if key in r.extra]
        if a or b:
            print(f"{key:16s}missed {_quantiles(a)} | strangers {_quantiles(b)}")
    print("\nrule (best of its family, chosen in-sample)  resident cases  strangers attributed")
    print(f"{'default CaseRule (server today)':44s}{left:15d}  {lost:d} of {len(strangers)}")
    for name, best in result["families"].items():
        print(f"{name:44s}{best['resident_cases_at_0_attributed']:15d}  0  {best['params']}")
        need = best["attributed_for_0_resident_cases"]
        print(f"{'':44s}{0:15d}  {'never in this family' if need is None else need}")
    print("\nresidents left by the default rule:", result["residents_left"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
