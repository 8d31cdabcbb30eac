"""Fit the case page's "May be registered occupant X" rule on some sites, report it on others.

Usage::

    .venv/bin/python bench/suggestion_rule.py [FACES_DIR] [--fit-seeds 100]
        [--report-seeds 100] [--photos 1 2] [--json]

A case that names a registered occupant X is a *desk check*: the manager
compares the door crops with X and settles it with "It is X", which merges
the case's faces into X's templates. Naming a stranger there is the one error
that must not happen (confirmed, the stranger then opens the door as X), so
the rule that decides when a case names someone
(:func:`server.cases.attribution.suggested_occupant`) has its precision
*measured* here, out of sample:

* the identities of ``FACES_DIR`` are split in two halves (sorted by a hash of
  the name and dealt alternately, people with >= 4 photos and the others
  separately), a *fit* half and a *report* half: no person of the report
  sites was seen while fitting;
* the fit sites use seeds ``0 .. fit-seeds-1``, the report sites seeds from
  ``10,000``: different traffic, different roles;
* each site is :func:`attribution_limits.replay` (the site simulation's
  population and traffic, real augmented captures, the edge threshold,
  perfect clustering) scored with the server's own ``occupant_evidence`` at
  the moment the case rule fires; a cluster the worker attributes on its own
  (``likely_occupant``) opens no case, every other one is a case;
* on the fit cases a grid over (share, centroid, margin) picks the rule that
  names the most residents correctly while naming no stranger (unregistered
  resident or courier) and no resident as someone else, *even with its
  centroid and margin thresholds lowered by* ``--safety`` (0.02): a rule that
  only just clears the closest stranger is not kept. Among equals the
  strictest wins;
* the report sites then count, for that rule, the stranger clusters that
  would have been named (the target is 0, also with the rule 0.02 looser)
  beside the resident cases it settles at the desk, and the same for the
  worker's own attribution;
* the second-template check (:data:`server.cases.attribution.SECOND_TEMPLATE_MIN`,
  an occupant with two registry photos must match both) is part of both
  rules; its threshold is read off the fit half's *residents* (2nd percentile of
  the attributed ones), printed with the report strangers it stops;
* ``interleaving``: whether the edge's recognised days of the occupant X add
  evidence (:func:`attribution_limits.interleaving`: X recognised less on the
  cluster's days than on X's other days), counted on both halves.

Each site first runs ``--warmup-days`` (14) days with its residents only, so a
stranger's case window holds days on which X was recognised before the
stranger came, as at a real site (the simulation otherwise starts everyone on
day 0, which would leave a stranger's window empty of X's other days).

The site is smaller than ``site_simulation.py``'s default (40 residents,
8 unregistered, 20 visitors, 3 couriers, as in issue 13) so that one half of
the eval set (about 71 people with >= 4 usable photos) fills it. Results are
in ``server/README.md`` ("Which occupant a case names").
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from attribution_limits import ClusterRow, Embeddings, _unit, replay  # noqa: E402
from cluster_calibration import load_embeddings  # noqa: E402
from site_simulation import CaptureCache, add_population_args, usable_faces  # noqa: E402

from server.cases.attribution import SECOND_TEMPLATE_MIN  # noqa: E402

log = logging.getLogger("suggestion_rule")
REPORT_FIRST_SEED = 10_000

SHARES = (0.5, 0.6, 0.67, 0.75, 0.8, 0.9, 1.0)
CENTROIDS = tuple(round(0.18 + 0.01 * k, 2) for k in range(23))  # 0.18 .. 0.40
MARGINS = tuple(round(0.01 * k, 2) for k in range(21))  # 0.00 .. 0.20


def split_identities(idents: list[str]) -> tuple[set[str], set[str]]:
    """(fit, report): disjoint halves of the people, balanced for photo-rich people."""
    counts: dict[str, int] = {}
    for name in idents:
        if name:
            counts[name] = counts.get(name, 0) + 1
    fit: set[str] = set()
    report: set[str] = set()
    for rich in (True, False):
        group = sorted(
            (n for n, c in counts.items() if (c >= 4) == rich),
            key=lambda n: hashlib.sha256(n.encode()).hexdigest(),
        )
        for i, name in enumerate(group):
            (fit if i % 2 == 0 else report).add(name)
    return fit, report


@dataclass(frozen=True)
class Rule:
    share: float
    centroid: float
    margin: float

    second: float = SECOND_TEMPLATE_MIN

    def names(self, r: ClusterRow) -> bool:
        return (
            r.members >= 3
            and r.share >= self.share
            and r.centroid >= self.centroid
            and r.margin >= self.margin
            and (r.second_template is None or r.second_template >= self.second)
        )


def loosened(rule: Rule, safety: float) -> Rule:
    """The rule with its similarity thresholds lowered by ``safety``."""
    return Rule(
        rule.share,
        round(rule.centroid - safety, 3),
        round(rule.margin - safety, 3),
        round(rule.second - safety, 3),
    )


def score(rows: list[ClusterRow], rule: Rule, safety: float = 0.02) -> dict[str, int]:
    """What a rule does with the cases (clusters the worker did not attribute)."""
    looser = loosened(rule, safety)
    res = [r for r in rows if r.role == "resident"]
    strangers = [r for r in rows if r.role != "resident"]
    cases = [r for r in res if not r.default_attributes]
    return {
        "resident_clusters": len(res),
        "resident_attributed_right": sum(r.default_attributes and r.own for r in res),
        "resident_attributed_wrong": sum(r.default_attributes and not r.own for r in res),
        "resident_cases": len(cases),
        "resident_cases_named_right": sum(rule.names(r) and r.own for r in cases),
        "resident_cases_named_wrong": sum(rule.names(r) and not r.own for r in cases),
        "resident_cases_not_named": sum(not rule.names(r) for r in cases),
        "stranger_clusters": len(strangers),
        "strangers_attributed": sum(r.default_attributes for r in strangers),
        "strangers_attr_no_2nd_check": sum(r.attributes_without_second for r in strangers),
        "resident_cases_by_2nd_check": sum(
            r.attributes_without_second and not r.default_attributes for r in res
        ),
        "stranger_cases_named": sum(rule.names(r) for r in strangers if not r.default_attributes),
        "stranger_cases_named_looser": sum(
            looser.names(r) for r in strangers if not r.default_attributes
        ),
    }


def fit(rows: list[ClusterRow], safety: float) -> Rule:
    """The rule naming the most fit residents right with no stranger named, with room."""
    best: tuple[tuple[int, float, float, float], Rule] | None = None
    for sh, c, m in itertools.product(SHARES, CENTROIDS, MARGINS):
        rule = Rule(sh, c, m)
        s = score(rows, rule, safety)
        loose = score(rows, loosened(rule, safety), safety)
        if s["resident_cases_named_wrong"] or loose["stranger_cases_named"]:
            continue
        if loose["resident_cases_named_wrong"]:
            continue
        key = (s["resident_cases_named_right"], c, m, sh)
        if best is None or key > best[0]:
            best = (key, rule)
    if best is None:
        raise SystemExit("no rule names nobody wrongly on the fit sites")
    return best[1]


def second_template_summary(
    fit_rows: dict[int, list[ClusterRow]], report_rows: dict[int, list[ClusterRow]], safety: float
) -> dict[str, Any]:
    """Where the worker's attributions sit against the named occupant's second template.

    The check's threshold is read off the fit half's *residents* (the 2nd percentile
    of their second-template similarity, among the clusters attributed without the
    check): the fit half's strangers alone would set it just above the highest of
    them, which the other half's look-alikes pass.
    """

    def second(rows: list[ClusterRow], role: str) -> list[float]:
        return sorted(
            r.second_template
            for r in rows
            if r.attributes_without_second
            and r.second_template is not None
            and (r.role == "resident") == (role == "resident")
        )

    fit_all = [r for rows in fit_rows.values() for r in rows]
    rep_all = [r for rows in report_rows.values() for r in rows]
    res = second(fit_all, "resident")
    pick = res[int(0.02 * (len(res) - 1))] if res else None
    near = [
        r.second_template
        for r in rep_all
        if r.role != "resident" and r.second_template is not None and r.centroid >= 0.27
    ]
    return {
        "fit residents attributed (quantiles 0/1/2/5%)": [
            round(res[int(q * (len(res) - 1))], 3) for q in (0, 0.01, 0.02, 0.05)
        ]
        if res
        else [],
        "fit 2nd percentile (the threshold's basis)": None if pick is None else round(pick, 3),
        "threshold in use": SECOND_TEMPLATE_MIN,
        "fit strangers attributed without it: their second template": [
            round(v, 3) for v in second(fit_all, "stranger")
        ],
        "report strangers attributed without it: their second template": [
            round(v, 3) for v in second(rep_all, "stranger")
        ],
        "report strangers at centroid >= 0.27: highest second template": (
            round(max(near), 3) if near else None
        ),
        f"report strangers attributed with it {safety} looser": sum(
            r.role != "resident"
            and r.attributes_without_second
            and r.second_template is not None
            and r.second_template >= SECOND_TEMPLATE_MIN - safety
            for r in rep_all
        ),
    }


def interleaving_summary(
    fit_rows: dict[int, list[ClusterRow]], report_rows: dict[int, list[ClusterRow]], safety: float
) -> dict[str, Any]:
    """Could 'X is recognised less on the cluster's days' name more resident cases?

    For each case (a cluster the worker did not attribute) the chance
    ``p_independent`` (:func:`attribution_limits.interleaving`) that a cluster
    independent of its best occupant X would overlap X's recognised days as little
    as it does. A rule that names a case when p is at most ``alpha`` and the
    similarity evidence is loose (share >= 0.5, centroid >= 0.20, margin >= 0.03)
    is counted on both halves for a few ``alpha``.
    """

    def cases(rows: dict[int, list[ClusterRow]], role: str) -> list[ClusterRow]:
        return [
            r
            for rs in rows.values()
            for r in rs
            if not r.default_attributes
            and (r.role == "resident") == (role == "resident")
            and "p_independent" in r.extra
        ]

    def loose(r: ClusterRow) -> bool:
        return r.members >= 3 and r.share >= 0.5 and r.centroid >= 0.20 and r.margin >= 0.03

    out: dict[str, Any] = {}
    for half, rows in (("fit", fit_rows), ("report", report_rows)):
        res = sorted(r.extra["p_independent"] for r in cases(rows, "resident"))
        st = sorted(r.extra["p_independent"] for r in cases(rows, "stranger") if loose(r))
        out[f"{half}: resident cases, p quantiles 10/25/50%"] = (
            [round(res[int(q * (len(res) - 1))], 4) for q in (0.1, 0.25, 0.5)] if res else []
        )
        out[f"{half}: strangers in the loose zone ({len(st)}), lowest p"] = [
            round(v, 4) for v in st[:3]
        ]
        for alpha in (0.05, 0.02, 0.01, 0.005):
            named_res = sum(
                loose(r) and r.own and r.extra["p_independent"] <= alpha
                for r in cases(rows, "resident")
            )
            named_st = sum(
                loose(r) and r.extra["p_independent"] <= alpha for r in cases(rows, "stranger")
            )
            out[f"{half}: p <= {alpha}: residents named / strangers named"] = (
                f"{named_res} / {named_st}"
            )
    return out


def sites(
    seeds: range, idents: list[str], primary: Embeddings, args: argparse.Namespace
) -> list[ClusterRow]:
    rows: list[ClusterRow] = []
    for seed in seeds:
        rows.extend(replay(seed, idents, primary, args=args, second=None))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_population_args(ap)
    ap.set_defaults(residents=40, unregistered=8, visitors=20, couriers=3)
    ap.add_argument("--fit-seeds", type=int, default=100)
    ap.add_argument("--report-seeds", type=int, default=100)
    ap.add_argument(
        "--safety",
        type=float,
        default=0.02,
        help="the fitted rule must name no fit stranger even this much looser",
    )
    ap.add_argument(
        "--photos",
        type=int,
        nargs="+",
        default=[1, 2],
        help="registry photos per resident: one rule is fitted on all of them together",
    )
    ap.add_argument(
        "--warmup-days",
        type=int,
        default=14,
        help="days the site runs with its residents only before anyone else arrives",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.edge_looks = 0  # replay(): the edge's memory of door looks is not modelled here
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if args.edge_threshold is None:
        from edge.face.models import BUFFALO_S_THRESHOLD

        args.edge_threshold = BUFFALO_S_THRESHOLD
    from server.cases.attribution import (
        SUGGEST_MIN_MARGIN,
        SUGGEST_MIN_SHARE,
        SUGGEST_MIN_SIMILARITY,
    )

    idents, paths, embs = load_embeddings(args.faces_dir)
    idents = usable_faces(idents, paths, args.min_face_px)
    fit_people, report_people = split_identities(idents)
    primary = Embeddings(_unit(embs), CaptureCache(paths))
    wanted = {(r, k) for r, n in enumerate(idents) if n for k in range(args.variants)}
    primary.captures.compute(wanted)
    fit_idents = [n if n in fit_people else "" for n in idents]
    report_idents = [n if n in report_people else "" for n in idents]
    fit_seeds = range(args.fit_seeds)
    report_seeds = range(REPORT_FIRST_SEED, REPORT_FIRST_SEED + args.report_seeds)
    fit_rows: dict[int, list[ClusterRow]] = {}
    report_rows: dict[int, list[ClusterRow]] = {}
    for photos in args.photos:
        one = argparse.Namespace(**{**vars(args), "enrol_photos": photos})
        fit_rows[photos] = sites(fit_seeds, fit_idents, primary, one)
        report_rows[photos] = sites(report_seeds, report_idents, primary, one)
    # One rule for registers with one photo per resident and with two.
    rule = fit([r for rows in fit_rows.values() for r in rows], args.safety)
    current = Rule(SUGGEST_MIN_SHARE, SUGGEST_MIN_SIMILARITY, SUGGEST_MIN_MARGIN)
    columns: dict[str, dict[str, int]] = {}
    for photos in args.photos:
        columns[f"fit {photos}ph"] = score(fit_rows[photos], rule, args.safety)
        columns[f"report {photos}ph"] = score(report_rows[photos], rule, args.safety)
    for photos in args.photos:
        columns[f"current {photos}ph"] = score(report_rows[photos], current, args.safety)
    rep = [
        r
        for rows in report_rows.values()
        for r in rows
        if r.role != "resident" and not r.default_attributes
    ]
    closest = sorted(rep, key=lambda r: (-r.centroid, -r.margin))[:3]
    second_check = second_template_summary(fit_rows, report_rows, args.safety)
    temporal = interleaving_summary(fit_rows, report_rows, args.safety)
    result: dict[str, Any] = {
        "site": {
            "residents": args.residents,
            "unregistered": args.unregistered,
            "visitors": args.visitors,
            "couriers": args.couriers,
            "days": args.days,
        },
        "fit": {"seeds": [fit_seeds.start, fit_seeds.stop - 1], "people": len(fit_people)},
        "report": {
            "seeds": [report_seeds.start, report_seeds.stop - 1],
            "people": len(report_people),
        },
        "fitted_rule": {"share": rule.share, "centroid": rule.centroid, "margin": rule.margin},
        "current_rule": {
            "share": current.share,
            "centroid": current.centroid,
            "margin": current.margin,
        },
        "columns": columns,
        "second_template_check": second_check,
        "interleaving": temporal,
        "closest_report_strangers": [
            {
                "role": r.role,
                "share": round(r.share, 3),
                "centroid": round(r.centroid, 3),
                "margin": round(r.margin, 3),
                "second_template": (
                    None if r.second_template is None else round(r.second_template, 3)
                ),
            }
            for r in closest
        ],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"site: {args.residents} residents, {args.unregistered} unregistered, "
        f"{args.visitors} visitors, {args.couriers} couriers, {args.days} days"
    )
    print(
        f"fit: seeds {fit_seeds.start}-{fit_seeds.stop - 1}, {len(fit_people)} people; "
        f"report: seeds {report_seeds.start}-{report_seeds.stop - 1}, "
        f"{len(report_people)} other people"
    )
    print(
        f"fitted rule: share >= {rule.share}, centroid >= {rule.centroid}, "
        f"margin >= {rule.margin} (no fit stranger named at -{args.safety}); "
        f"'current' = share >= {current.share}, centroid >= {current.centroid}, "
        f"margin >= {current.margin} on the report sites"
    )
    print(f"\n{'':28s}" + "".join(f"{c:>12s}" for c in columns))
    for key in next(iter(columns.values())):
        print(f"{key:28s}" + "".join(f"{col[key]:12d}" for col in columns.values()))
    print("\nclosest report strangers (cases):", result["closest_report_strangers"])
    print("\nsecond-template check (worker's attribution, >= 2 templates):")
    for key, val in second_check.items():
        print(f"  {key}: {val}")
    print("\ninterleaving with the occupant's recognised days (desk check, resident cases):")
    for key, val in temporal.items():
        print(f"  {key}: {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
