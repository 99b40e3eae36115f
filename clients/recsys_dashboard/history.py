"""One user's history for display: training events (with types and times when the data file is
available, else the artifacts' summed weights) plus the events this dashboard recorded."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from recsys_dashboard import context
from recsys_dashboard.artifacts import Artifacts

COLUMNS = ["time", "item", "title", "categories", "event", "weight", "source"]


def recorded(user: str) -> list[dict]:
    """Events this session sent with RecordInteractions for ``user``."""
    return [e for e in st.session_state.get("recorded", []) if e["user"] == user]


def remember(user: str, item: str, event: str, title: str, categories: list[str]) -> None:
    st.session_state.setdefault("recorded", []).append(
        {
            "user": user,
            "item": item,
            "event": event,
            "title": title,
            "categories": categories,
            "time": pd.Timestamp.now(tz="UTC"),
        }
    )


def of(user: str, found: Artifacts | None) -> pd.DataFrame:
    rows: list[dict] = []
    table = context.load_events()
    events = table.of(user) if table is not None else None
    if events is not None and len(events):
        for r in events.itertuples(index=False):
            d = r._asdict()
            item = str(d["item"])
            rows.append(
                {
                    "time": d.get("time"),
                    "item": item,
                    "title": found.title(item) if found else "",
                    "categories": ", ".join(found.categories(item)) if found else "",
                    "event": d.get("event", "rating" if "rating" in d else ""),
                    "weight": d.get("weight", d.get("rating")),
                    "source": "training data",
                }
            )
    elif found is not None:
        for item, weight in found.history(user):
            rows.append(
                {
                    "time": None,
                    "item": item,
                    "title": found.title(item),
                    "categories": ", ".join(found.categories(item)),
                    "event": "",
                    "weight": weight,
                    "source": "training history (weights only)",
                }
            )
    for e in recorded(user):
        rows.append(
            {
                "time": e["time"],
                "item": e["item"],
                "title": e["title"],
                "categories": ", ".join(e["categories"]),
                "event": e["event"],
                "weight": None,
                "source": "recorded by this dashboard",
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame.sort_values("time", ascending=False, na_position="last", kind="stable")
