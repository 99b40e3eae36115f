"""An experiment's report from its stored impressions and events (GetExperimentReport).

Every number is at the user level: a user is the unit that was randomised, so a variant's
per-user sums (items shown, clicks, conversions, value) are what the statistics compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys_server.config import Experiment, Outcomes
from recsys_server.experiments import interleave, stats
from recsys_server.experiments.attribution import attribute

METRICS = ("ctr", "conversions_per_user", "value_per_user")


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    model: str
    share: float
    users: int
    """Users with at least one impression."""
    impressions: int
    items_shown: int
    clicks: int
    conversions: int
    value: float
    ctr: float
    """Clicks per item shown (ratio of the users' sums); nan without impressions."""
    conversions_per_user: float
    value_per_user: float


@dataclass(frozen=True)
class Compared:
    variant: str
    comparison: stats.Comparison


@dataclass(frozen=True)
class Interleaving:
    model_a: str
    model_b: str
    preference: stats.Preference


@dataclass(frozen=True)
class Report:
    experiment: str
    kind: str
    control: str
    generated_at: float
    """Unix seconds."""
    attribution_hours: float
    variants: tuple[VariantSummary, ...]
    comparisons: tuple[Compared, ...]
    sample_ratio: stats.SampleRatio | None
    """None for kind interleave (every user sees both rankers: there is no split to check)."""
    interleaving: Interleaving | None
    impressions_dropped: int


def outcome_sums(outcomes: Outcomes) -> dict[str, pl.Expr]:
    """Per group of credited events: clicks, conversions and value, by the configured types."""
    kind = pl.col("event_type")
    return {
        "clicks": kind.is_in(list(outcomes.clicks)).sum().cast(pl.Int64),
        "conversions": kind.is_in(list(outcomes.conversions)).sum().cast(pl.Int64),
        "value": pl.when(kind.is_in(list(outcomes.values)))
        .then(pl.col("value"))
        .otherwise(0.0)
        .sum(),
    }


def per_user(impressions: pl.DataFrame, credited: pl.DataFrame, outcomes: Outcomes) -> pl.DataFrame:
    """One row per (variant, user) with an impression: impressions, items shown, clicks,
    conversions, value (zeros when nothing was credited)."""
    shown = impressions.group_by("variant", "user_id").agg(
        impressions=pl.len(),
        items_shown=pl.col("item_ids").list.len().sum().cast(pl.Int64),
    )
    got = credited.group_by("variant", "user_id").agg(**outcome_sums(outcomes))
    return (
        shown.join(got, on=["variant", "user_id"], how="left")
        .with_columns(pl.col("clicks", "conversions").fill_null(0), pl.col("value").fill_null(0.0))
        .sort("variant", "user_id")
    )


def per_user_team(
    impressions: pl.DataFrame, credited: pl.DataFrame, outcomes: Outcomes, names: list[str]
) -> pl.DataFrame:
    """Interleaving: every user saw both rankers in one list, so a variant's row of a user
    counts all their impressions but only the items its team placed and the outcomes on them."""
    base = impressions.group_by("user_id").agg(impressions=pl.len())
    teams = pl.DataFrame({"team": list(range(len(names))), "variant": names})
    shown = (
        impressions.select("user_id", pl.col("teams").cast(pl.List(pl.Int64)).alias("team"))
        .explode("team")
        .drop_nulls("team")
        .group_by("user_id", "team")
        .agg(items_shown=pl.len().cast(pl.Int64))
    )
    got = credited.drop_nulls("team").group_by("user_id", "team").agg(**outcome_sums(outcomes))
    return (
        base.join(teams, how="cross")
        .join(shown, on=["user_id", "team"], how="left")
        .join(got, on=["user_id", "team"], how="left")
        .with_columns(
            pl.col("items_shown", "clicks", "conversions").fill_null(0),
            pl.col("value").fill_null(0.0),
        )
        .drop("team")
        .sort("variant", "user_id")
    )


def _summary(exp: Experiment, name: str, users: pl.DataFrame) -> VariantSummary:
    v = next(v for v in exp.variants if v.name == name)
    n = users.height
    shown = int(users["items_shown"].sum()) if n else 0
    clicks = int(users["clicks"].sum()) if n else 0
    conversions = int(users["conversions"].sum()) if n else 0
    value = float(users["value"].sum()) if n else 0.0
    return VariantSummary(
        variant=name,
        model=v.model,
        share=v.share,
        users=n,
        impressions=int(users["impressions"].sum()) if n else 0,
        items_shown=shown,
        clicks=clicks,
        conversions=conversions,
        value=value,
        ctr=clicks / shown if shown else float("nan"),
        conversions_per_user=conversions / n if n else float("nan"),
        value_per_user=value / n if n else float("nan"),
    )


def _arrays(users: pl.DataFrame) -> dict[str, np.ndarray]:
    return {
        c: users[c].to_numpy().astype(np.float64)
        for c in ("items_shown", "clicks", "conversions", "value")
    }


def compare(control: pl.DataFrame, variant: pl.DataFrame) -> tuple[stats.Comparison, ...]:
    """The three metrics of ``variant`` against ``control`` from their per-user rows."""
    c, t = _arrays(control), _arrays(variant)
    return (
        stats.compare_ratio("ctr", c["clicks"], c["items_shown"], t["clicks"], t["items_shown"]),
        stats.compare_mean("conversions_per_user", c["conversions"], t["conversions"]),
        stats.compare_mean("value_per_user", c["value"], t["value"]),
    )


def preference(
    impressions: pl.DataFrame, credited: pl.DataFrame, outcomes: Outcomes
) -> stats.Preference:
    """Per impression with a click at a known position, the clicks credited to each team
    (`interleave.credit`); per user, the impressions A won, B won and tied."""
    clicks = credited.filter(
        pl.col("event_type").is_in(list(outcomes.clicks)) & pl.col("position").is_not_null()
    )
    clicked = clicks.group_by("recommendation_id").agg(positions=pl.col("position"))
    rows = impressions.select("recommendation_id", "user_id", "teams").join(
        clicked, on="recommendation_id", how="inner"
    )
    per: dict[str, list[int]] = {}
    for user, teams, positions in rows.select("user_id", "teams", "positions").iter_rows():
        a, b = interleave.credit(teams or [], positions)
        if a == b == 0:  # clicks on items no team placed (no teams stored)
            continue
        w = per.setdefault(user, [0, 0, 0])
        w[0 if a > b else 1 if b > a else 2] += 1
    users = sorted(per)
    wins = np.array([per[u] for u in users], dtype=np.int64).reshape(-1, 3)
    return stats.preference(wins[:, 0], wins[:, 1], wins[:, 2])


def build(
    exp: Experiment,
    outcomes: Outcomes,
    window_s: float,
    impressions: pl.DataFrame,
    events: pl.DataFrame,
    dropped: int,
) -> Report:
    """The report of ``exp`` from its impressions and its users' events (the store's frames)."""
    credited = attribute(impressions, events, outcomes, window_s)
    names = [v.name for v in exp.variants]
    if exp.kind == "interleave":
        users = per_user_team(impressions, credited, outcomes, names)
    else:
        users = per_user(impressions, credited, outcomes)
    by_variant = {n: users.filter(pl.col("variant") == n) for n in names}
    control = names[0]
    comparisons: list[Compared] = []
    sample_ratio = None
    interleaving = None
    if exp.kind == "interleave":
        a, b = exp.variants
        interleaving = Interleaving(a.model, b.model, preference(impressions, credited, outcomes))
    else:
        observed = [by_variant[n].height for n in names]
        sample_ratio = stats.sample_ratio(observed, [v.share for v in exp.variants])
        for n in names[1:]:
            comparisons.extend(Compared(n, c) for c in compare(by_variant[control], by_variant[n]))
    return Report(
        experiment=exp.name,
        kind=exp.kind,
        control=control,
        generated_at=time.time(),
        attribution_hours=window_s / 3600.0,
        variants=tuple(_summary(exp, n, by_variant[n]) for n in names),
        comparisons=tuple(comparisons),
        sample_ratio=sample_ratio,
        interleaving=interleaving,
        impressions_dropped=dropped,
    )
