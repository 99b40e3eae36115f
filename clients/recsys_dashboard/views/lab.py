"""Algorithm lab: the trainer's comparison as a table and charts, and hybrid weights to play
with on one user's list."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from recsys_client import Recommendation
from recsys_dashboard import blend, charts, context, offline, pickers
from recsys_dashboard.style import MODEL_COLORS
from recsys_dashboard.ui import esc, hero, item_row, note, panel, tier_chip

client = context.client()
models = client.list_models()
found = context.load_artifacts(models.version)
report_dir = context.settings().report
comparison = (offline.from_report(report_dir) if report_dir else None) or offline.from_models(
    models
)

hero(
    "recsys-engine · algorithm lab",
    "How the five recommenders compare",
    "The trainer's offline evaluation (Precision, Recall, NDCG, MAP at K, coverage, diversity, "
    "train and inference time), and the hybrid's blend weights under your control.",
)

if not comparison.metrics:
    st.info("The server reports no offline metrics for this version (trained with --no-evaluate).")
else:
    k = comparison.k
    table = comparison.table()
    best = {comparison.label(s): comparison.best(s) for s in comparison.stems()}
    config = {}
    for s in comparison.stems():
        label = comparison.label(s)
        if s in ("ndcg", "recall"):
            config[label] = st.column_config.ProgressColumn(
                label,
                format="%.4f",
                min_value=0.0,
                max_value=float(table[label].max() or 1.0),
                width=130,
            )
        else:
            config[label] = st.column_config.NumberColumn(
                label, format="%.4f" if s in offline.ACCURACY else "%.3f", width=92
            )
    st.dataframe(table.reset_index(), hide_index=True, column_config=config)
    st.caption(
        "Best per column: "
        + ", ".join(f"{label} → {m}" for label, m in best.items() if m)
        + f". Source: {comparison.source}."
    )

    tab_acc, tab_trade, tab_cost = st.tabs(["Accuracy", "Quality vs cost", "Beyond accuracy"])
    with tab_acc:
        stems = [s for s in offline.ACCURACY if s in comparison.stems()]
        picked = st.pills(
            "Metrics",
            stems,
            selection_mode="multi",
            default=[s for s in stems if s != "hit_rate"],
            format_func=comparison.label,
            key="lab_metrics",
        )
        if picked:
            charts.render(charts.grouped_bars(comparison.long(picked), comparison.models), 340)
    with tab_trade:
        rows = [
            {
                "model": m,
                "train time (s)": max(comparison.value(m, "train_time_s"), 1e-4),
                f"NDCG@{k}": comparison.value(m, "ndcg"),
                f"coverage@{k}": comparison.value(m, "coverage"),
            }
            for m in comparison.models
        ]
        df = pd.DataFrame(rows).dropna()
        if len(df):
            charts.render(
                charts.scatter(
                    df, "train time (s)", f"NDCG@{k}", f"coverage@{k}", comparison.models
                ),
                340,
            )
            st.caption("Up and to the left is better; bubble size is catalog coverage.")
    with tab_cost:
        cols = st.columns(3, gap="medium")
        for col, stem, fmt in zip(
            cols, ("coverage", "diversity", "latency_p50_ms"), (".3f", ".3f", ".3f"), strict=True
        ):
            with col, st.container(border=True):
                st.markdown(f"**{comparison.label(stem)}**")
                df = pd.DataFrame(
                    [{"model": m, "v": comparison.value(m, stem)} for m in comparison.models]
                ).dropna()
                if len(df):
                    charts.render(charts.hbars(df, "v", comparison.models, fmt), 220)

# --- hybrid weights -------------------------------------------------------------------------

st.subheader("Hybrid weights")
hybrid = models.get("hybrid")
named = blend.components(hybrid.params) if hybrid is not None else ()
present = [m for m in named if models.get(m) is not None]
if hybrid is None or len(present) < 2:
    st.info("The serving version has no hybrid with at least two components to re-weight.")
    st.stop()

trained = blend.trained_weights(hybrid.params)
note(
    "The server takes no hybrid weights per request, so the dashboard re-blends client-side: "
    "it asks each component model (RecommendBatch) for its scores on a shared candidate pool and "
    "blends them like the trainer's hybrid, <code>Σ w·score/peak</code>. At the trained weights "
    "this reproduces the server's hybrid list."
)
controls, outcome = st.columns([1, 3], gap="large")
with controls:
    user = pickers.user(found, key="lab_user")
    k = st.slider("Top K", 3, 15, 8, key="lab_k")
    for m in present:
        st.session_state.setdefault(f"w_{m}", float(trained.get(m, 0.0)))

    def reset() -> None:
        for m in present:
            st.session_state[f"w_{m}"] = float(trained.get(m, 0.0))

    st.button("Reset to trained weights", icon=":material/restart_alt:", on_click=reset)
    weights = {
        m: st.slider(
            m, 0.0, 4.0, step=0.05, key=f"w_{m}", help=f"trained weight {trained.get(m, 0.0):g}"
        )
        for m in present
    }

cache_key = (user, models.version, tuple(sorted(trained.items())))
if st.session_state.get("lab_parts_key") != cache_key:
    st.session_state["lab_parts"] = blend.fetch(client, user, trained, tuple(present))
    st.session_state["lab_parts_key"] = cache_key
parts: blend.Parts = st.session_state["lab_parts"]
server_list = parts.hybrid.items[:k]
mine = blend.reblend(parts, weights, k)
before = {r.item_id: i for i, r in enumerate(server_list, 1)}

with outcome:
    if parts.hybrid.fallback_tier != "personalized":
        note(
            f"<b>{esc(user)}</b> has a short history: the server answers with the "
            f"{esc(parts.hybrid.fallback_tier.replace('_', ' '))} tier. The sliders show the "
            "personalised blend this user gets once past the threshold."
        )
    changed = [b.item_id for b in mine if b.item_id not in before]
    left, right = st.columns(2, gap="medium")
    with left:
        color = MODEL_COLORS["hybrid"]
        panel(
            "server hybrid · trained weights",
            color,
            tier_chip(parts.hybrid.fallback_tier),
            [item_row(i, r, color) for i, r in enumerate(server_list, 1)],
        )
    with right:
        rows = []
        for i, b in enumerate(mine, 1):
            was = before.get(b.item_id)
            if was is None:
                move = '<span class="rs-delta-new">new</span>'
            elif was > i:
                move = f'<span class="rs-delta-up">▲{was - i}</span>'
            elif was < i:
                move = f'<span class="rs-delta-down">▼{i - was}</span>'
            else:
                move = "<span>=</span>"
            total = sum(b.contributions.values())
            why = ", ".join(
                f"{m} {v / total:.0%}"
                for m, v in sorted(b.contributions.items(), key=lambda x: -x[1])
                if total > 0 and v > 0
            )
            rec = Recommendation(b.item_id, b.score, 0.0, b.title)
            rows.append(
                item_row(
                    i,
                    rec,
                    "#22d3ee",
                    why=f"Blend: {why}" if why else "",
                    extra=move,
                    confidence=False,
                )
            )
        panel(
            "re-blended · your weights",
            "#22d3ee",
            f'<span class="rs-chip">{len(changed)} new in top {k}</span>',
            rows,
        )
    contrib = pd.DataFrame(
        [
            {"item": f"{b.item_id} {b.title}"[:40], "model": m, "value": v, "order": i}
            for i, b in enumerate(mine)
            for m, v in b.contributions.items()
            if v > 0 and math.isfinite(v)
        ]
    )
    if len(contrib):
        with st.container(border=True):
            st.markdown("**What drives each re-blended item** · weighted, normalised parts")
            charts.render(charts.contributions(contrib, present), 70 + 34 * len(mine))
    approx = [m for m in present if not parts.exact[m] and weights.get(m, 0) > 0]
    if approx:
        st.caption(
            "Scale of "
            + ", ".join(approx)
            + " estimated from its best returned score (the server's hybrid does not use it, "
            "so its explanation does not pin it)."
        )
