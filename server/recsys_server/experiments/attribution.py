"""Which impression each outcome event is credited to (pure polars).

An event carrying the recommendation_id of a stored impression of the same user is credited to
that impression: at its ``position`` when one is given and within the list, else at the item's
position in it when shown, else to the impression without a position. Any other event (no id,
an id the store does not know, another user's id) goes to the latest impression of the same
user that showed the event's item at most ``window_s`` seconds before it; else to none.

The impressions frame holds one experiment's impressions only, so an id naming the same user's
impression outside it (no experiment, another experiment) looks unknown here. When the events
frame has an ``impression_experiment`` column (the store's ``experiment_events`` has it: the
experiment of the stored impression of the same user its id names; null: none) such events are
left out instead: they came from that other answer. Without the column they go by the window
like unknown ids.
"""

from __future__ import annotations

import polars as pl

from recsys_server.config import Outcomes

COLUMNS = {
    "event_id": pl.String,
    "recommendation_id": pl.String,
    "variant": pl.String,
    "user_id": pl.String,
    "item_id": pl.String,
    "event_type": pl.String,
    "position": pl.Int64,
    "team": pl.Int64,
    "value": pl.Float64,
    "explicit": pl.Boolean,
}
"""The credited events: one row per event credited to an impression. ``position`` is the item's
1-based position in the impression (null: not shown in it), ``team`` the interleaving team that
placed it (null: not interleaved or no position), ``value`` the rating when set else 1.0,
``explicit``: credited by its recommendation_id (else by the window)."""


def outcome_types(outcomes: Outcomes) -> list[str]:
    return sorted({*outcomes.clicks, *outcomes.conversions, *outcomes.values})


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def attribute(
    impressions: pl.DataFrame, events: pl.DataFrame, outcomes: Outcomes, window_s: float
) -> pl.DataFrame:
    """The outcome events of ``events`` credited to ``impressions`` (columns `COLUMNS`)."""
    events = events.filter(pl.col("event_type").is_in(outcome_types(outcomes)))
    if "impression_experiment" in events.columns:
        named = pl.col("impression_experiment")
        ours = impressions["experiment"].unique().to_list()
        events = events.filter(named.is_null() | named.is_in(ours))
    if events.is_empty() or impressions.is_empty():
        return _empty()
    events = events.with_columns(
        value=pl.col("rating").cast(pl.Float64).fill_null(1.0),
        position=pl.col("position").cast(pl.Int64),
    )
    imps = impressions.select(  # recommendation_id is the store's key: unique
        pl.col("recommendation_id"),
        pl.col("user_id").alias("imp_user"),
        "variant",
        "item_ids",
        pl.col("teams").cast(pl.List(pl.Int64)),
    )
    explicit = _explicit(events, imps)
    rest = events.join(explicit.select("event_id"), on="event_id", how="anti")
    window = _by_window(rest, impressions, window_s)
    return pl.concat([explicit, window], how="vertical").select(list(COLUMNS)).sort("event_id")


def _explicit(events: pl.DataFrame, imps: pl.DataFrame) -> pl.DataFrame:
    joined = events.filter(pl.col("recommendation_id").is_not_null()).join(
        imps,
        left_on=["recommendation_id", "user_id"],
        right_on=["recommendation_id", "imp_user"],
        how="inner",
    )
    if joined.is_empty():
        return _empty()
    n = pl.col("item_ids").list.len()
    given = pl.col("position").is_not_null() & (pl.col("position") >= 1) & (pl.col("position") <= n)
    # The event's item's position in the list (list.eval cannot see the row's item: explode).
    found = (
        joined.select("event_id", "item_id", "item_ids")
        .explode("item_ids")
        .with_columns(idx=pl.int_range(pl.len()).over("event_id") + 1)
        .filter(pl.col("item_ids") == pl.col("item_id"))
        .group_by("event_id")
        .agg(found=pl.col("idx").min())
    )
    joined = joined.join(found, on="event_id", how="left")
    position = pl.when(given).then(pl.col("position")).otherwise(pl.col("found"))
    joined = joined.with_columns(position=position)
    # The credited item: the one at the given position (an event names the list it came from).
    item = pl.col("item_ids").list.get(pl.col("position") - 1, null_on_oob=True)
    team = pl.col("teams").list.get(pl.col("position") - 1, null_on_oob=True)
    return joined.with_columns(
        item_id=pl.when(pl.col("position").is_not_null()).then(item).otherwise(pl.col("item_id")),
        team=pl.when(pl.col("position").is_not_null()).then(team),
        explicit=pl.lit(True),
    ).select(list(COLUMNS))


def _by_window(events: pl.DataFrame, impressions: pl.DataFrame, window_s: float) -> pl.DataFrame:
    if events.is_empty():
        return _empty()
    # Only the impressions of users with such events, then only the (user, item) pairs some
    # event names: a small right side for the asof join.
    shown = impressions.join(events.select("user_id").unique(), on="user_id", how="semi").select(
        "recommendation_id",
        "user_id",
        "variant",
        pl.col("ts").cast(pl.Float64).alias("imp_ts"),
        pl.col("item_ids").alias("item_id"),
        pl.col("teams").cast(pl.List(pl.Int64)).alias("team"),
    )
    n = pl.col("item_id").list.len()
    shown = shown.with_columns(position=pl.int_ranges(1, n + 1))
    if shown["team"].list.len().sum():
        # Interleaved lists carry one team per item: pad any other list so all explode alike.
        pad = pl.col("item_id").list.eval(pl.lit(None, pl.Int64))
        shown = shown.with_columns(
            team=pl.when(pl.col("team").list.len() == n).then("team").otherwise(pad)
        ).explode("item_id", "team", "position")
    else:
        shown = (
            shown.drop("team")
            .explode("item_id", "position")
            .with_columns(team=pl.lit(None, pl.Int64))
        )
    shown = shown.join(events.select("user_id", "item_id").unique(), on=["user_id", "item_id"])
    if shown.is_empty():
        return _empty()
    left = events.drop("recommendation_id", "position").with_columns(pl.col("ts").cast(pl.Float64))
    joined = left.sort("ts").join_asof(
        shown.sort("imp_ts", "recommendation_id"),
        left_on="ts",
        right_on="imp_ts",
        by=["user_id", "item_id"],
        strategy="backward",
        check_sortedness=False,  # both sorted by time just above
    )
    # The latest impression at or before the event; none earlier can be within the window.
    joined = joined.filter(
        pl.col("imp_ts").is_not_null() & (pl.col("ts") - pl.col("imp_ts") <= window_s)
    )
    return joined.with_columns(explicit=pl.lit(False)).select(list(COLUMNS))
