"""The Experiments page's data: which experiments the server has (from its metrics: there is
no RPC listing them), and an experiment report (`recsys_client.ExperimentReport`) as table
rows and chart frames."""

from __future__ import annotations

import math
import urllib.request

import pandas as pd

from recsys_client import ExperimentReport
from recsys_dashboard import promtext

METRICS = {
    "ctr": "CTR",
    "conversions_per_user": "conversions per user",
    "value_per_user": "value per user",
}
NONE = "none"  # the metrics' experiment label outside any experiment


def names(text: str) -> list[str]:
    """The experiments named in the server's metrics text: the impression series exist (at 0)
    for every configured experiment from the start, and `recsys_recommendations_total`'s
    variant label reads ``experiment/variant``. An experiment removed by a configuration
    reload stays listed until the server restarts."""
    found = set()
    for s in promtext.parse(text):
        if s.name in ("recsys_impressions_total", "recsys_outcomes_total"):
            found.add(s.labels.get("experiment", NONE))
        elif s.name == "recsys_recommendations_total":
            found.add(s.labels.get("variant", NONE).split("/", 1)[0])
    found.discard(NONE)
    found.discard("")
    return sorted(found)


def configured(url: str, timeout: float = 2.0) -> list[str]:
    """`names` of the metrics at ``url``; raises OSError when it cannot be read."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return names(r.read().decode("utf-8", "replace"))


def num(value: float, fmt: str = ".4f") -> str:
    """A number, or "–" when it could not be estimated (nan)."""
    return "–" if value is None or not math.isfinite(value) else format(value, fmt)


def interval(low: float, high: float, fmt: str = ".4f") -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{format(low, fmt)}, {format(high, fmt)}]"


def variant_rows(r: ExperimentReport) -> list[list[str]]:
    """variant, model, share, users, impressions, clicks, CTR, conversions / user,
    value / user (plain text)."""
    return [
        [
            v.variant + (" (control)" if v.variant == r.control != "control" else ""),
            v.model,
            f"{v.share:.2f}",
            f"{v.users:,}",
            f"{v.impressions:,}",
            f"{v.clicks:,}",
            num(v.ctr),
            num(v.conversions_per_user, ".3f"),
            num(v.value_per_user, ".3f"),
        ]
        for v in r.variants
    ]


def comparison_rows(r: ExperimentReport) -> list[list[str]]:
    """variant, metric, control, variant, difference (relative), 95% interval, always-valid
    95% interval, p, significant, MDE (plain text)."""
    out = []
    for c in r.comparisons:
        rel = f" ({c.relative_difference:+.1%})" if math.isfinite(c.relative_difference) else ""
        out.append(
            [
                c.variant,
                METRICS.get(c.metric, c.metric),
                num(c.control_value),
                num(c.variant_value),
                num(c.difference, "+.4f") + rel,
                interval(c.ci95.low, c.ci95.high),
                interval(c.always_valid.low, c.always_valid.high),
                num(c.p_value, ".3g"),
                "yes" if c.significant else "no",
                num(c.mde_relative, ".1%"),
            ]
        )
    return out


def comparison_frame(r: ExperimentReport, metric: str) -> pd.DataFrame:
    """One metric's differences to the control, for `charts.intervals`: label, estimate and
    the fixed (ci) and always-valid (av) interval ends; nan where not estimable."""
    rows = [
        {
            "label": c.variant,
            "estimate": c.difference,
            "ci_low": c.ci95.low,
            "ci_high": c.ci95.high,
            "av_low": c.always_valid.low,
            "av_high": c.always_valid.high,
        }
        for c in r.comparisons
        if c.metric == metric
    ]
    return pd.DataFrame(
        rows, columns=["label", "estimate", "ci_low", "ci_high", "av_low", "av_high"]
    )


def preference_frame(r: ExperimentReport) -> pd.DataFrame:
    """The interleaving preference for model a with its intervals (one row)."""
    i = r.interleaving
    if i is None:
        return comparison_frame(r, "")  # empty, same columns
    return pd.DataFrame(
        [
            {
                "label": f"{i.model_a} over {i.model_b}",
                "estimate": i.preference_a,
                "ci_low": i.ci95.low,
                "ci_high": i.ci95.high,
                "av_low": i.always_valid.low,
                "av_high": i.always_valid.high,
            }
        ]
    )


def users(r: ExperimentReport) -> int:
    """Users in the experiment: the sum over A/B variants; for interleaving every variant row
    counts every user (each saw both rankers)."""
    return _total(r, [v.users for v in r.variants])


def impressions(r: ExperimentReport) -> int:
    """Impressions in the experiment (counted like `users`)."""
    return _total(r, [v.impressions for v in r.variants])


def _total(r: ExperimentReport, counts: list[int]) -> int:
    if not counts:
        return 0
    return max(counts) if r.kind == "interleave" else sum(counts)


def verdict(r: ExperimentReport) -> str:
    """One line for interleaving: which model the users prefer, or that it is not decided
    (the always-valid interval still holds 0.5)."""
    i = r.interleaving
    if i is None:
        return ""
    lo, hi = i.always_valid.low, i.always_valid.high
    decided = i.wins_a + i.wins_b
    if decided == 0:
        return "No click on an interleaved list has favoured either ranker yet."
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (
            f"{decided:,} impressions decided so far, but the intervals cannot be estimated "
            "yet (too few users, or every decision went the same way): no decision."
        )
    if lo > 0.5:
        return f"Users prefer {i.model_a} (the always-valid interval is above 0.5)."
    if hi < 0.5:
        return f"Users prefer {i.model_b} (the always-valid interval is below 0.5)."
    return "No decision yet: the always-valid interval still contains 0.5 (no preference)."
