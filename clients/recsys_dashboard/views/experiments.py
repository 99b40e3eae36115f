"""Experiments: an experiment's report (GetExperimentReport): per variant users, impressions,
CTR, conversions and value per user; the differences to the control with fixed and
always-valid intervals; the sample-ratio check; the interleaving preference."""

from __future__ import annotations

import streamlit as st

from recsys_client import NotFound
from recsys_dashboard import charts, context
from recsys_dashboard import experiments as ex
from recsys_dashboard.style import ACCENT
from recsys_dashboard.ui import Kpi, chip, esc, hero, kpis, note, show, table

ALARM = "#f87171"
OK = "#34d399"

client = context.client()
models = client.list_models()  # also: the server-down message comes from here
url = context.settings().metrics_url

hero(
    "recsys-engine · experiments",
    "A/B tests and interleaving",
    "The server's report of an experiment, built from the recorded impressions and the "
    "events credited to them. Intervals are at the user level: the fixed one is valid for a "
    "single look, the always-valid one however often you look.",
    [chip(f"version {models.version}", ACCENT)],
)

try:
    known = ex.configured(url)
    listed = ""
except OSError as e:
    known, listed = [], f"(the metrics endpoint {url} is not reachable: {e})"

top = st.columns([2, 2], gap="medium")
with top[0]:
    picked = st.selectbox(
        "Configured experiment",
        known,
        key="exp_pick",
        index=0 if known else None,
        placeholder="none found in the server's metrics",
    )
with top[1]:
    typed = st.text_input("…or its name", key="exp_name", placeholder="experiment name").strip()
name = typed or picked
if not name:
    st.info(
        "No experiment is configured on this server, as far as its metrics tell "
        f"{listed}. Type an experiment's name, or configure one (`[[experiments]]` in the "
        "server's config file, applied on SIGHUP).",
        icon=":material/science:",
    )
    st.stop()

try:
    with st.spinner(f"Building the report of {name} from the stored impressions…"):
        r = client.experiment_report(name)
except NotFound as e:
    st.info(f"**No experiment {name!r} on this server.** {e.details}", icon=":material/search_off:")
    st.stop()

dropped = r.impressions_dropped
srm = r.sample_ratio
kpis(
    [
        Kpi("Experiment", r.experiment, f"{r.kind} · control {r.control}", ACCENT),
        Kpi("Users", f"{ex.users(r):,}", "with at least one impression", "#60a5fa"),
        Kpi(
            "Impressions",
            f"{ex.impressions(r):,}",
            f"attribution window {r.attribution_hours:g} h",
            "#22d3ee",
        ),
        Kpi(
            "Sample ratio",
            "n/a" if srm is None else ("ALARM" if srm.mismatch else "ok"),
            "no split to check (interleaving)"
            if srm is None
            else f"p = {ex.num(srm.p_value, '.3g')} (alarm below 0.001)",
            OK if srm is None or not srm.mismatch else ALARM,
        ),
        Kpi(
            "Dropped impressions",
            f"{dropped:,}",
            "under overload since the server started",
            ALARM if dropped else OK,
        ),
    ]
)

if srm is not None and srm.mismatch:
    observed = " / ".join(f"{n:,}" for n in srm.observed)
    expected = " / ".join(f"{s:.2f}" for s in srm.expected_shares)
    show(
        f'<div class="rs-card rs-srm-alarm" style="--bar:{ALARM};border-color:{ALARM}">'
        f'<div class="rs-kpi-label" style="color:{ALARM}">Sample ratio mismatch · ALARM</div>'
        f"<div>Users per variant {esc(observed)} do not fit the configured shares "
        f"{esc(expected)} (chi-square {srm.chi_square:.1f}, p = {ex.num(srm.p_value, '.2g')} "
        "&lt; 0.001). Assignment or impression recording is broken: do not trust the "
        "comparisons below until it is explained.</div></div>"
    )
if dropped:
    note(
        f"{dropped:,} impressions were dropped under overload since the server started: they "
        "are not in these numbers, so the report undercounts."
    )

with st.container(border=True):
    st.markdown("**Variants**")
    show(
        table(
            ["variant", "model", "share", "users", "impressions", "clicks", "CTR",
             "conversions / user", "value / user"],
            [[esc(c) for c in row] for row in ex.variant_rows(r)],
            empty="No variant has an impression yet.",
        )
    )  # fmt: skip

if r.interleaving is not None:
    i = r.interleaving
    with st.container(border=True):
        st.markdown(f"**Interleaving** · preference for {i.model_a} over {i.model_b}")
        kpis(
            [
                Kpi(
                    f"Preference for {i.model_a}",
                    ex.num(i.preference_a, ".3f"),
                    f"95% {ex.interval(i.ci95.low, i.ci95.high, '.3f')} · always-valid "
                    f"{ex.interval(i.always_valid.low, i.always_valid.high, '.3f')}",
                    ACCENT,
                ),
                Kpi(f"Wins {i.model_a}", f"{i.wins_a:,}", "impressions", "#60a5fa"),
                Kpi(f"Wins {i.model_b}", f"{i.wins_b:,}", "impressions", "#f472b6"),
                Kpi("Ties", f"{i.ties:,}", f"p = {ex.num(i.p_value, '.3g')}"),
            ]
        )
        charts.render(charts.intervals(ex.preference_frame(r), ACCENT, 0.5, (0.0, 1.0)), 90)
        note(esc(ex.verdict(r)))
elif r.comparisons:
    with st.container(border=True):
        st.markdown(
            "**Differences to the control** · thick: fixed-horizon 95% interval; thin: "
            "always-valid 95% interval; dashed: no difference"
        )
        cols = st.columns(len(ex.METRICS), gap="medium")
        for col, (metric, label) in zip(cols, ex.METRICS.items(), strict=True):
            with col:
                st.caption(label)
                frame = ex.comparison_frame(r, metric)
                charts.render(charts.intervals(frame, ACCENT), 60 + 40 * len(frame))
        show(
            table(
                ["variant", "metric", "control", "variant value", "difference", "95% interval",
                 "always-valid 95%", "p", "significant", "MDE"],
                [[esc(c) for c in row] for row in ex.comparison_rows(r)],
            )
        )  # fmt: skip
else:
    note("One variant only: nothing to compare.")
