"""User and item pickers shared by the pages; the chosen user follows you between pages."""

from __future__ import annotations

import numpy as np
import streamlit as st

from recsys_dashboard.artifacts import Artifacts

MAX_OPTIONS = 5000  # most active users offered in the list; any id can still be typed


def default_user(found: Artifacts | None) -> str:
    """An engaged but typical user: the 90th percentile of activity (deterministic)."""
    if found is None or not len(found.user_ids):
        return "u0042"
    activity = found.activity()
    order = np.argsort(activity, kind="stable")
    return str(found.user_ids[order[int(len(order) * 0.9)]])


def user(found: Artifacts | None, key: str, label: str = "User") -> str:
    """A selectbox over known users (most active first) that also accepts any typed id."""
    current = st.session_state.get("user") or default_user(found)
    if found is not None and len(found.user_ids):
        activity = found.activity()
        order = np.argsort(-activity, kind="stable")[:MAX_OPTIONS]
        options = [str(u) for u in found.user_ids[order]]
        counts = dict(zip(options, activity[order].tolist(), strict=True))
    else:
        options, counts = [], {}
    if current not in options:
        options.insert(0, current)
    choice = st.selectbox(
        label,
        options,
        index=options.index(current),
        key=key,
        accept_new_options=True,
        format_func=lambda u: f"{u} · {counts[u]} items" if u in counts else u,
        help="Pick a user or type any id (unknown users get the popularity fallback).",
    )
    choice = (choice or current).strip() or current
    st.session_state["user"] = choice
    return choice


def item(found: Artifacts | None, key: str, fallback: str = "i0042") -> str:
    current = st.session_state.get("item")
    options = [str(i) for i in found.item_ids] if found is not None else []
    if current is None:
        current = options[len(options) // 7] if options else fallback
    if current not in options:
        options.insert(0, current)

    def label(i: str) -> str:
        title = found.title(i) if found is not None else ""
        return f"{i} · {title}" if title else i

    choice = st.selectbox(
        "Item",
        options,
        index=options.index(current),
        key=key,
        accept_new_options=True,
        format_func=label,
        help="Pick an item by id or title, or type any id.",
    )
    choice = (choice or current).strip() or current
    st.session_state["item"] = choice
    return choice
