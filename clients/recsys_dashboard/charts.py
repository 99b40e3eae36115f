"""Altair charts in the dashboard's palette: transparent, large labels, one color per model."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from recsys_dashboard.style import MODEL_COLORS

LABEL = "#cbd5e1"
GRID = "rgba(255,255,255,0.07)"


def model_scale(models: list[str]) -> alt.Scale:
    return alt.Scale(domain=models, range=[MODEL_COLORS.get(m, "#cbd5e1") for m in models])


def _finish(chart: alt.Chart, height: int) -> alt.Chart:
    return (
        chart.properties(height=height, background="transparent")
        .configure_view(strokeWidth=0)
        .configure_axis(
            labelColor=LABEL,
            titleColor=LABEL,
            gridColor=GRID,
            domainColor=GRID,
            tickColor=GRID,
            labelFontSize=12,
            titleFontSize=12,
        )
        .configure_legend(labelColor=LABEL, titleColor=LABEL, labelFontSize=12, orient="top")
    )


def render(chart: alt.Chart, height: int = 300) -> None:
    st.altair_chart(_finish(chart, height), width="stretch")


def grouped_bars(df: pd.DataFrame, models: list[str], fmt: str = ".3f") -> alt.Chart:
    """df: model, metric, value. Bars per metric, one per model side by side."""
    base = alt.Chart(df).encode(
        x=alt.X("metric:N", title=None, sort=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("model:N", sort=models),
        y=alt.Y("value:Q", title=None),
        color=alt.Color("model:N", scale=model_scale(models), title=None),
        tooltip=["model", "metric", alt.Tooltip("value:Q", format=fmt)],
    )
    return base.mark_bar(cornerRadiusTopLeft=4, cornerRadiusTopRight=4)


def hbars(df: pd.DataFrame, value: str, models: list[str], fmt: str = ".3f") -> alt.Chart:
    """df: model, <value>. One labelled horizontal bar per model."""
    base = alt.Chart(df).encode(
        y=alt.Y("model:N", sort=models, title=None),
        x=alt.X(f"{value}:Q", title=None),
        color=alt.Color("model:N", scale=model_scale(models), legend=None),
        tooltip=["model", alt.Tooltip(f"{value}:Q", format=fmt)],
    )
    bars = base.mark_bar(cornerRadiusTopRight=5, cornerRadiusBottomRight=5, height=22)
    text = base.mark_text(align="left", dx=6, color=LABEL, fontSize=12).encode(
        text=alt.Text(f"{value}:Q", format=fmt)
    )
    return bars + text


def scatter(df: pd.DataFrame, x: str, y: str, size: str, models: list[str]) -> alt.Chart:
    base = alt.Chart(df).encode(
        x=alt.X(f"{x}:Q", title=x, scale=alt.Scale(type="log")),
        y=alt.Y(f"{y}:Q", title=y, scale=alt.Scale(zero=False)),
        color=alt.Color("model:N", scale=model_scale(models), title=None),
        tooltip=["model", f"{x}:Q", f"{y}:Q", f"{size}:Q"],
    )
    points = base.mark_circle(opacity=0.85, stroke="white", strokeWidth=0.6).encode(
        size=alt.Size(f"{size}:Q", title=size, scale=alt.Scale(range=[120, 900]))
    )
    labels = base.mark_text(dy=-16, color=LABEL, fontSize=12).encode(text="model:N")
    return points + labels


def contributions(df: pd.DataFrame, models: list[str]) -> alt.Chart:
    """df: item, model, value, order. Stacked horizontal bars of each item's blend parts."""
    return (
        alt.Chart(df)
        .mark_bar(cornerRadius=3)
        .encode(
            y=alt.Y(
                "item:N", sort=alt.SortField("order"), title=None, axis=alt.Axis(labelLimit=260)
            ),
            x=alt.X("value:Q", title="weighted, normalised score", stack="zero"),
            color=alt.Color("model:N", scale=model_scale(models), title=None),
            tooltip=["item", "model", alt.Tooltip("value:Q", format=".3f")],
        )
    )


def timeline(df: pd.DataFrame, y: str, color: str) -> alt.Chart:
    """df: time, <y>. An area under a line."""
    base = alt.Chart(df).encode(
        x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
        y=alt.Y(
            f"{y}:Q",
            title=y,
            axis=alt.Axis(format=",.1f", tickMinStep=0.5),
            scale=alt.Scale(domainMin=0, nice=True),
        ),
    )
    area = base.mark_area(
        color=alt.Gradient(
            gradient="linear",
            stops=[
                alt.GradientStop(color="rgba(139,123,255,0.0)", offset=0),
                alt.GradientStop(color=color, offset=1),
            ],
            x1=1,
            x2=1,
            y1=1,
            y2=0,
        ),
        opacity=0.35,
    )
    return area + base.mark_line(color=color, strokeWidth=2, point=True)


def intervals(
    df: pd.DataFrame, color: str, reference: float = 0.0, domain: tuple[float, float] | None = None
) -> alt.Chart:
    """df: label, estimate, ci_low, ci_high, av_low, av_high. Per row the estimate with its
    always-valid interval (thin, wide) over its fixed-horizon 95% interval (thick), and a
    dashed rule at ``reference`` (no effect)."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=False, nice=True)
    y = alt.Y("label:N", title=None, sort=None, axis=alt.Axis(labelLimit=220))
    tips = [
        "label",
        alt.Tooltip("estimate:Q", format=".4f"),
        alt.Tooltip("ci_low:Q", title="95% low", format=".4f"),
        alt.Tooltip("ci_high:Q", title="95% high", format=".4f"),
        alt.Tooltip("av_low:Q", title="always-valid low", format=".4f"),
        alt.Tooltip("av_high:Q", title="always-valid high", format=".4f"),
    ]
    base = alt.Chart(df).encode(y=y, tooltip=tips)
    always = base.mark_rule(color=LABEL, strokeWidth=2, opacity=0.7).encode(
        x=alt.X("av_low:Q", title=None, scale=scale), x2="av_high:Q"
    )
    fixed = base.mark_rule(color=color, strokeWidth=9, opacity=0.85).encode(
        x=alt.X("ci_low:Q", scale=scale), x2="ci_high:Q"
    )
    point = base.mark_point(filled=True, color="white", size=70).encode(
        x=alt.X("estimate:Q", scale=scale)
    )
    zero = (
        alt.Chart(pd.DataFrame({"x": [reference]}))
        .mark_rule(color="#f87171", strokeDash=[4, 4])
        .encode(x=alt.X("x:Q", scale=scale))
    )
    return zero + always + fixed + point
