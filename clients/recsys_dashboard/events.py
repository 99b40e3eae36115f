"""User histories with event types and times, from the interactions file the models were
trained on (the artifacts keep only summed weights per item)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("user", "item", "event", "timestamp", "weight", "rating")


@dataclass(frozen=True)
class EventTable:
    """Events sorted by user, then time; ``starts`` maps a user to its row range."""

    frame: pd.DataFrame
    users: np.ndarray
    starts: np.ndarray

    def of(self, user: str) -> pd.DataFrame:
        i = int(np.searchsorted(self.users, user))
        if i >= len(self.users) or self.users[i] != user:
            return self.frame.iloc[0:0]
        return self.frame.iloc[self.starts[i] : self.starts[i + 1]]


def load(path: Path) -> EventTable:
    """Reads a CSV/TSV log with a header naming at least ``user`` and ``item``; raises
    ValueError or OSError when it cannot."""
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    header = pd.read_csv(path, sep=sep, nrows=0).columns
    if not {"user", "item"} <= set(header):
        raise ValueError(f"{path}: needs 'user' and 'item' columns, has {list(header)}")
    use = [c for c in COLUMNS if c in header]
    frame = pd.read_csv(path, sep=sep, usecols=use, dtype={"user": str, "item": str})
    if "timestamp" in frame:
        frame["time"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True, errors="coerce")
    frame = frame.sort_values(["user", *(["time"] if "time" in frame else [])], kind="stable")
    frame = frame.reset_index(drop=True)
    users, starts = np.unique(frame["user"].to_numpy(dtype=str), return_index=True)
    return EventTable(frame, users, np.append(starts, len(frame)))
