"""Catalogue: add an item (UpsertItems), switch an item's availability (SetItemAvailability),
see whether it is in a user's top-K (Recommend), and page through the live catalogue
(ListItems)."""

from __future__ import annotations

import streamlit as st

from recsys_client import NotFound
from recsys_dashboard import context, listing, pickers
from recsys_dashboard.explain import evidence
from recsys_dashboard.guard import show_error
from recsys_dashboard.ui import chip, esc, hero, item_row, model_color, note, panel, show, tier_chip

client = context.client()
models = client.list_models()
found = context.load_artifacts(models.version)

hero(
    "recsys-engine · catalogue",
    "The live catalogue",
    "Items are added, changed and made unavailable while the server runs; an unavailable item "
    "leaves every answer at once. Add one, switch it off and on, and watch a user's list.",
    [chip(f"version {models.version}"), chip("ListItems · UpsertItems · SetItemAvailability")],
)

# What the last write (a callback, run before this script) left behind.
err = st.session_state.pop("cat_error", None)
if err is not None:
    show_error(err)
message = st.session_state.pop("cat_message", None)
if message is not None:
    (st.success if message[0] == "success" else st.warning)(message[1])

left, right = st.columns([3, 2], gap="medium")
with left, st.container(border=True):
    st.markdown("**Add an item** · UpsertItems (an existing id is replaced)")
    with st.form("cat_add", border=False):
        cols = st.columns([1, 2, 2])
        cols[0].text_input("Item id", key="cat_new_id", placeholder="i9001")
        cols[1].text_input("Title", key="cat_new_title", placeholder="Trail shoes")
        cols[2].text_input(
            "Categories",
            key="cat_new_categories",
            placeholder="Sports, Outdoor",
            help="Comma-separated.",
        )
        st.form_submit_button("Add item", on_click=listing.add, args=(client,), type="primary")

item = None
with right, st.container(border=True):
    st.markdown("**Watched item** · GetItem, SetItemAvailability")
    watched = st.text_input(
        "Item", key="cat_item", placeholder="an item id", help="The item just added, or any id."
    ).strip()
    if watched:
        try:
            item = client.get_item(watched)
        except NotFound:
            st.caption(f"{watched} is not in the catalogue.")
    if item is not None:
        show(
            f'<div class="rs-line"><span class="rs-item-title">{esc(item.title or item.item_id)}'
            f"</span>{listing.availability(item.available)}</div>"
            f'<div class="rs-meta"><span class="rs-item-id">{esc(item.item_id)}</span>'
            + "".join(f'<span class="rs-tag">{esc(c)}</span>' for c in item.categories)
            + f"<span>{'in the model' if item.in_model else 'new: not in the model'}</span></div>"
        )
        st.button(
            "Make unavailable" if item.available else "Make available",
            key="cat_toggle",
            on_click=listing.set_available,
            args=(client, item.item_id, not item.available),
            icon=":material/toggle_on:" if item.available else ":material/toggle_off:",
        )

st.subheader("In a user's top K")
cols = st.columns([2, 1], gap="medium")
with cols[0]:
    user = pickers.user(found, key="cat_user")
with cols[1]:
    k = st.slider("Top K", 5, 50, 10, key="cat_k")
res = client.recommend(user, k, explain=True)
if item is not None:
    where = f"<b>{esc(item.item_id)}</b>"
    if item.item_id in res.item_ids:
        note(f"{where} is #{res.item_ids.index(item.item_id) + 1} in {esc(user)}'s top {k}.")
    elif not item.available:
        note(f"{where} is unavailable: no RPC returns it until it is made available again.")
    elif not item.in_model:
        note(
            f"{where} is new to the serving version (no interactions in it): only a content "
            "model ranks such items, else the next refresh trains on it. Not in the top "
            f"{k} of {esc(user)}."
        )
    else:
        note(f"{where} is not in {esc(user)}'s top {k}.")
color = model_color(res.model)
panel(
    f"{user} · {res.model}",
    color,
    tier_chip(res.fallback_tier),
    [
        item_row(
            i,
            r,
            color,
            evidence=evidence(r.explanation),
            extra=chip("watched item", "#22d3ee") if item and r.item_id == item.item_id else "",
            highlight=item is not None and r.item_id == item.item_id,
        )
        for i, r in enumerate(res.items, 1)
    ],
    empty="No items.",
)

st.subheader("Catalogue")
cols = st.columns([2, 1, 1, 1], gap="medium", vertical_alignment="bottom")
with cols[0]:
    shown = st.segmented_control(
        "Show", list(listing.FILTERS), default="all", key="cat_show", on_change=listing.restart
    )
with cols[1]:
    size = st.selectbox(
        "Page size", [25, 50, 100, 250], index=0, key="cat_size", on_change=listing.restart
    )
page = listing.page(client, size, shown or "all")
number = len(listing.tokens())
with cols[2]:
    st.button("Previous page", on_click=listing.back, disabled=number == 1, width="stretch")
with cols[3]:
    st.button(
        "Next page",
        on_click=listing.forward,
        args=(page.next_page_token,),
        disabled=not page.next_page_token,
        width="stretch",
    )
st.caption(
    f"Page {number} · {len(page.items)} items in item id order"
    + ("" if page.next_page_token else " · last page")
)
show(listing.items_table(page.items, item.item_id if item else ""))
