"""HTML building blocks (glass cards, chips, item lists) rendered through st.markdown.

Everything that comes from the server or the data is escaped here: titles are data.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import streamlit as st

from recsys_client import Recommendation
from recsys_dashboard.style import MODEL_COLORS, MUTED, TIER_COLORS

TIER_LABELS = {
    "personalized": "personalized",
    "cold_start": "cold start",
    "popularity": "popularity fallback",
    "unspecified": "unspecified",
}


def esc(value: object) -> str:
    # "$" would start LaTeX in st.markdown.
    return html.escape(str(value)).replace("$", "&#36;")


def show(markup: str) -> None:
    st.markdown(markup, unsafe_allow_html=True)


def model_color(model: str) -> str:
    return MODEL_COLORS.get(model, "#cbd5e1")


def chip(text: str, color: str | None = None) -> str:
    dot = f'<span class="rs-dot" style="background:{color}"></span>' if color else ""
    return f'<span class="rs-chip">{dot}{esc(text)}</span>'


def tier_chip(tier: str) -> str:
    return chip(TIER_LABELS.get(tier, tier), TIER_COLORS.get(tier, MUTED))


def hero(eyebrow: str, title: str, subtitle: str = "", chips: Iterable[str] = ()) -> None:
    chips_html = "".join(chips)
    show(
        f'<div class="rs-hero"><div class="rs-eyebrow">{esc(eyebrow)}</div>'
        f'<div class="rs-title">{esc(title)}</div>'
        + (f'<div class="rs-sub">{subtitle}</div>' if subtitle else "")
        + (f'<div class="rs-chips">{chips_html}</div>' if chips_html else "")
        + "</div>"
    )


def note(text: str) -> None:
    show(f'<div class="rs-note">{text}</div>')


@dataclass(frozen=True)
class Kpi:
    label: str
    value: str
    sub: str = ""
    color: str | None = None


def kpis(cards: Sequence[Kpi], columns: int | None = None) -> None:
    n = columns or len(cards)
    cells = []
    for c in cards:
        bar = f' style="--bar:{c.color}"' if c.color else ""
        cells.append(
            f'<div class="rs-card"{bar}><div class="rs-kpi-label">{esc(c.label)}</div>'
            f'<div class="rs-kpi-value">{esc(c.value)}</div>'
            f'<div class="rs-kpi-sub">{esc(c.sub)}</div></div>'
        )
    show(
        f'<div class="rs-grid" style="grid-template-columns:repeat({n},minmax(0,1fr))">'
        + "".join(cells)
        + "</div>"
    )


def bar(fraction: float, color: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return f'<span class="rs-bar"><span style="width:{pct:.0f}%;background:{color}"></span></span>'


def item_row(
    rank: int,
    rec: Recommendation,
    color: str,
    *,
    score_label: str = "score",
    why: str | None = None,
    extra: str = "",
    confidence: bool = True,
    evidence: str = "",
    highlight: bool = False,
) -> str:
    """One ranked item: rank badge, title and confidence, id and categories, score, the
    explanation text and ``evidence`` (escaped HTML, see explain.evidence); ``highlight``
    frames the row."""
    tags = "".join(f'<span class="rs-tag">{esc(c)}</span>' for c in rec.categories[:3])
    text = why if why is not None else (rec.explanation.text if rec.explanation else "")
    why_html = f'<div class="rs-why">{esc(text)}</div>' if text else ""
    conf = (
        f'<span class="rs-conf" style="color:{color}">{rec.confidence:.0%}</span>'
        if confidence
        else ""
    )
    meter = bar(rec.confidence, color) if confidence else ""
    proof = f'<div class="rs-evidence">{evidence}</div>' if evidence else ""
    cls = "rs-item rs-hl" if highlight else "rs-item"
    return (
        f'<div class="{cls}"><div class="rs-rank" style="background:{color}">{rank}</div>'
        f'<div><div class="rs-line"><span class="rs-item-title">{esc(rec.title or rec.item_id)}'
        f"</span>{conf}</div>"
        f'<div class="rs-line"><span class="rs-meta"><span class="rs-item-id">{esc(rec.item_id)}'
        f'</span>{tags}</span><span class="rs-meta">{extra}<span>{score_label} '
        f"<b>{rec.score:.3g}</b></span></span></div>{meter}{why_html}{proof}</div></div>"
    )


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    empty: str = "",
    highlight: Collection[int] = (),
) -> str:
    """An HTML table; cells are markup (escape data with :func:`esc`); rows whose index is in
    ``highlight`` are framed."""
    if not rows:
        return f'<div class="rs-kpi-sub">{esc(empty)}</div>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        ('<tr class="rs-hl">' if i in highlight else "<tr>")
        + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table class="rs-table"><tr>{head}</tr>{body}</table>'


def panel(title: str, color: str, badges: str, rows: Sequence[str], empty: str = "") -> None:
    """A glass card with a colored header and ranked rows."""
    body = "".join(rows) if rows else f'<div class="rs-kpi-sub">{esc(empty)}</div>'
    show(
        f'<div class="rs-card" style="--bar:{color}"><div class="rs-panel-head">'
        f'<div class="rs-panel-name"><span class="rs-dot" style="background:{color}"></span>'
        f"{esc(title)}</div><div>{badges}</div></div>{body}</div>"
    )


def progress(fraction: float, label: str) -> None:
    pct = max(0.0, min(1.0, fraction)) * 100
    show(
        f'<div class="rs-kpi-sub" style="margin-bottom:.35rem">{esc(label)}</div>'
        f'<div class="rs-progress"><span style="width:{pct:.0f}%"></span></div>'
    )
