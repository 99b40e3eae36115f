"""The catalogue page's state: ListItems paging, and the writes (UpsertItems,
SetItemAvailability) run as widget callbacks so the page that follows shows their result."""

from __future__ import annotations

import streamlit as st

from recsys_client import Item, ItemsPage, RecsysClient, RecsysError
from recsys_dashboard.ui import chip, esc, table

FILTERS = {"all": None, "available": True, "unavailable": False}
GREEN, RED = "#34d399", "#f87171"


# --- paging: a stack of page tokens, the last one is the page shown ---------------------------


def tokens() -> list[str]:
    return st.session_state.setdefault("cat_tokens", [""])


def restart() -> None:
    st.session_state["cat_tokens"] = [""]


def page(client: RecsysClient, size: int, show: str) -> ItemsPage:
    return client.list_items(size, tokens()[-1], available=FILTERS[show])


def forward(token: str) -> None:
    tokens().append(token)


def back() -> None:
    if len(tokens()) > 1:
        tokens().pop()


# --- writes -----------------------------------------------------------------------------------


def split(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add(client: RecsysClient) -> None:
    """Form callback: upserts the item typed in, then watches it."""
    item_id = st.session_state.get("cat_new_id", "").strip()
    if not item_id:
        st.session_state["cat_message"] = ("warning", "An item needs an id.")
        return
    item = Item(
        item_id,
        st.session_state.get("cat_new_title", "").strip(),
        split(st.session_state.get("cat_new_categories", "")),
    )
    try:
        r = client.upsert_items(item)
    except RecsysError as err:
        st.session_state["cat_error"] = err
        return
    st.session_state["cat_item"] = item_id
    st.session_state["cat_message"] = (
        "success",
        f"UpsertItems stored {item_id} (changed {r.changed}, unchanged {r.unchanged}).",
    )


def set_available(client: RecsysClient, item_id: str, available: bool) -> None:
    """Button callback: SetItemAvailability for one item."""
    try:
        r = client.set_item_availability([item_id], available)
    except RecsysError as err:
        st.session_state["cat_error"] = err
        return
    state = "available" if available else "unavailable"
    st.session_state["cat_message"] = (
        "success",
        f"SetItemAvailability: {item_id} is {state} (changed {r.changed}).",
    )


# --- rendering --------------------------------------------------------------------------------


def availability(available: bool | None) -> str:
    return chip("available", GREEN) if available else chip("unavailable", RED)


def items_table(items: list[Item], watched: str) -> str:
    rows = [
        [
            f'<span class="rs-item-id">{esc(i.item_id)}</span>',
            esc(i.title),
            " ".join(f'<span class="rs-tag">{esc(c)}</span>' for c in i.categories),
            availability(i.available),
            "yes" if i.in_model else "new",
            esc(i.updated_at.strftime("%Y-%m-%d %H:%M:%S")) if i.updated_at else "",
        ]
        for i in items
    ]
    marked = {n for n, i in enumerate(items) if i.item_id == watched}
    return table(
        ["item", "title", "categories", "availability", "in model", "updated (UTC)"],
        rows,
        empty="No items on this page.",
        highlight=marked,
    )
