"""Impressions in the data store: the ``impressions`` table (one row per recommendation answer,
migration 3), what a row holds, and the frames reports read (`DataStore.impressions`,
`DataStore.experiment_events`), shared by every backend.

The item list of an answer (ids, scores, teams) is stored as JSON text in its row (why: see
schema.py) and decoded in polars when read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import polars as pl

COLUMNS = (
    "recommendation_id, user_id, experiment, variant, model, version, ts, item_ids, scores, teams"
)

CHUNK = 64
"""Rows per INSERT statement (11 parameters each, far below SQLite's and PostgreSQL's limits).
A statement per row would hand the GIL over (the driver releases it while the database works)
once per row: a server thread stores impressions while requests are answered."""


@lru_cache(maxsize=8)
def insert_sql(rows: int) -> str:
    """One INSERT of ``rows`` rows (``?`` placeholders); an id already stored is skipped."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return (
        f"INSERT INTO impressions ({COLUMNS}, stored_at) VALUES {values} "
        "ON CONFLICT (recommendation_id) DO NOTHING"
    )


IMPRESSION_SCHEMA: dict[str, pl.DataType] = {
    "recommendation_id": pl.String(),
    "user_id": pl.String(),
    "experiment": pl.String(),
    "variant": pl.String(),
    "model": pl.String(),
    "version": pl.String(),
    "ts": pl.Float64(),
    "item_ids": pl.List(pl.String()),
    "scores": pl.List(pl.Float64()),
    "teams": pl.List(pl.Int64()),
}
"""`DataStore.impressions`' columns and types."""

# As read from the table: the lists are JSON text until decoded.
RAW_SCHEMA = {k: (pl.String() if v.is_nested() else v) for k, v in IMPRESSION_SCHEMA.items()}

EXPERIMENT_EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "event_type": pl.String(),
    "ts": pl.Float64(),
    "rating": pl.Float64(),
    "recommendation_id": pl.String(),
    "position": pl.Int64(),
    "impression_experiment": pl.String(),
}
"""`DataStore.experiment_events`' columns and types. ``impression_experiment``: the experiment
("" for none) of the stored impression of the same user that the event's recommendation_id
names; null when it names none. Attribution leaves out events that came from an answer outside
the experiment instead of crediting them by the window."""

IMPRESSIONS_SQL = (
    f"SELECT {COLUMNS} FROM impressions WHERE experiment = ? ORDER BY ts, recommendation_id"
)

# The events of the experiment's users from its first impression on. Without impressions
# MIN(ts) is NULL and nothing matches.
EXPERIMENT_EVENTS_SQL = """
SELECT e.event_id, e.user_id, e.item_id, e.event_type, e.ts, e.rating, e.recommendation_id,
       e.position, i.experiment AS impression_experiment
FROM events e
LEFT JOIN impressions i ON i.recommendation_id = e.recommendation_id AND i.user_id = e.user_id
WHERE e.ts >= (SELECT MIN(ts) FROM impressions WHERE experiment = ?)
  AND e.user_id IN (SELECT user_id FROM impressions WHERE experiment = ?)
ORDER BY e.seq
"""


@dataclass(frozen=True)
class Impression:
    """One recommendation answer as shown: ``item_ids`` in position order (position = index
    + 1) with their ``scores``; ``teams`` (interleaving only) the team that placed each item
    (0: the first variant, 1: the second). ``experiment`` and ``variant`` are "" outside any
    experiment; ``ts`` is unix seconds. Scores are stored to 9 significant digits (exact for
    the float32 scores answers carry); a non-finite one is read back as null."""

    recommendation_id: str
    user_id: str
    experiment: str
    variant: str
    model: str
    version: str
    ts: float
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    teams: tuple[int, ...] = ()


# The JSON arrays are built by hand: json.dumps of 10 ids costs 2.8 us and of 10 scores 11 us
# (17-digit floats), this 1.1 and 4.9 (a server thread writes these while requests are being
# answered).
_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _strings(values: Sequence[str]) -> str:
    return "[" + ",".join(map(_quote, values)) + "]"


_score = "{:.9g}".format  # 9 significant digits: exact for float32, the API's score type


def _scores(scores: Sequence[float]) -> str:
    values = [float(s) for s in scores]
    if all(map(math.isfinite, values)):
        return "[" + ",".join(map(_score, values)) + "]"
    # JSON has no NaN or infinity: such a score is stored as null.
    return json.dumps([s if math.isfinite(s) else None for s in values])


def check(rows: Sequence[Impression]) -> None:
    """TypeError for a non-Impression, ValueError for one no backend can store (an empty id,
    NUL in a string: PostgreSQL text cannot hold it, so it is refused everywhere; lists of
    different lengths)."""
    for r in rows:
        if not isinstance(r, Impression):
            raise TypeError(f"expected Impression, got {type(r).__name__}")
        if not r.recommendation_id:
            raise ValueError("impression without a recommendation_id")
        strings = (r.recommendation_id, r.user_id, r.experiment, r.variant, r.model, r.version)
        if any("\x00" in s for s in strings) or any("\x00" in i for i in r.item_ids):
            raise ValueError(f"impression {r.recommendation_id!r}: text cannot hold NUL (\\x00)")
        if len(r.scores) != len(r.item_ids) or (r.teams and len(r.teams) != len(r.item_ids)):
            raise ValueError(
                f"impression {r.recommendation_id!r}: item_ids, scores and teams differ in length"
            )


def params(r: Impression, stored_at: float) -> tuple[Any, ...]:
    """The parameters of one impression's row in `insert_sql`."""
    return (
        r.recommendation_id,
        r.user_id,
        r.experiment,
        r.variant,
        r.model,
        r.version,
        float(r.ts),
        _strings(r.item_ids),
        _scores(r.scores),
        "[" + ",".join(str(int(t)) for t in r.teams) + "]",
        stored_at,
    )


def statements(rows: Sequence[Impression], stored_at: float) -> Iterator[tuple[str, list[Any]]]:
    """The INSERTs storing ``rows``, `CHUNK` at a time, each with its parameters; built
    lazily, so each chunk's parameters are built while the GIL is held and the statement
    before it ran without it."""
    for at in range(0, len(rows), CHUNK):
        part = rows[at : at + CHUNK]
        yield insert_sql(len(part)), [v for r in part for v in params(r, stored_at)]


def decode(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows of `IMPRESSIONS_SQL` (the lists as JSON text) as `IMPRESSION_SCHEMA`."""
    raw = raw.select(pl.col(k).cast(v) for k, v in RAW_SCHEMA.items())
    lists = [
        pl.col(k).str.json_decode(v).alias(k) for k, v in IMPRESSION_SCHEMA.items() if v.is_nested()
    ]
    out = (
        raw.with_columns(lists)
        if raw.height
        else raw.with_columns(
            pl.lit(None, v).alias(k) for k, v in IMPRESSION_SCHEMA.items() if v.is_nested()
        )
    )
    return out.select(pl.col(k).cast(v) for k, v in IMPRESSION_SCHEMA.items())
