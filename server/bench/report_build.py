"""How long an experiment report takes to build from store frames, against a plain-Python
attribution (dicts and bisect) of the same events as the baseline.

    python server/bench/report_build.py [--impressions 1000000] [--events 200000] [--k 10]

Synthetic frames shaped like the store's (`DataStore.impressions` / `experiment_events`):
100,000 users, 5,000 items, two variants, impressions over a week, events 0-1 h after an
impression of their item, half of them with its recommendation_id. Prints seconds (medians of
``--repeat`` runs) for `attribution.attribute` and for the whole `report.build` (attribution,
per-user sums, statistics), for the baseline, and the baseline / attribute ratio. Both
attributions must agree.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import time

import numpy as np
import polars as pl

from recsys_server.config import Experiment, Outcomes, Variant
from recsys_server.experiments import report
from recsys_server.experiments.attribution import attribute

OUTCOMES = Outcomes()
WINDOW = 24 * 3600.0
EXP = Experiment("bench", (Variant("control", "hybrid", 0.5), Variant("treat", "svd", 0.5)))


def frames(n: int, m: int, k: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    user_no = rng.integers(0, 100_000, n)
    users = user_no.astype(str)
    ts = np.sort(rng.uniform(0, 7 * 86_400, n))
    items = rng.integers(0, 5_000, (n, k)).astype(str)
    imps = pl.DataFrame(
        {
            "recommendation_id": np.char.add("r", np.arange(n).astype(str)),
            "user_id": users,
            "experiment": "bench",
            "variant": np.where(user_no % 2 == 0, "control", "treat"),  # sticky per user
            "model": "m",
            "version": "v",
            "ts": ts,
            "item_ids": pl.Series(items.ravel()).reshape((n, k)).cast(pl.List(pl.String)),
        }
    ).with_columns(
        scores=pl.lit([1.0] * k, pl.List(pl.Float64)), teams=pl.lit([], pl.List(pl.Int64))
    )
    pick = rng.integers(0, n, m)
    pos = rng.integers(0, k, m)
    explicit = rng.random(m) < 0.5
    evs = (
        pl.DataFrame(
            {
                "event_id": np.char.add("e", np.arange(m).astype(str)),
                "user_id": users[pick],
                "item_id": items[pick, pos],
                "event_type": np.where(rng.random(m) < 0.9, "click", "purchase"),
                "ts": ts[pick] + rng.uniform(0, 3600, m),
                "rating": pl.Series([None] * m, dtype=pl.Float64),
                "recommendation_id": np.char.add("r", pick.astype(str)),
                "position": pos + 1,
                "explicit": explicit,
            }
        )
        .with_columns(pl.when("explicit").then(pl.col("recommendation_id", "position")).name.keep())
        .drop("explicit")
    )
    return imps, evs


def baseline(imps: pl.DataFrame, evs: pl.DataFrame) -> dict[str, str]:
    """The same rules in plain Python: event_id -> credited recommendation_id."""
    by_id: dict[str, str] = {}
    shown: dict[tuple[str, str], tuple[list[float], list[str]]] = {}
    for rid, user, ts, items in imps.select(
        "recommendation_id", "user_id", "ts", "item_ids"
    ).iter_rows():
        by_id[rid] = user
        for item in items:
            times, rids = shown.setdefault((user, item), ([], []))
            times.append(ts)  # impressions come in time order
            rids.append(rid)
    out = {}
    for eid, user, item, ts, rid in evs.select(
        "event_id", "user_id", "item_id", "ts", "recommendation_id"
    ).iter_rows():
        if rid is not None and by_id.get(rid) == user:
            out[eid] = rid
            continue
        got = shown.get((user, item))
        if got is None:
            continue
        i = bisect.bisect_right(got[0], ts) - 1
        if i >= 0 and ts - got[0][i] <= WINDOW:
            out[eid] = got[1][i]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impressions", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    imps, evs = frames(a.impressions, a.events, a.k)
    runs_attr, runs_report = [], []
    for _ in range(a.repeat):  # the median of a few: the machine is shared
        t = time.perf_counter()
        credited = attribute(imps, evs, OUTCOMES, WINDOW)
        runs_attr.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = report.build(EXP, OUTCOMES, WINDOW, imps, evs, dropped=0)
        runs_report.append(time.perf_counter() - t)
    t_attr, t_report = statistics.median(runs_attr), statistics.median(runs_report)
    t = time.perf_counter()
    want = baseline(imps, evs)
    t_base = time.perf_counter() - t
    got = dict(credited.select("event_id", "recommendation_id").iter_rows())
    assert got == want, "the vectorised and the plain attribution differ"
    print(
        f"{a.impressions:,} impressions x {a.k} items, {a.events:,} events "
        f"({credited.height:,} credited, users {sum(v.users for v in r.variants):,})"
    )
    print(f"attribute      {t_attr:7.2f} s  (median of {a.repeat})")
    print(f"report.build   {t_report:7.2f} s  (attribution, per-user sums, statistics)")
    print(f"plain Python   {t_base:7.2f} s  (baseline attribution: dicts and bisect)")
    print(f"baseline / attribute: {t_base / t_attr:.1f}x")


if __name__ == "__main__":
    main()
