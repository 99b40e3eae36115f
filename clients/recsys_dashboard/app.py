"""The dashboard's entry script (``streamlit run``): page setup, sidebar, navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from recsys_client import RecsysError
from recsys_dashboard import context, style
from recsys_dashboard.guard import friendly_errors
from recsys_dashboard.ui import esc, show

HERE = Path(__file__).parent
PAGES = [
    ("views/overview.py", "Overview", ":material/space_dashboard:"),
    ("views/users.py", "User explorer", ":material/person_search:"),
    ("views/lab.py", "Algorithm lab", ":material/science:"),
    ("views/similar.py", "Similar items", ":material/hub:"),
    ("views/catalogue.py", "Catalogue", ":material/inventory_2:"),
    ("views/simulate.py", "Live simulation", ":material/play_circle:"),
    ("views/experiments.py", "Experiments", ":material/experiment:"),
]


def sidebar() -> None:
    s = context.settings()
    with st.sidebar:
        show('<div class="rs-side-brand">◆ recsys<span>.</span>dashboard</div>')
        try:
            status = context.client().health(timeout=1.5)
        except RecsysError:
            status = "OFFLINE"
        color = {"SERVING": "#34d399", "OFFLINE": "#f87171"}.get(status, "#fbbf24")
        show(
            f'<div class="rs-chips" style="margin:.6rem 0 .5rem 0"><span class="rs-chip">'
            f'<span class="rs-dot" style="background:{color}"></span>{esc(status)}</span></div>'
            f'<div class="rs-side-row">server <b>{esc(s.target)}</b></div>'
            f'<div class="rs-side-row">metrics <b>{esc(s.metrics_url)}</b></div>'
            f'<div class="rs-side-row">artifacts <b>{esc(s.artifacts or "-")}</b></div>'
        )


st.set_page_config(
    page_title="recsys dashboard",
    page_icon=":material/insights:",
    layout="wide",
    initial_sidebar_state="expanded",
)
style.apply()
page = st.navigation(
    [
        st.Page(HERE / path, title=title, icon=icon, default=i == 0)
        for i, (path, title, icon) in enumerate(PAGES)
    ]
)
sidebar()
with friendly_errors():
    page.run()
