"""Similar items: an item's neighbours according to each model that can answer."""

from __future__ import annotations

import streamlit as st

from recsys_client import NotFound
from recsys_dashboard import context, pickers
from recsys_dashboard.style import SIMILAR_MODELS
from recsys_dashboard.ui import Kpi, chip, esc, hero, item_row, kpis, model_color, note, panel

client = context.client()
models = client.list_models()
found = context.load_artifacts(models.version)
available = [m for m in SIMILAR_MODELS if models.get(m) is not None]

hero(
    "recsys-engine · similar items",
    "Items like this one",
    "SimilarItems per model: item-CF's stored neighbours (co-interaction) next to SVD's cosine "
    "in factor space. Confidence reads the same way across both.",
)

top = st.columns([3, 1], gap="medium")
with top[0]:
    item = pickers.item(found, key="similar_item")
with top[1]:
    k = st.slider("Neighbours", 3, 20, 8, key="similar_k")

if not available:
    st.info("The serving version has neither item_cf nor svd, which SimilarItems needs.")
    st.stop()

results, missing = {}, {}
for m in available:
    try:
        results[m] = client.similar_items(item, k, m)
    except NotFound as e:
        missing[m] = e.details

if missing and not results:
    st.warning(
        f"**Item {item!r} is not in the serving model's catalog.** Pick an item from the list "
        f"or check the id. ({next(iter(missing.values()))})",
        icon=":material/search_off:",
    )
    st.stop()

title = found.title(item) if found else ""
cats = found.categories(item) if found else []
neighbours = [set(r.item_ids) for r in results.values()]
common = set.intersection(*neighbours) if neighbours else set()
kpis(
    [
        Kpi("Item", item, title or "title unknown", "#a78bfa"),
        Kpi("Categories", ", ".join(cats) or "–", "from the catalog", "#60a5fa"),
        Kpi(
            "Shared neighbours",
            f"{len(common)} of {k}" if len(results) > 1 else "–",
            "found by every model",
            "#34d399",
        ),
    ]
)

cols = st.columns(max(len(available), 2), gap="medium")
for col, m in zip(cols, available, strict=False):
    with col:
        color = model_color(m)
        if m in missing:
            panel(m, color, "", [], empty=f"Not found: {missing[m]}")
            continue
        res = results[m]
        rows = []
        for i, r in enumerate(res.items, 1):
            same = set(r.categories) & set(cats)
            extra = chip("in both", "#34d399") if r.item_id in common else ""
            why = f"shares {', '.join(sorted(same))}" if same else "no shared category"
            rows.append(item_row(i, r, color, score_label="similarity", why=why, extra=extra))
        panel(m, color, chip(f"version {res.model_version[:15]}"), rows, empty="No neighbours.")
if common:
    note(
        "Both models agree on "
        + ", ".join(f"<b>{esc(i)}</b>" for i in sorted(common))
        + ": co-interaction and latent taste point the same way."
    )
