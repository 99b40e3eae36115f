"""Read-only access to the trainer's artifacts: manifest, id maps, catalog, training histories.

The gRPC API has no user list and sends no category counts or user activity, so the dashboard
reads these from the version directory the server is serving (files are immutable once
published); histories come from GetUserHistory and the live catalogue from ListItems. Plain
numpy and pandas: the dashboard does not depend on the trainer package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class ArtifactsMissing(Exception):
    """The artifacts directory (or the version asked for) is not there or not readable."""


@dataclass(frozen=True)
class Artifacts:
    path: Path
    manifest: dict
    user_ids: np.ndarray
    item_ids: np.ndarray
    catalog: pd.DataFrame
    """Indexed by item id: ``title`` and ``categories`` (a list)."""
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None
    rows: dict[str, int] = field(default_factory=dict)
    """User id -> row of the history matrix."""

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_catalog(self) -> int:
        return len(self.catalog) if len(self.catalog) else len(self.item_ids)

    def _row(self, user: str) -> int | None:
        return self.rows.get(user)

    def knows(self, user: str) -> bool:
        return self._row(user) is not None

    def history(self, user: str) -> list[tuple[str, float]]:
        """The user's training history as (item id, summed event weight)."""
        row = self._row(user)
        if row is None or self.indptr is None:
            return []
        lo, hi = self.indptr[row], self.indptr[row + 1]
        items = self.item_ids[self.indices[lo:hi]]
        return [(str(i), float(w)) for i, w in zip(items, self.weights[lo:hi], strict=True)]

    def activity(self) -> np.ndarray:
        """Interactions (distinct items) per user, aligned with ``user_ids``."""
        if self.indptr is None:
            return np.zeros(len(self.user_ids), np.int64)
        return np.diff(self.indptr)

    def title(self, item: str) -> str:
        return str(self.catalog["title"].get(item, "")) if len(self.catalog) else ""

    def categories(self, item: str) -> list[str]:
        if not len(self.catalog) or item not in self.catalog.index:
            return []
        return list(self.catalog.at[item, "categories"])


def version_dir(root: Path, version: str | None = None) -> Path:
    """The directory of ``version`` (the one the server serves) if present, else the latest."""
    if version and (root / version / "manifest.json").is_file():
        return root / version
    latest = root / "latest"
    if not latest.is_file():
        raise ArtifactsMissing(f"no artifacts at {root} (no 'latest' file)")
    path = root / latest.read_text().strip()
    if not (path / "manifest.json").is_file():
        raise ArtifactsMissing(f"{path}: no manifest.json")
    return path


def read_catalog(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame({"title": pd.Series(dtype=str), "categories": pd.Series(dtype=object)})
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame = frame.rename(columns={frame.columns[0]: "item"}).set_index("item")
    if "title" not in frame:
        frame["title"] = ""
    cats = frame["categories"] if "categories" in frame else pd.Series("", index=frame.index)
    frame["categories"] = [[c for c in str(v).split("|") if c] for v in cats]
    return frame[["title", "categories"]]


def load(root: Path, version: str | None = None) -> Artifacts:
    path = version_dir(root, version)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        with np.load(path / "ids.npz", allow_pickle=False) as z:
            user_ids, item_ids = z["user_ids"].astype(str), z["item_ids"].astype(str)
        hist: dict[str, np.ndarray] = {}
        if (path / "history.npz").is_file():
            with np.load(path / "history.npz", allow_pickle=False) as z:
                hist = {k.removeprefix("history_"): z[k] for k in z.files}
        catalog = read_catalog(path / "catalog.tsv")
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactsMissing(f"{path}: {e}") from e
    return Artifacts(
        path=path,
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        catalog=catalog,
        indptr=hist.get("indptr"),
        indices=hist.get("indices"),
        weights=hist.get("data"),
        rows={u: i for i, u in enumerate(user_ids.tolist())},
    )
