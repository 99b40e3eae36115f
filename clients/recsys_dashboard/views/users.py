"""User explorer: history, each model's top-K side by side with explanations, tier, variant."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from recsys_client import RecommendRequest
from recsys_dashboard import context, history, pickers
from recsys_dashboard.explain import evidence
from recsys_dashboard.ui import (
    Kpi,
    chip,
    esc,
    hero,
    item_row,
    kpis,
    model_color,
    note,
    panel,
    show,
    table,
    tier_chip,
)

EVENT_COLORS = {"purchase": "#34d399", "add_to_cart": "#fbbf24", "click": "#22d3ee"}

client = context.client()
models = client.list_models()
found = context.load_artifacts(models.version)
names = [m.name for m in models.models]

hero(
    "recsys-engine · user explorer",
    "Who is this user, and what does each model make of them?",
    "History from the server (GetUserHistory), then every loaded model's top-K side by side, "
    "each item with its score, confidence, the server's explanation and its evidence.",
)

top = st.columns([2, 1, 3], gap="medium")
with top[0]:
    user = pickers.user(found, key="explorer_user")
with top[1]:
    k = st.slider("Top K", 3, 20, 8, key="explorer_k")
with top[2]:
    chosen = (
        st.pills("Models", names, selection_mode="multi", default=names, key="explorer_models")
        or names
    )

# One RPC: the default route (tier, A/B variant) plus every chosen model explicitly.
results = client.recommend_batch(
    [RecommendRequest(user, k, explain=True)]
    + [RecommendRequest(user, k, model=m, explain=True) for m in chosen]
)
routed, per_model = results[0], dict(zip(chosen, results[1:], strict=True))
past = history.fetch(client, user, found)

variant = f"{routed.experiment} / {routed.variant}" if routed.experiment else "none"
kpis(
    [
        Kpi("User", user, "known to the server" if past.known else "unknown to the server"),
        Kpi(
            "History",
            f"{len(past.training):,} items",
            f"trained on · {len(past.events):,} stored events",
            "#f472b6",
        ),
        Kpi(
            "Fallback tier",
            routed.fallback_tier.replace("_", " "),
            f"default route answers with {routed.model}",
            "#34d399" if routed.fallback_tier == "personalized" else "#fbbf24",
        ),
        Kpi("A/B variant", variant, "from the server's answer", "#22d3ee"),
    ]
)
if not past.known:
    note(
        f"<b>{esc(user)}</b> is not a known user: the server has no training history and no "
        "stored events for them, so it answers from the popularity fallback tier."
    )


def event_rows() -> list[list[str]]:
    return [
        [
            esc(r.time.strftime("%Y-%m-%d %H:%M:%S")) if pd.notna(r.time) else "",
            chip(r.event, EVENT_COLORS.get(r.event, "#a78bfa")),
            f'<span class="rs-item-id">{esc(r.item)}</span>',
            esc(r.title),
            f"{r.rating:g}" if pd.notna(r.rating) else "",
            "trained" if r.trained else "live",
        ]
        for r in past.events.itertuples(index=False)
    ]


left, right = st.columns([3, 2], gap="medium")
with left, st.container(border=True):
    st.markdown(f"**History** · GetUserHistory, version {past.version or '-'}")
    stored, trained = st.tabs(
        [f"Stored events ({len(past.events):,})", f"Training items ({len(past.training):,})"]
    )
    with stored, st.container(height=300, border=False):
        show(
            table(
                ["time (UTC)", "event", "item", "title", "rating", "model"],
                event_rows(),
                empty="No stored events: the server holds only this user's training history "
                "(summed weights, no times) or nothing.",
            )
        )
    with trained, st.container(height=300, border=False):
        show(
            table(
                ["item", "title", "weight"],
                [
                    [
                        f'<span class="rs-item-id">{esc(t.item)}</span>',
                        esc(t.title),
                        f"{t.weight:.2f}",
                    ]
                    for t in past.training.itertuples(index=False)
                ],
                empty="Not in the serving version's training data.",
            )
        )
with right, st.container(border=True):
    st.markdown("**Taste profile** · categories in the history")
    cats = past.categories()
    if len(cats):
        counts = cats.value_counts().head(8).rename_axis("category").reset_index(name="events")
        st.bar_chart(counts, x="category", y="events", horizontal=True, height=300, color="#a78bfa")
    else:
        st.caption("No categories known for this history.")

st.subheader(f"Top {k}, model by model")
st.caption(
    f"Default route: {routed.model} ({routed.fallback_tier.replace('_', ' ')}), "
    f"version {routed.model_version}. Explicit models below bypass A/B routing."
)
per_row = 3
for start in range(0, len(chosen), per_row):
    cols = st.columns(per_row, gap="medium")
    for col, name in zip(cols, chosen[start : start + per_row], strict=False):
        res = per_model[name]
        with col:
            color = model_color(name)
            panel(
                name,
                color,
                tier_chip(res.fallback_tier),
                [
                    item_row(i, r, color, evidence=evidence(r.explanation))
                    for i, r in enumerate(res.items, 1)
                ],
                empty="No items.",
            )
            with st.expander("Explanation structure"):
                st.json(
                    [
                        {"item_id": r.item_id, **dataclasses.asdict(r.explanation)}
                        for r in res.items
                        if r.explanation is not None
                    ],
                    expanded=1,
                )

shared = pd.Series([i for r in per_model.values() for i in r.item_ids]).value_counts()
agreed = shared[shared > 1]
if len(agreed):
    st.caption(
        "Recommended by several models: "
        + ", ".join(f"{i} ({n})" for i, n in agreed.head(12).items())
    )
