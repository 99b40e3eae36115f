"""One user's history from the server (GetUserHistory): the stored events with types and times,
newest first, and the serving version's training items with their summed weights. Also the
events this session sent, which the simulation page counts."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from recsys_client import NotFound, RecsysClient, UserHistory
from recsys_dashboard.artifacts import Artifacts

EVENT_COLUMNS = ["time", "item", "title", "event", "rating", "trained", "categories"]
TRAINING_COLUMNS = ["item", "title", "weight", "categories"]
LIMIT = 200


@dataclass(frozen=True)
class Past:
    known: bool
    """The server knows the user (a training history or stored events)."""
    version: str
    events: pd.DataFrame
    """Stored events, newest first: :data:`EVENT_COLUMNS`."""
    training: pd.DataFrame
    """The serving version's training items, heaviest first: :data:`TRAINING_COLUMNS`."""

    def categories(self) -> pd.Series:
        """One category per (item, category) of the history, for the taste profile."""
        cats = pd.concat([self.events["categories"], self.training["categories"]])
        cats = cats.explode()
        return cats[cats.notna() & cats.astype(bool)] if len(cats) else cats


def fetch(client: RecsysClient, user: str, found: Artifacts | None, limit: int = LIMIT) -> Past:
    """The user's history through the SDK; an unknown user (NOT_FOUND) has an empty one.
    Categories come from the trainer's catalog when it is readable (the RPC sends titles)."""
    try:
        h = client.user_history(user, limit)
    except NotFound:
        h = UserHistory(user, "", [], [])

    def cats(item: str) -> list[str]:
        return found.categories(item) if found is not None else []

    events = pd.DataFrame(
        [
            (
                e.timestamp,
                e.item_id,
                e.title,
                e.event_type,
                e.rating or None,
                e.trained,
                cats(e.item_id),
            )
            for e in h.events
        ],
        columns=EVENT_COLUMNS,
    )
    events["time"] = pd.to_datetime(events["time"], utc=True)
    training = pd.DataFrame(
        [(t.item_id, t.title, t.weight, cats(t.item_id)) for t in h.training_items],
        columns=TRAINING_COLUMNS,
    )
    return Past(bool(h.events or h.training_items), h.model_version, events, training)


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
