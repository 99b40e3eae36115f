"""The look: one stylesheet, one palette, shared by every page and chart."""

from __future__ import annotations

import streamlit as st

# The dashboard's copies of model facts (it does not import the trainer, and ListModels does
# not send them); server/tests/test_registry.py checks them against the model registry.
SIMILAR_MODELS = ("item_cf", "svd", "ease", "content")
"""The models SimilarItems supports."""

# One color per model and per tier, used by cards and charts alike (others get ui's grey).
MODEL_COLORS = {
    "hybrid": "#a78bfa",
    "item_cf": "#34d399",
    "user_cf": "#f472b6",
    "svd": "#fbbf24",
    "popularity": "#60a5fa",
    "ease": "#fb923c",
    "content": "#22d3ee",
}
TIER_COLORS = {
    "personalized": "#34d399",
    "cold_start": "#fbbf24",
    "popularity": "#60a5fa",
    "unspecified": "#94a3b8",
}
MUTED = "#94a3b8"
ACCENT = "#8b7bff"

# The theme `recsys-dashboard` passes to `streamlit run` (config options theme.*).
THEME = {
    "base": "dark",
    "primaryColor": ACCENT,
    "backgroundColor": "#070b14",
    "secondaryBackgroundColor": "#111827",
    "textColor": "#e7eaf3",
    "borderColor": "#1f2a44",
    "baseRadius": "12px",
    "chartCategoricalColors": list(MODEL_COLORS.values()),
}

CSS = """
<style>
:root {
  --glass: rgba(255,255,255,0.045);
  --glass-strong: rgba(255,255,255,0.07);
  --line: rgba(255,255,255,0.09);
  --muted: #94a3b8;
  --text: #e7eaf3;
  --accent: #8b7bff;
  --cyan: #22d3ee;
}
.stApp {
  background:
    radial-gradient(1100px 560px at 8% -12%, rgba(139,123,255,0.20), transparent 62%),
    radial-gradient(900px 520px at 105% -5%, rgba(34,211,238,0.12), transparent 60%),
    radial-gradient(800px 600px at 50% 120%, rgba(244,114,182,0.07), transparent 60%),
    #070b14;
  background-attachment: fixed;
}
[data-testid="stHeader"] { background: transparent; }
[data-testid="stSidebar"] {
  background: rgba(10,14,26,0.72);
  backdrop-filter: blur(18px);
  border-right: 1px solid var(--line);
}
.block-container { padding-top: 2.2rem; max-width: 1480px; }
h1, h2, h3 { letter-spacing: -0.02em; }
[data-testid="stVerticalBlockBorderWrapper"], [data-testid="stExpander"] details {
  background: var(--glass);
  border: 1px solid var(--line) !important;
  border-radius: 18px !important;
  backdrop-filter: blur(14px);
  box-shadow: 0 10px 30px rgba(0,0,0,0.28), inset 0 1px 0 rgba(255,255,255,0.04);
}
[data-testid="stDataFrame"] { border-radius: 14px; overflow: hidden; }
.rs-hero { margin: 0 0 1.2rem 0; }
.rs-eyebrow {
  text-transform: uppercase; letter-spacing: .16em; font-size: .72rem; color: var(--cyan);
  font-weight: 600;
}
.rs-title {
  font-size: 2.1rem; font-weight: 700; line-height: 1.15; margin: .2rem 0 .35rem 0;
  background: linear-gradient(90deg, #ffffff 0%, #c7bfff 55%, #7dd3fc 100%);
  -webkit-background-clip: text; background-clip: text; color: transparent;
}
.rs-sub { color: var(--muted); font-size: .98rem; max-width: 980px; }
.rs-chips { margin-top: .65rem; display: flex; gap: .45rem; flex-wrap: wrap; }
.rs-chip {
  display: inline-flex; align-items: center; gap: .35rem; padding: .18rem .62rem;
  border-radius: 999px; font-size: .76rem; font-weight: 600; border: 1px solid var(--line);
  background: var(--glass-strong); color: var(--text); white-space: nowrap;
}
.rs-dot { width: .5rem; height: .5rem; border-radius: 50%; display: inline-block; }
.rs-grid { display: grid; gap: .9rem; margin: .2rem 0 1rem 0; }
.rs-card {
  background: linear-gradient(160deg, rgba(255,255,255,0.07), rgba(255,255,255,0.025));
  border: 1px solid var(--line); border-radius: 18px; padding: 1rem 1.1rem;
  backdrop-filter: blur(14px);
  box-shadow: 0 10px 30px rgba(0,0,0,0.30), inset 0 1px 0 rgba(255,255,255,0.05);
  position: relative; overflow: hidden;
}
.rs-card::before {
  content: ""; position: absolute; inset: 0 0 auto 0; height: 2px;
  background: var(--bar, linear-gradient(90deg, var(--accent), var(--cyan))); opacity: .85;
}
.rs-kpi-label {
  text-transform: uppercase; letter-spacing: .12em; font-size: .7rem; color: var(--muted);
  font-weight: 600;
}
.rs-kpi-value {
  font-size: 1.85rem; font-weight: 700; margin-top: .25rem; color: #fff;
  font-variant-numeric: tabular-nums; letter-spacing: -0.02em;
}
.rs-kpi-sub { font-size: .8rem; color: var(--muted); margin-top: .15rem; }
.rs-panel-head {
  display: flex; align-items: center; justify-content: space-between; gap: .5rem;
  margin-bottom: .6rem;
}
.rs-panel-name {
  font-weight: 700; font-size: 1.02rem; display: flex; align-items: center; gap: .5rem;
}
.rs-item {
  display: grid; grid-template-columns: 1.9rem 1fr; gap: .65rem; padding: .6rem 0;
  border-top: 1px solid rgba(255,255,255,0.06);
}
.rs-item:first-of-type { border-top: none; }
.rs-rank {
  width: 1.9rem; height: 1.9rem; border-radius: 10px; display: flex; align-items: center;
  justify-content: center; font-weight: 700; font-size: .85rem; color: #0b1020;
}
.rs-item-title { font-weight: 600; color: var(--text); line-height: 1.25; }
.rs-item-id { color: var(--muted); font-size: .74rem; font-family: ui-monospace, monospace; }
.rs-line { display: flex; justify-content: space-between; align-items: center; gap: .6rem; }
.rs-conf { font-weight: 700; font-size: .85rem; font-variant-numeric: tabular-nums; }
.rs-meta {
  display: flex; gap: .4rem; align-items: center; flex-wrap: wrap; margin-top: .25rem;
  font-size: .74rem; color: var(--muted);
}
.rs-meta b { color: #e2e8f0; font-weight: 600; }
.rs-tag {
  padding: .05rem .45rem; border-radius: 6px; background: rgba(255,255,255,0.06);
  border: 1px solid rgba(255,255,255,0.07); color: #cbd5e1; font-size: .7rem;
}
.rs-bar {
  display: block; height: 4px; width: 100%; margin-top: .4rem; border-radius: 99px;
  background: rgba(255,255,255,0.07); overflow: hidden;
}
.rs-bar > span { display: block; height: 100%; border-radius: 99px; }
.rs-why { margin-top: .35rem; font-size: .8rem; color: #cbd5e1; font-style: italic; }
.rs-why::before { content: "↳ "; color: var(--accent); font-style: normal; }
.rs-evidence { margin-top: .2rem; font-size: .74rem; color: var(--muted); }
.rs-evidence::before { content: "evidence · "; color: var(--cyan); }
.rs-hl { outline: 1px solid var(--cyan); border-radius: 10px; background: rgba(34,211,238,0.08); }
.rs-table { width: 100%; border-collapse: collapse; font-size: .82rem; }
.rs-table th {
  text-align: left; color: var(--muted); font-weight: 600; font-size: .7rem;
  text-transform: uppercase; letter-spacing: .08em; padding: .35rem .5rem;
  border-bottom: 1px solid var(--line);
}
.rs-table td { padding: .35rem .5rem; border-bottom: 1px solid rgba(255,255,255,0.05); }
.rs-delta-up { color: #34d399; font-weight: 700; }
.rs-delta-down { color: #f87171; font-weight: 700; }
.rs-delta-new { color: #22d3ee; font-weight: 700; }
.rs-note {
  border-left: 3px solid var(--accent); background: rgba(139,123,255,0.08);
  padding: .6rem .85rem; border-radius: 0 12px 12px 0; color: #cbd5e1; font-size: .86rem;
  margin: .3rem 0 .9rem 0;
}
.rs-progress {
  height: 10px; border-radius: 99px; background: rgba(255,255,255,0.08); overflow: hidden;
}
.rs-progress > span {
  display: block; height: 100%; border-radius: 99px;
  background: linear-gradient(90deg, #fbbf24, #34d399);
}
.rs-compact { padding: .15rem .8rem; border-radius: 14px; margin-bottom: .1rem; }
.rs-compact::before { display: none; }
.rs-side-brand { font-weight: 800; font-size: 1.15rem; letter-spacing: -0.01em; }
.rs-side-brand span { color: var(--accent); }
.rs-side-row { font-size: .8rem; color: var(--muted); margin: .12rem 0; word-break: break-all; }
.rs-side-row b { color: var(--text); font-weight: 600; }
</style>
"""


def apply() -> None:
    st.markdown(CSS, unsafe_allow_html=True)


def theme_flags() -> list[str]:
    """`streamlit run` flags for :data:`THEME`."""
    flags = []
    for key, value in THEME.items():
        text = "[" + ",".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else value
        flags.append(f"--theme.{key}={text}")
    return flags
