"""Item catalog: item id -> title and categories.

Formats:

* ``ml-100k``: MovieLens 100k ``u.item`` (``|``-separated, latin-1, 19 genre flag columns).
* ``ml-1m``: MovieLens 1M/10M ``movies.dat`` (``MovieID::Title::Genres``, no header).
* ``ml-csv``: MovieLens ``movies.csv`` (header ``movieId,title,genres``).
* ``delimited``: CSV/TSV with header ``item title categories``; any further columns (tags,
  brand, description, ...) are kept as per-item ``attributes`` (read by the content model).

Categories (genres) are separated by ``|``; MovieLens' ``(no genres listed)`` means none. Text
that is not valid UTF-8 is read as latin-1.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_core.data import (
    ROW,
    DataError,
    Interactions,
    first_line,
    header_key,
    read_table,
    sniff_separator,
)

CatalogFormat = Literal["auto", "ml-100k", "ml-1m", "ml-csv", "delimited"]

# (item, title, categories) column names of the formats read as a plain table.
TABLE_COLUMNS = {
    "ml-1m": ("item", "title", "categories"),
    "ml-csv": ("movieId", "title", "genres"),
    "delimited": ("item", "title", "categories"),
}
NO_CATEGORIES = "(no genres listed)"  # MovieLens' entry for a film without genres

# u.genre order; used when no u.genre file sits next to u.item.
ML_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML_ITEM_FIELDS = ["item", "title", "release_date", "video_release_date", "imdb_url"]


@dataclass(frozen=True, eq=False)
class Catalog:
    """Items with a title and a tuple of category names each, in ``item_ids`` order.

    ``category_names`` fixes the category order (e.g. MovieLens genre order); by default it is
    the order of first appearance.
    """

    item_ids: np.ndarray  # str
    titles: np.ndarray  # str
    categories: tuple[tuple[str, ...], ...]
    category_names: tuple[str, ...] | None = None
    attributes: tuple[dict[str, str], ...] | None = None
    """Per item, further named text columns (column -> value); None when there are none."""

    def __post_init__(self) -> None:
        if self.attributes is not None:
            object.__setattr__(self, "attributes", tuple(dict(a) for a in self.attributes))
            if len(self.attributes) != len(self.item_ids):
                raise ValueError("Catalog attributes must have one entry per item")
        object.__setattr__(self, "item_ids", np.asarray(self.item_ids, dtype=np.str_))
        object.__setattr__(self, "titles", np.asarray(self.titles, dtype=np.str_))
        object.__setattr__(self, "categories", tuple(tuple(c) for c in self.categories))
        if not (len(self.item_ids) == len(self.titles) == len(self.categories)):
            raise ValueError("Catalog arrays must all have the same length")
        seen = dict.fromkeys(c for cats in self.categories for c in cats)
        names = dict.fromkeys(self.category_names or ())
        names.update(seen)  # names used by items but not listed go last
        object.__setattr__(self, "category_names", tuple(names))

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def index(self) -> dict[str, int]:
        """Item id -> position in the catalog."""
        return {item: i for i, item in enumerate(self.item_ids.tolist())}

    def title(self, item_id: str) -> str:
        return str(self.titles[self.index[item_id]])

    def categories_of(self, item_id: str) -> tuple[str, ...]:
        return self.categories[self.index[item_id]]

    def category_matrix(
        self, item_ids: Sequence[str] | np.ndarray, names: Sequence[str] | None = None
    ) -> sp.csr_matrix:
        """Binary float32 CSR, one row per given item id (e.g. ``Interactions.item_ids``) and
        one column per category name; items missing from the catalog get an empty row."""
        names = tuple(names) if names is not None else tuple(self.category_names or ())
        col = {n: j for j, n in enumerate(names)}
        rows: list[int] = []
        cols: list[int] = []
        for r, item in enumerate(np.asarray(item_ids, dtype=np.str_).tolist()):
            pos = self.index.get(item)
            if pos is None:
                continue
            for c in self.categories[pos]:
                j = col.get(c)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        data = np.ones(len(rows), dtype=np.float32)
        m = sp.csr_matrix((data, (rows, cols)), shape=(len(item_ids), len(names)))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def to_frame(self) -> pl.DataFrame:
        """item, title, categories ('|'-joined), i.e. the generic catalog file layout."""
        return pl.DataFrame(
            {
                "item": self.item_ids,
                "title": self.titles,
                "categories": ["|".join(c) for c in self.categories],
            }
        )


def _check_ids(path: Path, df: pl.DataFrame, column: str) -> pl.Series:
    ids = df[column].str.strip_chars()
    empty = (ids.is_null() | (ids.str.len_bytes() == 0)).arg_true()
    if len(empty):
        raise DataError(path, int(df[ROW][int(empty[0])]), column, "empty item id")
    # The offending row is the first repeat of an id seen earlier.
    repeats = (~ids.is_first_distinct()).arg_true()
    if len(repeats):
        i = int(repeats[0])
        raise DataError(path, int(df[ROW][i]), column, f"duplicate item id {ids[i]!r}")
    return ids


def _ml_genres(path: Path) -> tuple[str, ...]:
    genre_file = path.with_name("u.genre")
    if not genre_file.exists():
        return ML_GENRES
    text = genre_file.read_bytes().decode("latin-1")
    pairs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, _, idx = line.rpartition("|")
        if not name or not idx.strip().isdigit():
            raise DataError(genre_file, n, None, f"expected 'name|index', got {line!r}")
        pairs.append((int(idx), name))
    return tuple(name for _, name in sorted(pairs))


def _load_ml_items(path: Path) -> Catalog:
    genres = _ml_genres(path)
    names = ML_ITEM_FIELDS + [f"genre_{g}" for g in range(len(genres))]
    df, _ = read_table(path, "|", names=names, empty_column="item")
    ids = _check_ids(path, df, "item")
    flags = df.select(pl.col(names[len(ML_ITEM_FIELDS) :]).str.strip_chars())
    bad = flags.select(
        pl.coalesce(
            pl.when(~pl.col(c).is_in(["0", "1"]) | pl.col(c).is_null()).then(pl.lit(c))
            for c in flags.columns
        ).alias("col")
    )["col"]
    bad_rows = bad.is_not_null().arg_true()
    if len(bad_rows):
        i = int(bad_rows[0])
        col = bad[i]
        raise DataError(
            path, int(df[ROW][i]), col, f"genre flag must be 0 or 1, got {flags[col][i]!r}"
        )
    matrix = flags.cast(pl.UInt8).to_numpy().astype(bool)
    genre_arr = np.asarray(genres, dtype=object)
    cats = tuple(tuple(genre_arr[row]) for row in matrix)
    titles = df["title"].fill_null("").str.strip_chars()
    return Catalog(np.asarray(ids.to_list()), np.asarray(titles.to_list()), cats, genres)


def _load_table(path: Path, fmt: CatalogFormat, separator: str | None) -> Catalog:
    item, title, categories = TABLE_COLUMNS[fmt]
    if fmt == "ml-1m":
        df, names = read_table(path, "::", names=[item, title, categories], empty_column=item)
    else:
        sep = separator or sniff_separator(first_line(path), path)
        df, names = read_table(path, sep, empty_column=item)
    for name in (item, title):
        if name not in names:
            raise DataError(path, 1, name, f"missing column (have: {', '.join(names)})")
    if df.height == 0:
        raise DataError(path, 2, item, "no rows")
    ids = _check_ids(path, df, item)
    titles = df[title].fill_null("").str.strip_chars()
    if categories in names:
        parts = df[categories].fill_null("").str.split("|").to_list()
        cats = tuple(tuple(n for c in p if (n := c.strip()) and n != NO_CATEGORIES) for p in parts)
    else:
        cats = tuple(() for _ in range(df.height))
    extra = [n for n in names if n not in (item, title, categories)]
    attrs = None
    if extra:
        values = df.select(pl.col(extra).fill_null("").str.strip_chars()).rows()
        attrs = tuple({n: v for n, v in zip(extra, row, strict=True) if v} for row in values)
    return Catalog(np.asarray(ids.to_list()), np.asarray(titles.to_list()), cats, None, attrs)


_ML_1M_LINE = re.compile(r"^\s*\d+::")


def detect_catalog_format(path: Path) -> CatalogFormat:
    line = first_line(path, encoding="latin-1")
    if _ML_1M_LINE.match(line):
        return "ml-1m"
    if header_key(line).startswith("movieid,title"):
        return "ml-csv"
    fields = line.split("|")
    if path.name == "u.item" or (len(fields) >= 6 and fields[0].strip().isdigit()):
        return "ml-100k"
    return "delimited"


def load_catalog(
    path: str | Path, *, format: CatalogFormat = "auto", separator: str | None = None
) -> Catalog:
    """Load an item catalog: a MovieLens ``u.item``, ``movies.dat`` or ``movies.csv``, or a
    generic ``item title categories`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    fmt = detect_catalog_format(path) if format == "auto" else format
    if fmt == "ml-100k":
        return _load_ml_items(path)
    if fmt in TABLE_COLUMNS:
        return _load_table(path, fmt, separator)
    raise ValueError(f"unknown catalog format {format!r}")


def with_catalog(inter: Interactions, catalog: Catalog | None) -> Interactions:
    """``inter`` with ``catalog`` attached and its item index extended by the catalogue items
    that have no interaction (appended in catalogue order), so a model that reads item
    attributes can recommend them; models that learn from interactions score them 0."""
    if catalog is None:
        return inter
    known = inter.item_index
    cold = [i for i in catalog.item_ids.tolist() if i not in known]
    item_ids = np.concatenate([inter.item_ids, np.asarray(cold, np.str_)]) if cold else None
    return dataclasses.replace(
        inter, catalog=catalog, item_ids=inter.item_ids if item_ids is None else item_ids
    )
