"""The Experiments page under Streamlit's AppTest against a real server with an A/B test (whose
users were recorded lopsidedly, so the sample-ratio check alarms) and an interleaving
experiment (whose clicks all went to one ranker): the page shows what the SDK's report says."""

# The fixtures imported from test_dashboard_support are used as same-named parameters.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from test_dashboard_app import active_users, page, table_rows, text
from test_dashboard_support import InProcessServer, Live, dash_trained, server_config  # noqa: F401

from recsys_client import Interaction, RecsysClient
from recsys_dashboard import experiments as ex
from recsys_server.config import Experiment, Variant
from recsys_server.router import assign

DUEL = Experiment(
    "duel", (Variant("a", "item_cf", 0.3), Variant("b", "svd", 0.3)), kind="interleave"
)
DUEL_CLICKS = {"item_cf": 15, "svd": 3}
SPLIT = Experiment("split", (Variant("a", "hybrid", 0.5), Variant("b", "item_cf", 0.5)))


def chart_rows(chart) -> list[dict]:
    """The rows an interval chart plots (its Arrow dataset with a label column)."""
    for d in chart.proto.datasets:
        rows = pa.ipc.open_stream(d.data.data).read_all().to_pylist()
        if rows and "label" in rows[0]:
            return rows
    raise AssertionError("no dataset with labels in the chart")


def arm(user: str) -> tuple[str, str]:
    picked = assign((DUEL, SPLIT), user)
    return ("", "") if picked is None else (picked[0].name, picked[1].name)


@pytest.fixture(scope="module")
def exp_live(dash_trained, tmp_path_factory) -> Iterator[Live]:
    """A server with both experiments and recorded traffic: 45 users of split's variant a and
    10 of b (a 50/50 split: the sample-ratio check must alarm), every third clicking its top
    item; 15 users of duel clicking an item only item_cf recommends (placed by item_cf), then
    3 clicking one only svd recommends."""
    tmp = tmp_path_factory.mktemp("dash-exp")
    srv = InProcessServer(server_config(dash_trained.artifacts, tmp, experiments=(DUEL, SPLIT)))
    try:
        srv.wait_serving()
        live = Live(dash_trained, srv.address, srv.metrics_url)
        users = active_users(live)
        split = {"a": [u for u in users if arm(u) == ("split", "a")][:45]}
        split["b"] = [u for u in users if arm(u) == ("split", "b")][:10]
        duel = [u for u in users if arm(u)[0] == "duel"]
        with RecsysClient(srv.address) as c:
            events = []
            for n, user in enumerate(split["a"] + split["b"]):
                r = c.recommend(user, 5)
                if n % 3 == 0:
                    events.append(
                        Interaction.create(
                            user,
                            r.item_ids[0],
                            "click",
                            recommendation_id=r.recommendation_id,
                            position=1,
                        )
                    )
            clicked = {"item_cf": 0, "svd": 0}
            for user in duel:
                r = c.recommend(user, 10)
                own = {m: set(c.recommend(user, 10, model=m).item_ids) for m in clicked}
                # the first users click an item only item_cf has, the last ones one only svd has
                model = "item_cf" if clicked["item_cf"] < DUEL_CLICKS["item_cf"] else "svd"
                only = own[model] - own["svd" if model == "item_cf" else "item_cf"]
                pos = next((p for p, i in enumerate(r.item_ids, 1) if i in only), None)
                if pos is None:  # every pick of that model is in the other's list too
                    continue
                events.append(
                    Interaction.create(
                        user,
                        r.item_ids[pos - 1],
                        "click",
                        recommendation_id=r.recommendation_id,
                        position=pos,
                    )
                )
                clicked[model] += 1
                if clicked == DUEL_CLICKS:
                    break
            assert clicked == DUEL_CLICKS
            c.record_interactions(events)
        assert srv.running.core.impressions.flush(timeout=60), "impressions not written"
        yield live
    finally:
        srv.stop()


@pytest.fixture
def exp_env(exp_live: Live, monkeypatch: pytest.MonkeyPatch) -> Live:
    for key, value in exp_live.env().items():
        monkeypatch.setenv(key, value)
    for key in ("RECSYS_TOKEN", "RECSYS_REPORT", "RECSYS_TLS_ROOT_CERT"):
        monkeypatch.delenv(key, raising=False)
    return exp_live


@pytest.fixture
def sdk(exp_env: Live):
    with RecsysClient(exp_env.address) as c:
        yield c


def test_ab_report_variants_differences_and_the_srm_alarm(exp_env: Live, sdk) -> None:
    at = page("experiments", exp_pick="split")
    assert list(at.selectbox(key="exp_pick").options) == ["duel", "split"]
    report = sdk.experiment_report("split")
    body = "\n".join(m.value for m in at.markdown)
    assert table_rows(body, "variant") == ex.variant_rows(report)
    assert [v.users for v in report.variants] == [45, 10]
    assert sum(v.clicks for v in report.variants) == 19  # every third of 55 users
    assert report.sample_ratio.mismatch
    shown = text(at)
    assert "Sample ratio mismatch · ALARM" in shown and "ALARM" in shown
    assert "45 / 10" in shown and "0.50 / 0.50" in shown
    # The differences: a chart per metric and the table, equal to the report's comparisons.
    assert "Differences to the control" in shown
    charts = at.get("vega_lite_chart")
    assert len(charts) == len(ex.METRICS)
    ctr = next(c for c in report.comparisons if c.metric == "ctr")
    plotted = chart_rows(charts[0])
    assert [(r["label"], r["estimate"]) for r in plotted] == [("b", pytest.approx(ctr.difference))]
    assert plotted[0]["av_low"] == pytest.approx(ctr.always_valid.low)
    assert plotted[0]["ci_high"] == pytest.approx(ctr.ci95.high)
    assert table_rows(body, "metric") == ex.comparison_rows(report)
    assert {row[1] for row in ex.comparison_rows(report)} == set(ex.METRICS.values())


def test_interleaving_preference_goes_to_the_ranker_clicked(exp_env: Live, sdk) -> None:
    at = page("experiments", exp_pick="duel")
    report = sdk.experiment_report("duel")
    i = report.interleaving
    assert (i.model_a, i.model_b, i.wins_a, i.wins_b) == ("item_cf", "svd", 15, 3)
    assert 0.5 < i.preference_a < 1 and i.always_valid.low < i.preference_a
    shown = text(at)
    assert "Preference for item_cf" in shown and ex.num(i.preference_a, ".3f") in shown
    assert "Wins svd" in shown
    assert ex.verdict(report) in shown
    assert "no split to check (interleaving)" in shown and "Sample ratio mismatch" not in shown
    (chart,) = at.get("vega_lite_chart")  # the preference with its intervals
    (row,) = chart_rows(chart)
    assert row["estimate"] == pytest.approx(i.preference_a)
    assert row["av_low"] == pytest.approx(i.always_valid.low)
    body = "\n".join(m.value for m in at.markdown)
    assert [row[0] for row in table_rows(body, "variant")] == ["a (control)", "b"]


def test_a_typed_unknown_name_is_a_note(exp_env: Live) -> None:
    at = page("experiments", exp_name="nope")
    shown = text(at)
    assert "No experiment 'nope' on this server" in shown
    assert "duel" in shown and "split" in shown  # the server names the configured ones


def test_experiment_names_from_the_metrics() -> None:
    metrics = (
        'recsys_impressions_total{experiment="none",variant="none"} 0.0\n'
        'recsys_impressions_total{experiment="duel",variant="interleaved"} 3.0\n'
        'recsys_recommendations_total{model="svd",variant="split/b",tier="popularity"} 0.0\n'
        'recsys_recommendations_total{model="svd",variant="none",tier="popularity"} 0.0\n'
    )
    assert ex.names(metrics) == ["duel", "split"]
    assert ex.names("") == []
    assert ex.num(float("nan")) == "–" and ex.interval(0.1, float("nan")) == "–"
    assert ex.interval(-0.01, 0.02) == "[-0.0100, 0.0200]"
