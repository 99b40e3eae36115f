"""Attribution of outcome events and the experiment report on hand-built store frames (the
store's `impressions` / `experiment_events` columns), every number computed by hand; the
core's report call (shared builds, errors) on a stand-in store."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import polars as pl
import pytest

from recsys_core.datastore import StoreUnavailable
from recsys_server.config import Experiment, Outcomes, ServerConfig, Variant
from recsys_server.core import RecommenderCore
from recsys_server.errors import InvalidArgument, NotFound, Unavailable
from recsys_server.experiments import report, stats
from recsys_server.experiments.attribution import COLUMNS, attribute

DAY = 86_400.0
OUTCOMES = Outcomes(clicks=("click",), conversions=("purchase",), values=("purchase", "rating"))
EXP = Experiment("e", (Variant("control", "hybrid", 0.5), Variant("treat", "svd", 0.5)))


def impressions(*rows) -> pl.DataFrame:
    """rows: (recommendation_id, user, variant, ts, items[, teams])."""
    return pl.DataFrame(
        {
            "recommendation_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "experiment": ["e"] * len(rows),
            "variant": [r[2] for r in rows],
            "model": ["m"] * len(rows),
            "version": ["v1"] * len(rows),
            "ts": [float(r[3]) for r in rows],
            "item_ids": [list(r[4]) for r in rows],
            "scores": [[1.0] * len(r[4]) for r in rows],
            "teams": [list(r[5]) if len(r) > 5 else [] for r in rows],
        },
        schema_overrides={"item_ids": pl.List(pl.String), "teams": pl.List(pl.Int64)},
    )


def events(*rows) -> pl.DataFrame:
    """rows: (event_id, user, item, type, ts, rating, recommendation_id, position)."""
    cols = ["event_id", "user_id", "item_id", "event_type", "ts", "rating", "rid", "position"]
    data = {c: [r[n] for r in rows] for n, c in enumerate(cols)}
    data["recommendation_id"] = data.pop("rid")
    return pl.DataFrame(
        data,
        schema={
            "event_id": pl.String,
            "user_id": pl.String,
            "item_id": pl.String,
            "event_type": pl.String,
            "ts": pl.Float64,
            "rating": pl.Float64,
            "recommendation_id": pl.String,
            "position": pl.Int64,
        },
    )


IMPS = impressions(
    ("r1", "u1", "control", 1000, ["a", "b", "c"]),
    ("r2", "u1", "control", 2000, ["b", "d"]),
    ("r3", "u2", "treat", 1500, ["a", "e"]),
    ("r4", "u3", "treat", 1000, ["f"]),
)
EVENTS = events(
    ("e01", "u1", "b", "click", 2100, None, None, None),  # window: latest showing b -> r2 @1
    ("e02", "u1", "c", "click", 2100, None, None, None),  # window: only r1 shows c -> r1 @3
    ("e03", "u1", "a", "click", 2100, None, "r2", 2),  # explicit, position 2 -> r2's d
    ("e04", "u1", "a", "click", 2100, None, "r2", None),  # explicit, a not in r2: no position
    ("e05", "u1", "b", "click", 1500, None, "unknown", None),  # unknown id: window -> r1 @2
    ("e06", "u1", "a", "click", 1600, None, "r3", None),  # u2's id: window -> r1 @1
    ("e07", "u2", "e", "purchase", 1500 + DAY + 1, None, None, None),  # past the window
    ("e08", "u2", "a", "purchase", 1500 + DAY, None, None, None),  # at the window's edge: r3 @1
    ("e09", "u2", "a", "click", 1400, None, None, None),  # before any impression of a
    ("e10", "u3", "f", "view", 1100, None, None, None),  # not an outcome
    ("e11", "u2", "e", "rating", 1600, 4.0, None, None),  # a value of 4 -> r3 @2
    ("e12", "u1", "b", "click", 3000, None, "r1", 99),  # position out of range: b's -> r1 @2
    ("e13", "u1", "z", "click", 2000, None, None, None),  # never shown
)


def test_attribution_follows_the_rules():
    got = attribute(IMPS, EVENTS, OUTCOMES, DAY)
    assert dict(got.schema) == COLUMNS
    rows = {
        r["event_id"]: (
            r["recommendation_id"],
            r["variant"],
            r["item_id"],
            r["position"],
            r["value"],
            r["explicit"],
        )
        for r in got.iter_rows(named=True)
    }
    assert rows == {
        "e01": ("r2", "control", "b", 1, 1.0, False),
        "e02": ("r1", "control", "c", 3, 1.0, False),
        "e03": ("r2", "control", "d", 2, 1.0, True),
        "e04": ("r2", "control", "a", None, 1.0, True),
        "e05": ("r1", "control", "b", 2, 1.0, False),
        "e06": ("r1", "control", "a", 1, 1.0, False),
        "e08": ("r3", "treat", "a", 1, 1.0, False),
        "e11": ("r3", "treat", "e", 2, 4.0, False),
        "e12": ("r1", "control", "b", 2, 1.0, True),
    }
    assert got["team"].null_count() == got.height  # not interleaved


def test_window_is_in_hours_and_tolerates_empty_frames():
    # A one-hour window: e08 (a day later) is no longer credited, e11 (100 s later) still is.
    got = attribute(IMPS, EVENTS, OUTCOMES, 3600.0)
    assert "e08" not in set(got["event_id"]) and "e11" in set(got["event_id"])
    assert attribute(IMPS.clear(), EVENTS, OUTCOMES, DAY).is_empty()
    assert attribute(IMPS, EVENTS.clear(), OUTCOMES, DAY).is_empty()
    assert dict(attribute(IMPS, EVENTS.clear(), OUTCOMES, DAY).schema) == COLUMNS


def test_latest_impression_wins_and_ties_are_deterministic():
    imps = impressions(
        ("old", "u", "control", 100, ["x"]),
        ("new", "u", "treat", 200, ["y", "x"]),
        ("later", "u", "treat", 400, ["x"]),  # after the event: not a candidate
    )
    evs = events(("e", "u", "x", "click", 300, None, None, None))
    (row,) = attribute(imps, evs, OUTCOMES, DAY).iter_rows(named=True)
    assert (row["recommendation_id"], row["position"]) == ("new", 2)


def test_report_numbers_equal_the_hand_computation():
    r = report.build(EXP, OUTCOMES, DAY, IMPS, EVENTS, dropped=3)
    assert (r.experiment, r.kind, r.control, r.attribution_hours) == ("e", "ab", "control", 24.0)
    assert r.impressions_dropped == 3 and r.interleaving is None
    c, t = r.variants
    # control: u1 saw r1 (3 items) and r2 (2); credited clicks e01 e02 e03 e04 e05 e06 e12.
    assert (c.variant, c.model, c.share, c.users, c.impressions, c.items_shown) == (
        "control",
        "hybrid",
        0.5,
        1,
        2,
        5,
    )
    assert (c.clicks, c.conversions, c.value) == (7, 0, 0.0)
    assert (c.ctr, c.conversions_per_user, c.value_per_user) == (7 / 5, 0.0, 0.0)
    # treat: u2 saw r3 (2 items), u3 saw r4 (1); u2 converted once (e08) and rated 4 (e11).
    assert (t.users, t.impressions, t.items_shown, t.clicks, t.conversions, t.value) == (
        2,
        2,
        3,
        0,
        1,
        5.0,
    )
    assert (t.ctr, t.conversions_per_user, t.value_per_user) == (0.0, 0.5, 2.5)
    # Per-user arrays (users sorted: control u1; treat u2, u3).
    want = (
        stats.compare_ratio("ctr", [7], [5], [0, 0], [2, 1]),
        stats.compare_mean("conversions_per_user", [0], [1, 0]),
        stats.compare_mean("value_per_user", [0], [5, 0]),
    )
    assert [x.variant for x in r.comparisons] == ["treat"] * 3
    for got, exp in zip((x.comparison for x in r.comparisons), want, strict=True):
        assert _same(got, exp)
    assert r.comparisons[0].comparison.difference == pytest.approx(-1.4)
    assert r.sample_ratio == stats.sample_ratio([1, 2], [0.5, 0.5])


def _same(a, b) -> bool:
    """Dataclasses equal field by field, nan equal to nan."""

    def norm(x):
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        if isinstance(x, stats.Interval):
            return (norm(x.low), norm(x.high))
        return x

    return all(norm(getattr(a, f)) == norm(getattr(b, f)) for f in a.__dataclass_fields__)


def test_report_comparisons_on_larger_hand_arrays():
    # Two users per variant so every interval is finite: the report passes exactly these arrays.
    imps = impressions(
        ("c1", "cu1", "control", 0, ["a", "b"]),
        ("c2", "cu2", "control", 0, ["a", "b", "c"]),
        ("c3", "cu2", "control", 10, ["d"]),
        ("t1", "tu1", "treat", 0, ["a"]),
        ("t2", "tu2", "treat", 0, ["a", "b"]),
        ("t3", "tu3", "treat", 0, ["a", "b"]),
    )
    evs = events(
        ("1", "cu1", "a", "click", 5, None, "c1", 1),
        ("2", "cu2", "d", "click", 15, None, None, None),
        ("3", "cu2", "d", "purchase", 16, None, None, None),
        ("4", "tu1", "a", "click", 5, None, None, None),
        ("5", "tu2", "a", "click", 5, None, None, None),
        ("6", "tu2", "b", "click", 6, None, None, None),
        ("7", "tu2", "b", "purchase", 7, None, None, None),
        ("8", "tu3", "b", "purchase", 7, None, None, None),
    )
    r = report.build(EXP, OUTCOMES, DAY, imps, evs, dropped=0)
    c, t = r.variants
    assert (c.users, c.items_shown, c.clicks, c.conversions, c.ctr) == (2, 6, 2, 1, 2 / 6)
    assert (t.users, t.items_shown, t.clicks, t.conversions, t.ctr) == (3, 5, 3, 2, 3 / 5)
    want = (
        stats.compare_ratio("ctr", [1, 1], [2, 4], [1, 2, 0], [1, 2, 2]),
        stats.compare_mean("conversions_per_user", [0, 1], [0, 1, 1]),
        stats.compare_mean("value_per_user", [0, 1], [0, 1, 1]),
    )
    for got, exp in zip((x.comparison for x in r.comparisons), want, strict=True):
        assert _same(got, exp)
    ci = r.comparisons[0].comparison.ci95
    assert math.isfinite(ci.low) and ci.low < 3 / 5 - 2 / 6 < ci.high


def test_report_without_any_impression():
    r = report.build(EXP, OUTCOMES, DAY, IMPS.clear(), EVENTS.clear(), dropped=0)
    assert [(v.users, v.impressions, v.clicks) for v in r.variants] == [(0, 0, 0), (0, 0, 0)]
    assert all(math.isnan(v.ctr) for v in r.variants)
    assert r.sample_ratio is not None and r.sample_ratio.observed == (0, 0)
    assert not r.sample_ratio.mismatch
    assert len(r.comparisons) == 3


def test_interleaving_credits_clicks_to_teams():
    exp = Experiment(
        "il",
        (Variant("rank-a", "svd", 0.5), Variant("rank-b", "item_cf", 0.5)),
        kind="interleave",
    )
    imps = impressions(
        ("r1", "u1", "", 0, ["a", "b", "c", "d"], [0, 1, 1, 0]),
        ("r2", "u1", "", 10, ["a", "b"], [1, 0]),
        ("r3", "u2", "", 0, ["x", "y"], [0, 1]),
        ("r4", "u3", "", 0, ["x"], [0]),
    )
    evs = events(
        ("1", "u1", "a", "click", 5, None, "r1", 1),  # A
        ("2", "u1", "b", "click", 5, None, "r1", 2),  # B: r1 is a tie
        ("3", "u1", "b", "click", 15, None, "r2", 2),  # A: r2 won by A
        ("4", "u2", "y", "click", 5, None, None, None),  # window -> r3 @2, B: r3 won by B
        ("5", "u2", "y", "purchase", 6, None, None, None),  # a conversion on B's item
    )
    r = report.build(exp, OUTCOMES, DAY, imps, evs, dropped=0)
    assert r.sample_ratio is None and r.comparisons == ()
    a, b = r.variants
    # Every user saw both rankers: users and impressions are the experiment's for both.
    assert (a.users, a.impressions, a.items_shown, a.clicks, a.conversions) == (3, 4, 5, 2, 0)
    assert (b.users, b.impressions, b.items_shown, b.clicks, b.conversions) == (3, 4, 4, 2, 1)
    assert (a.ctr, b.ctr) == (2 / 5, 2 / 4)
    il = r.interleaving
    assert (il.model_a, il.model_b) == ("svd", "item_cf")
    # Per user (u1, u2): wins of a, wins of b, ties; u3 clicked nothing.
    assert _same(il.preference, stats.preference([1, 0], [0, 1], [1, 0]))
    assert (il.preference.wins_a, il.preference.wins_b, il.preference.ties) == (1, 1, 1)


def test_interleaving_without_clicks():
    exp = Experiment(
        "il", (Variant("a", "svd", 0.5), Variant("b", "item_cf", 0.5)), kind="interleave"
    )
    imps = impressions(("r1", "u1", "interleaved", 0, ["a", "b", "c"], [0, 1, 0]))
    r = report.build(exp, OUTCOMES, DAY, imps, EVENTS.clear(), dropped=0)
    p = r.interleaving.preference
    assert (p.wins_a, p.wins_b, p.ties) == (0, 0, 0) and math.isnan(p.preference_a)
    assert [(v.users, v.impressions, v.clicks, v.ctr) for v in r.variants] == [
        (1, 1, 0, 0.0),
        (1, 1, 0, 0.0),
    ]


def test_report_skips_unconfigured_variants():
    imps = IMPS.vstack(impressions(("old", "u9", "removed", 1000, ["a"])))
    r = report.build(EXP, OUTCOMES, DAY, imps, EVENTS, dropped=0)
    assert [(v.variant, v.users) for v in r.variants] == [("control", 1), ("treat", 2)]


def test_attribution_at_scale():
    """Not a timing assertion: a size check of the vectorised join (1M impressions take about
    1 s: docs/experiments.md)."""
    rng = np.random.default_rng(7)
    n, m, k = 100_000, 20_000, 10
    users = rng.integers(0, 100_000, n).astype(str)
    ts = np.sort(rng.uniform(0, 7 * DAY, n))
    items = rng.integers(0, 5_000, (n, k)).astype(str)
    imps = pl.DataFrame(
        {
            "recommendation_id": np.char.add("r", np.arange(n).astype(str)),
            "user_id": users,
            "variant": np.where(rng.random(n) < 0.5, "control", "treat"),
            "ts": ts,
            "item_ids": pl.Series(items.ravel()).reshape((n, k)).cast(pl.List(pl.String)),
        }
    ).with_columns(teams=pl.lit([], pl.List(pl.Int64)))
    pick = rng.integers(0, n, m)
    evs = pl.DataFrame(
        {
            "event_id": np.char.add("e", np.arange(m).astype(str)),
            "user_id": users[pick],
            "item_id": items[pick, rng.integers(0, k, m)],
            "event_type": "click",
            "ts": ts[pick] + 60.0,
            "rating": pl.Series([None] * m, dtype=pl.Float64),
            "recommendation_id": pl.Series([None] * m, dtype=pl.String),
            "position": pl.Series([None] * m, dtype=pl.Int64),
        }
    )
    got = attribute(imps, evs, OUTCOMES, DAY)
    assert got.height == m  # each was shown 60 s before: all credited


class SlowStore:
    """A data store stand-in whose reads wait for ``go`` and are counted."""

    def __init__(self, fail: bool = False) -> None:
        self.go = threading.Event()
        self.reads = 0
        self.fail = fail

    def impressions(self, name: str) -> pl.DataFrame:
        self.reads += 1
        self.go.wait(10)
        if self.fail:
            raise StoreUnavailable("database is locked")
        return IMPS

    def experiment_events(self, name: str) -> pl.DataFrame:
        return EVENTS


def core_with(store) -> RecommenderCore:
    config = ServerConfig(experiments=(EXP,), outcomes=OUTCOMES)
    return RecommenderCore(config, versions=None, datastore=store)


def test_concurrent_report_calls_share_one_build():
    store = SlowStore()
    core = core_with(store)

    async def scenario():
        first = asyncio.ensure_future(core.experiment_report("e"))
        second = asyncio.ensure_future(core.experiment_report("e"))
        await asyncio.sleep(0.05)
        first.cancel()  # one caller gives up: the other still gets the shared build
        store.go.set()
        got = await second
        with pytest.raises(asyncio.CancelledError):
            await first
        again = await core.experiment_report("e")  # a later call builds afresh
        return got, again

    got, again = asyncio.run(scenario())
    assert store.reads == 2
    assert [v.clicks for v in got.variants] == [7, 0] == [v.clicks for v in again.variants]
    assert got.generated_at <= again.generated_at


def test_report_errors_name_the_experiment_or_the_store():
    core = core_with(SlowStore(fail=True))
    core.datastore.go.set()

    async def scenario():
        with pytest.raises(NotFound, match="'nope' is not configured; configured: 'e'"):
            await core.experiment_report("nope")
        with pytest.raises(InvalidArgument, match=r"^experiment"):
            await core.experiment_report("")
        with pytest.raises(Unavailable, match="data store read failed: database is locked"):
            await core.experiment_report("e")
        assert core._reports == {}

    asyncio.run(scenario())
    with pytest.raises(Unavailable, match="not open"):
        asyncio.run(core_with(None).experiment_report("e"))


def test_ids_of_answers_outside_the_experiment():
    # e14 names u1's answer of another experiment that also showed b: with the store saying
    # so (impression_experiment) it is not this experiment's; without, it goes by the window.
    evs = EVENTS.vstack(events(("e14", "u1", "b", "click", 2100, None, "elsewhere", None)))
    got = attribute(IMPS, evs, OUTCOMES, DAY)
    assert got.filter(pl.col("event_id") == "e14")["recommendation_id"].to_list() == ["r2"]
    named = {"e03": "e", "e04": "e", "e12": "e", "e14": "other"}
    evs = evs.with_columns(
        impression_experiment=pl.col("event_id").replace_strict(named, default=None)
    )
    got = attribute(IMPS, evs, OUTCOMES, DAY)
    assert "e14" not in set(got["event_id"])
    assert got.height == 9  # every other event as in test_attribution_follows_the_rules
