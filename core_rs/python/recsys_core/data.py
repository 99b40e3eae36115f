"""Behaviour logs -> `Interactions` (dense indices + id maps), with row-precise errors.

Supported inputs:

* ``ml-100k``: MovieLens 100k ``u.data`` (tab-separated, no header: user item rating timestamp).
* ``ml-1m``: MovieLens 1M/10M ``ratings.dat`` (the same columns separated by ``::``).
* ``ml-csv``: MovieLens ``ratings.csv`` (header ``userId,movieId,rating,timestamp``).
* ``steam``: the Steam play log (header ``user-id,game-title,value,``: user, item, hours played
  as the weight; the unnamed last column is ignored; no time).
* ``delimited``: CSV/TSV with a header; by default ``user item weight timestamp`` (+ ``event``),
  other names through `ColumnMap`. With column positions instead of names the file has no header.
* ``parquet``: the same columns as ``delimited``, typed or as strings.

Text that is not valid UTF-8 is read as latin-1 (MovieLens' encoding).

Error rows are 1-based line numbers in the file, counting the header line (assuming one record
per line, i.e. no quoted newlines); for Parquet and in-memory frames they are 1-based record
numbers. Columns of a file without a header are named by their 1-based position.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

if TYPE_CHECKING:
    from recsys_core.catalog import Catalog

Format = Literal["auto", "ml-100k", "ml-1m", "ml-csv", "steam", "delimited", "parquet"]

ROW = "__row"  # row-number column carried through parsing, for error messages

# Formats tried, in order, for timestamps that are not integers. Naive times are taken as UTC.
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


class DataError(ValueError):
    """A problem in an input file, located by file, row and column."""

    def __init__(self, path: str | Path, row: int | None, column: str | None, reason: str):
        self.path = str(path)
        self.row = row
        self.column = column
        self.reason = reason
        where = [self.path]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {reason}")


@dataclass(frozen=True)
class ColumnMap:
    """The input columns: names in the header, or 1-based positions (ints) in a file without one.

    ``weight``: used when present in the file, else every weight is 1.
    ``event``: used when present in the file; weights then come from `EventWeights`.
    ``timestamp``: required when set; ``None`` means the data has no time (all timestamps 0).

    Positions go for every column or none: with positions, a column left at its default name is
    absent (weight 1, no time, no events), and user and item need positions.
    """

    user: str | int = "user"
    item: str | int = "item"
    weight: str | int | None = "weight"
    timestamp: str | int | None = "timestamp"
    event: str | int | None = "event"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, str | int | None):
                raise ValueError(f"{f.name} column: expected a name or a position, got {value!r}")
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{f.name} column: positions count from 1, got {value}")
        if not self.positions():
            return
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("user", "item") and not isinstance(value, int):
                raise ValueError(f"{f.name} column: give its position too (got {value!r})")
            if isinstance(value, str) and value != f.default:
                raise ValueError(
                    f"{f.name} column: {value!r} is a name but other columns are positions; "
                    "use positions for all"
                )

    def positions(self) -> dict[str, int]:
        """Role -> 1-based position, for the columns given by position."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {role: v for role, v in values.items() if isinstance(v, int)}

    def named(self, header: list[str]) -> ColumnMap:
        """This map with positions replaced by names from ``header`` (the others absent)."""
        pos = self.positions()
        if not pos:
            return self
        names = {f.name: header[pos[f.name] - 1] if f.name in pos else None for f in fields(self)}
        return ColumnMap(**names)


ML_COLUMNS = ColumnMap(user="user", item="item", weight="rating", event=None)
ML_CSV_COLUMNS = ColumnMap(user="userId", item="movieId", weight="rating", event=None)
STEAM_COLUMNS = ColumnMap(
    user="user-id", item="game-title", weight="value", timestamp=None, event=None
)

# Column maps of the known formats; the others default to ColumnMap().
FORMAT_COLUMNS: dict[str, ColumnMap] = {
    "ml-100k": ML_COLUMNS,
    "ml-1m": ML_COLUMNS,
    "ml-csv": ML_CSV_COLUMNS,
    "steam": STEAM_COLUMNS,
}
# Headerless MovieLens ratings: their separator; the columns are ML_RATING_FIELDS.
ML_SEPARATORS = {"ml-100k": "\t", "ml-1m": "::"}
ML_RATING_FIELDS = ["user", "item", "rating", "timestamp"]
# Formats known by the start of their header (see `header_key`).
KNOWN_HEADERS: dict[str, Format] = {
    "userid,movieid,rating": "ml-csv",
    "user-id,game-title,value": "steam",
}


def _default_event_weights() -> dict[str, float]:
    return {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


@dataclass(frozen=True)
class EventWeights:
    """Weight of each event type. Events matching ``rating_event`` take the weight column's value.

    Event names are matched case-insensitively after stripping whitespace; an event type that is
    neither in ``weights`` nor ``rating_event`` is an error.
    """

    weights: dict[str, float] = field(default_factory=_default_event_weights)
    rating_event: str | None = "rating"

    def __post_init__(self) -> None:
        for name, w in self.weights.items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"event weight for {name!r} must be finite and >= 0, got {w}")

    def normalized(self) -> dict[str, float]:
        return {k.strip().lower(): float(v) for k, v in self.weights.items()}


@dataclass(frozen=True, eq=False)
class Interactions:
    """A behaviour log with dense internal indices.

    ``user_ids[user_idx[r]]`` is the external (string) id of row ``r``'s user; same for items.
    Id maps may list users/items that have no row (e.g. after a split both halves share them).
    """

    user_idx: np.ndarray  # int32, index into user_ids
    item_idx: np.ndarray  # int32, index into item_ids
    weight: np.ndarray  # float32, finite, >= 0
    timestamp: np.ndarray  # int64 unix seconds
    user_ids: np.ndarray  # str, external ids in index order
    item_ids: np.ndarray  # str
    event: np.ndarray | None = None  # str event type per row, when the input had events
    catalog: Catalog | None = None
    """The item catalogue (keyed by external id), for models that read item attributes;
    ``recsys_core.catalog.with_catalog`` attaches it. Splits and samples keep it."""

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        arrays = [self.item_idx, self.weight, self.timestamp]
        if self.event is not None:
            arrays.append(self.event)
        if any(len(a) != n for a in arrays):
            raise ValueError("Interactions arrays must all have the same length")
        # Coerce dtypes once here so every consumer can rely on them.
        object.__setattr__(self, "user_idx", np.asarray(self.user_idx, dtype=np.int32))
        object.__setattr__(self, "item_idx", np.asarray(self.item_idx, dtype=np.int32))
        object.__setattr__(self, "weight", np.asarray(self.weight, dtype=np.float32))
        object.__setattr__(self, "timestamp", np.asarray(self.timestamp, dtype=np.int64))
        object.__setattr__(self, "user_ids", np.asarray(self.user_ids, dtype=np.str_))
        object.__setattr__(self, "item_ids", np.asarray(self.item_ids, dtype=np.str_))
        if self.event is not None:
            object.__setattr__(self, "event", np.asarray(self.event, dtype=np.str_))

    def __len__(self) -> int:
        return len(self.user_idx)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @cached_property
    def user_index(self) -> dict[str, int]:
        """External user id -> index."""
        return {u: i for i, u in enumerate(self.user_ids.tolist())}

    @cached_property
    def item_index(self) -> dict[str, int]:
        """External item id -> index."""
        return {u: i for i, u in enumerate(self.item_ids.tolist())}

    def to_csr(self) -> sp.csr_matrix:
        """users x items float32 CSR of summed weights (duplicate pairs are added up)."""
        m = sp.csr_matrix(
            (self.weight, (self.user_idx, self.item_idx)),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        return m

    def take(self, rows: np.ndarray) -> Interactions:
        """The rows selected by an index array or boolean mask, with the same id maps."""
        return Interactions(
            user_idx=self.user_idx[rows],
            item_idx=self.item_idx[rows],
            weight=self.weight[rows],
            timestamp=self.timestamp[rows],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            event=None if self.event is None else self.event[rows],
            catalog=self.catalog,
        )

    def to_frame(self) -> pl.DataFrame:
        """Rows with external ids: user, item, [event,] weight, timestamp."""
        cols: dict[str, pl.Series] = {
            "user": pl.Series(self.user_ids).gather(self.user_idx),
            "item": pl.Series(self.item_ids).gather(self.item_idx),
        }
        if self.event is not None:
            cols["event"] = pl.Series(self.event)
        cols["weight"] = pl.Series(self.weight)
        cols["timestamp"] = pl.Series(self.timestamp)
        return pl.DataFrame(cols)


# ---------------------------------------------------------------------------------------------
# Reading files


def first_line(path: Path, encoding: str = "utf-8") -> str:
    """The file's first line (without line break, BOM stripped); "" for an empty file."""
    with path.open("rb") as f:
        raw = f.readline(1 << 20)
    return raw.decode(encoding, errors="replace").lstrip("\ufeff").rstrip("\r\n")


def header_key(line: str) -> str:
    """A header line without quotes and spaces, lower case: for matching known headers."""
    return line.replace('"', "").replace(" ", "").lower()


def sniff_separator(header: str, path: Path) -> str:
    """Separator from the extension when the header agrees, else ``::`` when present (MovieLens
    ``.dat``), else the most frequent candidate."""
    hint = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(path.suffix.lower())
    if hint is not None and hint in header:
        return hint
    if "::" in header:
        return "::"
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda s: counts[s])
    if counts[best] == 0:
        return hint or ","
    return best


def split_header(header: str, separator: str) -> list[str]:
    return [name.strip().strip('"').strip() for name in header.split(separator)]


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def as_utf8(raw: bytes) -> bytes:
    """``raw`` itself when it is valid UTF-8, else ``raw`` read as latin-1, re-encoded."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1").encode("utf-8")
    return raw


# polars splits on one byte, so a longer separator (MovieLens' '::') is replaced by this one.
ONE_BYTE_SEPARATOR = "\x1f"


def read_table(
    path: Path,
    separator: str,
    names: list[str] | None = None,
    data: bytes | None = None,
    empty_column: str | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Read a delimited file as all-String columns plus a ``ROW`` line-number column.

    ``names=None``: the first line is the header; a header ending in a separator has an
    unnamed last column, named by its position. Otherwise the file has no header and ``names``
    are the columns. ``data`` replaces the file's bytes. The separator may be longer than one
    character (``::``). Fully blank lines are dropped; rows with too many fields are an error.
    ``empty_column`` is the column an empty file's error names.
    """
    if len(separator) > 1:
        raw = path.read_bytes() if data is None else data
        data = raw.replace(separator.encode(), ONE_BYTE_SEPARATOR.encode())
        separator = ONE_BYTE_SEPARATOR
    head = data[: 1 << 16] if data is not None else _head(path, 1 << 16)
    if not head.strip() and (data is not None or path.stat().st_size <= len(head)):
        raise DataError(path, 1, empty_column or (names[0] if names else None), "empty file")
    has_header = names is None
    if names is None:
        header_line = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        names = split_header(header_line.lstrip("\ufeff").rstrip("\r"), separator)
        if len(names) > 1 and not names[-1]:  # e.g. Steam's 'user-id,game-title,value,'
            names[-1] = str(len(names))
        if any(not n for n in names):
            raise DataError(path, 1, None, f"header has an empty column name: {header_line!r}")
        dup = [n for n in names if names.count(n) > 1]
        if dup:
            raise DataError(path, 1, dup[0], "duplicate column name in header")
    # One spare column catches rows with more fields than the header.
    spare = "__extra"
    schema = {n: pl.String for n in [*names, spare]}

    def read(source: Path | bytes) -> pl.DataFrame:
        return pl.read_csv(
            source,
            has_header=False,
            skip_rows=1 if has_header else 0,
            separator=separator,
            schema=schema,
            missing_columns="insert",
            truncate_ragged_lines=True,
            quote_char='"' if separator in ",;" else None,
            encoding="utf8",
        )

    try:
        try:
            df = read(path if data is None else data)
        except pl.exceptions.ComputeError:
            raw = path.read_bytes() if data is None else data
            text = as_utf8(raw)
            if text is raw:  # valid UTF-8: the problem is elsewhere
                raise
            df = read(text)
    except pl.exceptions.PolarsError as e:  # malformed beyond what we check (quotes, ...)
        raise DataError(path, None, None, f"cannot read file: {e}") from e
    first = 2 if has_header else 1
    df = df.with_row_index(ROW, offset=first).with_columns(pl.col(ROW).cast(pl.Int64))
    df = df.filter(~pl.all_horizontal(pl.col(n).is_null() for n in [*names, spare]))
    extra = df.filter(pl.col(spare).is_not_null())
    if extra.height:
        raise DataError(
            path,
            int(extra[ROW][0]),
            None,
            f"more fields than the {len(names)} columns ({', '.join(names)})",
        )
    return df.drop(spare), names


# ---------------------------------------------------------------------------------------------
# Column parsing: each returns (values, code) where code is 0 for a good row, else a reason index.


def _const(value: object, n: int, dtype: pl.DataType) -> pl.Series:
    return pl.repeat(value, n, dtype=dtype, eager=True)


def _first_error(
    path: str | Path,
    rows: pl.Series,
    raw: pl.Series,
    code: pl.Series,
    column: str,
    reasons: dict[int, str],
) -> tuple[int, DataError] | None:
    """The first row whose code is non-zero, as (row, error), or None."""
    bad = (code.fill_null(0) != 0).arg_true()
    if len(bad) == 0:
        return None
    i = int(bad[0])
    value = raw[i]
    reason = reasons[int(code[i])].format(value=value)
    row = int(rows[i])
    return row, DataError(path, row, column, reason)


def _parse_id(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    s = raw.cast(pl.String).str.strip_chars()
    code = (s.is_null() | (s.str.len_bytes() == 0)).cast(pl.UInt8)
    return s, code


def _parse_weight(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    if raw.dtype == pl.String:
        text = raw.str.strip_chars()
        missing = text.is_null() | (text.str.len_bytes() == 0)
        parsed = text.cast(pl.Float64, strict=False)
    elif raw.dtype.is_numeric() or raw.dtype == pl.Boolean:
        missing = raw.is_null()
        parsed = raw.cast(pl.Float64)
    else:
        missing = raw.is_null()
        parsed = _const(None, len(raw), pl.Float64)
    values = parsed.cast(pl.Float32)
    code = (
        pl.select(
            pl.when(missing)
            .then(1)
            .when(parsed.is_null())
            .then(2)
            .when(~values.is_finite())
            .then(3)
            .when(values < 0)
            .then(4)
            .otherwise(0)
            .cast(pl.UInt8)
        )
        .to_series()
        .fill_null(0)
    )
    return values, code


WEIGHT_REASONS = {
    1: "missing weight",
    2: "cannot parse {value!r} as a number",
    3: "non-finite weight {value!r}",
    4: "negative weight {value!r}",
}


def _parse_timestamp(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    dtype = raw.dtype
    if dtype == pl.String:
        text = raw.str.strip_chars()
        missing = text.is_null() | (text.str.len_bytes() == 0)
        values = text.cast(pl.Int64, strict=False)
        todo = values.is_null() & ~missing
        if todo.any():  # only pay for date parsing when some value is not an integer
            parsed = [
                text.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
                for fmt in ISO_FORMATS
            ]
            iso = pl.select(pl.coalesce(parsed)).to_series().dt.epoch("s")
            values = values.fill_null(iso)
    elif dtype.is_integer():
        missing = raw.is_null()
        values = raw.cast(pl.Int64)
    elif dtype.is_float():
        missing = raw.is_null()
        finite = raw.is_finite().fill_null(False)
        values = pl.select(pl.when(finite).then(raw.floor()).otherwise(None)).to_series()
        values = values.cast(pl.Int64, strict=False)
    elif isinstance(dtype, pl.Datetime):
        missing = raw.is_null()
        values = raw.dt.epoch("s")
    elif dtype == pl.Date:
        missing = raw.is_null()
        values = raw.cast(pl.Datetime("us")).dt.epoch("s")
    else:
        missing = raw.is_null()
        values = _const(None, len(raw), pl.Int64)
    code = (missing.cast(pl.UInt8) + (values.is_null() & ~missing).cast(pl.UInt8) * 2).fill_null(0)
    return values, code


TIMESTAMP_REASONS = {
    1: "missing timestamp",
    2: "cannot parse {value!r} as a timestamp (unix seconds or ISO-8601)",
}


def natural_order_index(ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense int32 indices for string ids, plus the id map.

    Ids are ordered numerically when they are integers (so MovieLens user "1" -> 0), then the
    rest lexicographically, so indices do not depend on row order.
    """
    uniq = ids.unique().to_frame("id")
    uniq = uniq.sort(pl.col("id").cast(pl.Int64, strict=False), pl.col("id"), nulls_last=True)
    labels = uniq["id"]
    idx = ids.replace_strict(
        labels, pl.int_range(0, len(labels), eager=True, dtype=pl.Int32), return_dtype=pl.Int32
    )
    return idx.to_numpy().astype(np.int32, copy=True), np.asarray(labels.to_list(), dtype=np.str_)


def from_frame(
    df: pl.DataFrame,
    columns: ColumnMap | None = None,
    event_weights: EventWeights | None = None,
    *,
    source: str | Path = "<frame>",
    first_row: int = 1,
) -> Interactions:
    """Interactions from a polars DataFrame (any column dtypes; strings are parsed).

    Error rows are taken from a ``ROW`` column when present, else are record numbers counted
    from ``first_row`` (2 for a file with a header line). A missing column is reported at the
    header row (``first_row - 1``, at least 1). Positions in ``columns`` count the frame's
    columns (``ROW`` aside).
    """
    columns = columns or ColumnMap()
    event_weights = event_weights or EventWeights()
    if ROW not in df.columns:
        df = df.with_row_index(ROW, offset=first_row).with_columns(pl.col(ROW).cast(pl.Int64))
    header = [c for c in df.columns if c != ROW]
    for role, pos in columns.positions().items():
        if pos > len(header):
            reason = f"no {role} column {pos}: the file has {len(header)} columns"
            raise DataError(source, max(first_row - 1, 1), str(pos), reason)
    columns = columns.named(header)
    for name in (columns.user, columns.item, columns.timestamp):
        if name is not None and name not in df.columns:
            have = ", ".join(c for c in df.columns if c != ROW)
            raise DataError(source, max(first_row - 1, 1), name, f"missing column (have: {have})")
    if df.height == 0:
        raise DataError(source, first_row, columns.user, "no rows")
    rows = df[ROW]
    errors: list[tuple[int, DataError]] = []

    def check(raw: pl.Series, code: pl.Series, column: str, reasons: dict[int, str]) -> None:
        found = _first_error(source, rows, raw, code, column, reasons)
        if found is not None:
            errors.append(found)

    user, code = _parse_id(df[columns.user])
    check(df[columns.user], code, columns.user, {1: "empty user id"})
    item, code = _parse_id(df[columns.item])
    check(df[columns.item], code, columns.item, {1: "empty item id"})

    has_weight = columns.weight is not None and columns.weight in df.columns
    has_event = columns.event is not None and columns.event in df.columns
    event: pl.Series | None = None
    if has_event:
        assert columns.event is not None
        raw_event = df[columns.event]
        event = raw_event.cast(pl.String).str.strip_chars().str.to_lowercase()
        table = event_weights.normalized()
        rating = (event_weights.rating_event or "").strip().lower() or None
        known = set(table) | ({rating} if rating else set())
        missing = event.is_null() | (event.str.len_bytes() == 0)
        unknown = ~event.is_in(list(known)) & ~missing
        code = (missing.cast(pl.UInt8) + unknown.cast(pl.UInt8) * 2).fill_null(0)
        names = ", ".join(sorted(known))
        check(
            raw_event,
            code,
            columns.event,
            {1: "missing event type", 2: f"unknown event type {{value!r}} (known: {names})"},
        )
        weight = event.replace_strict(table, default=None, return_dtype=pl.Float32)
        uses_weight = (event == rating) if rating else _const(False, df.height, pl.Boolean)
        uses_weight = uses_weight.fill_null(False)
    else:
        weight = _const(1.0, df.height, pl.Float32)
        uses_weight = _const(True, df.height, pl.Boolean)

    if has_weight:
        assert columns.weight is not None
        raw_weight = df[columns.weight]
        values, code = _parse_weight(raw_weight)
        check(raw_weight, code * uses_weight.cast(pl.UInt8), columns.weight, WEIGHT_REASONS)
        weight = pl.select(pl.when(uses_weight).then(values).otherwise(weight)).to_series()
    elif has_event and uses_weight.any():
        first = int(rows.filter(uses_weight)[0])
        name = columns.weight or "weight"
        errors.append((first, DataError(source, first, name, "rating event needs a weight column")))

    if columns.timestamp is not None:
        raw_ts = df[columns.timestamp]
        ts, code = _parse_timestamp(raw_ts)
        check(raw_ts, code, columns.timestamp, TIMESTAMP_REASONS)
    else:
        ts = _const(0, df.height, pl.Int64)

    if errors:
        raise min(errors, key=lambda e: e[0])[1]

    user_idx, user_ids = natural_order_index(user)
    item_idx, item_ids = natural_order_index(item)
    event_arr = None
    if event is not None:
        # Via an Enum: numpy gathers the few distinct names instead of converting every string.
        cats = sorted(event.unique().to_list())
        codes = event.cast(pl.Enum(cats)).to_physical().to_numpy()
        event_arr = np.asarray(cats, dtype=np.str_)[codes]
    return Interactions(
        user_idx=user_idx,
        item_idx=item_idx,
        weight=weight.to_numpy().astype(np.float32, copy=True),
        timestamp=ts.to_numpy().astype(np.int64, copy=True),
        user_ids=user_ids,
        item_ids=item_ids,
        event=event_arr,
    )


# user item rating timestamp, separated by a tab (ML-100k) or '::' (ML-1M, ML-10M).
_ML_RATINGS_LINE = re.compile(r"^\s*\d+(\t|::)\d+\1\d+(\.\d+)?\1\d+\s*$")


def detect_format(path: Path) -> Format:
    """Guess the format from the name and the first line."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    with path.open("rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    line = first_line(path)
    key = header_key(line)
    for start, fmt in KNOWN_HEADERS.items():
        if key.startswith(start):
            return fmt
    match = _ML_RATINGS_LINE.match(line)
    if match:
        return "ml-100k" if match.group(1) == "\t" else "ml-1m"
    if path.name == "u.data" and not line.strip():
        return "ml-100k"
    return "delimited"


def load_interactions(
    path: str | Path,
    *,
    format: Format = "auto",
    columns: ColumnMap | None = None,
    event_weights: EventWeights | None = None,
    separator: str | None = None,
) -> Interactions:
    """Load a behaviour log. ``format="auto"`` detects it (see `detect_format`).

    ``columns`` overrides the format's column names (see `FORMAT_COLUMNS`); with positions the
    file is read as having no header. ``separator`` overrides the delimiter of text formats.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMAT_COLUMNS and fmt not in ("delimited", "parquet"):
        raise ValueError(f"unknown format {format!r}")
    columns = columns or FORMAT_COLUMNS.get(fmt, ColumnMap())
    if fmt == "parquet":
        try:
            df = pl.read_parquet(path)
        except pl.exceptions.PolarsError as e:
            raise DataError(path, None, None, f"cannot read parquet: {e}") from e
        return from_frame(df, columns, event_weights, source=path)
    line = first_line(path)
    sep = separator or ML_SEPARATORS.get(fmt) or sniff_separator(line, path)
    names = None  # the first line is the header
    if fmt in ML_SEPARATORS:
        names = ML_RATING_FIELDS
    elif fmt == "delimited" and columns.positions():
        names = [str(i) for i in range(1, len(line.split(sep)) + 1)]
    df, _ = read_table(path, sep, names=names, empty_column=str(columns.user))
    return from_frame(df, columns, event_weights, source=path, first_row=1 if names else 2)
