"""Overview: counts, loaded models, offline metrics at a glance, live traffic."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from recsys_dashboard import charts, context, offline, promtext
from recsys_dashboard.guard import friendly_errors
from recsys_dashboard.style import ACCENT, MODEL_COLORS
from recsys_dashboard.ui import Kpi, chip, esc, hero, kpis, note

HISTORY = 90  # scrapes kept for the rate chart (3 minutes at one per 2 s)


def ago(when: datetime | None) -> str:
    if when is None:
        return "unknown"
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def fmt_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


models = context.client().list_models()
found = context.load_artifacts(models.version)
trained = max((m.trained_at for m in models.models if m.trained_at), default=None)

hero(
    "recsys-engine · overview",
    "Serving at a glance",
    "What the server has loaded, how the models compare offline and how it is doing right now.",
    [
        chip(f"version {models.version}", ACCENT),
        chip(f"default model {models.default_model}", MODEL_COLORS.get(models.default_model)),
        chip(f"trained {ago(trained)}", "#22d3ee"),
    ],
)

kpis(
    [
        Kpi(
            "Users",
            f"{found.n_users:,}" if found else "–",
            "with training history" if found else "artifacts not readable",
            "#f472b6",
        ),
        Kpi(
            "Catalog items",
            f"{found.n_catalog:,}" if found else "–",
            f"{len(found.item_ids):,} seen in training" if found else "",
            "#60a5fa",
        ),
        Kpi("Models loaded", str(len(models.models)), ", ".join(m.name for m in models.models)),
        Kpi(
            "Trained",
            ago(trained),
            trained.strftime("%Y-%m-%d %H:%M UTC") if trained else "",
            "#22d3ee",
        ),
    ]
)
if found is None:
    note(
        "Catalog and user counts come from the trainer's artifacts, which the dashboard could "
        f"not read ({esc(st.session_state.get('artifacts_error', ''))}). Pass "
        "<code>--artifacts DIR</code>."
    )


@st.fragment(run_every=2.0)
def live_traffic() -> None:
    url = context.settings().metrics_url
    with friendly_errors():
        try:
            snap = promtext.scrape(url)
        except OSError as e:
            st.warning(
                f"**The metrics endpoint {url} is not reachable** ({e}). Live request rate "
                "and latency need it: pass `--metrics-url`.",
                icon=":material/monitoring:",
            )
            return
        samples: list[promtext.Snapshot] = st.session_state.setdefault("scrapes", [])
        previous = samples[-1] if samples else None
        samples.append(snap)
        del samples[:-HISTORY]
        t = promtext.traffic(snap, previous)
        window = "since the server started" if t.since_start else f"last {t.window:.0f} s"
        kpis(
            [
                Kpi(
                    "Requests / s",
                    "–" if t.rate is None else f"{t.rate:,.1f}",
                    window,
                    ACCENT,
                ),
                Kpi("Latency p50", fmt_ms(t.p50), window, "#34d399"),
                Kpi("Latency p95", fmt_ms(t.p95), window, "#fbbf24"),
                Kpi("Latency p99", fmt_ms(t.p99), window, "#f87171"),
                Kpi(
                    "Errors / s",
                    "–" if t.error_rate is None else f"{t.error_rate:,.2f}",
                    f"{snap.inflight:.0f} in flight",
                    "#f87171",
                ),
                Kpi("Events recorded", f"{snap.recorded:,.0f}", "since the server started"),
            ]
        )
        left, right = st.columns([3, 2], gap="medium")
        with left, st.container(border=True):
            st.markdown("**Request rate** · Recommender RPCs per second")
            rows = [
                {"time": pd.Timestamp(b.at, unit="s"), "req/s": (b.total - a.total) / (b.at - a.at)}
                for a, b in itertools.pairwise(samples)
                if b.at > a.at and b.total >= a.total
            ]
            if rows:
                charts.render(charts.timeline(pd.DataFrame(rows), "req/s", ACCENT), 220)
            else:
                st.caption("Collecting samples: the chart fills in every 2 seconds.")
        with right, st.container(border=True):
            st.markdown("**Lists served** · by model and fallback tier")
            served = [
                {"model": m, "tier": tier, "lists": v} for (m, tier), v in snap.served.items() if v
            ]
            if served:
                st.dataframe(
                    pd.DataFrame(served).sort_values("lists", ascending=False),
                    hide_index=True,
                    height=min(220, 38 + 35 * len(served)),
                    column_config={"lists": st.column_config.NumberColumn(format="%d")},
                )
            else:
                st.caption("No recommendations served yet.")


st.subheader("Live traffic")
live_traffic()

st.subheader("Models")
comparison = offline.from_models(models)
k = comparison.k
rows = []
for m in models.models:
    rows.append(
        {
            "model": m.name + (" (default)" if m.name == models.default_model else ""),
            "trained at": m.trained_at.strftime("%Y-%m-%d %H:%M") if m.trained_at else "",
            f"NDCG@{k}": comparison.value(m.name, "ndcg"),
            f"Recall@{k}": comparison.value(m.name, "recall"),
            f"Precision@{k}": comparison.value(m.name, "precision"),
            f"Coverage@{k}": comparison.value(m.name, "coverage"),
            "version": m.version,
        }
    )
table = pd.DataFrame(rows)
left, right = st.columns([3, 2], gap="medium")
with left:
    metric_cols = [c for c in table.columns if "@" in c]
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            c: st.column_config.ProgressColumn(
                c, format="%.3f", min_value=0.0, max_value=float(table[c].max() or 1.0), width=120
            )
            for c in metric_cols
        },
    )
    st.caption(f"Offline metrics from {comparison.source}. Bars are relative to the best model.")
with right, st.container(border=True):
    st.markdown(f"**NDCG@{k}** · offline, higher is better")
    ndcg = pd.DataFrame(
        [{"model": m, "ndcg": comparison.value(m, "ndcg")} for m in comparison.models]
    ).dropna()
    if len(ndcg):
        charts.render(charts.hbars(ndcg, "ndcg", comparison.models), 200)
    else:
        st.caption("The server reports no offline metrics for this version.")

st.caption(f"Updated {time.strftime('%H:%M:%S')}")
