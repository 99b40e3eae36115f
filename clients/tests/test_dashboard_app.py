"""Every dashboard page under Streamlit's AppTest against a real server: the page shows what
the SDK returns, and failures show a clear message instead of a traceback."""

# The fixtures imported from test_dashboard_support are used as same-named parameters.
# ruff: noqa: F811

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest
from test_dashboard_support import APP, PAGES, Live, dash_env, dash_trained, live  # noqa: F401

from recsys_client import (
    ComponentShare,
    ContentMatch,
    Explanation,
    Interaction,
    ItemContribution,
    NotFound,
    RecsysClient,
    SimilarUsers,
    Trending,
)
from recsys_dashboard import blend, promtext, style
from recsys_dashboard.explain import evidence

TIMEOUT = 60


def page(name: str, **state: object) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if name != "overview":
        at.switch_page(PAGES[name]).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "Traceback" not in text(at)


def text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [w.value for w in at.warning] + [e.value for e in at.error]
    parts += [i.value for i in at.info] + [s.value for s in at.success]
    return "\n".join(parts)


def table_rows(body: str, header: str) -> list[list[str]]:
    """The cells (tags stripped, entities decoded) of the rs-table whose headers include
    ``header``."""
    for found in re.findall(r'<table class="rs-table">(.*?)</table>', body):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", found)
        if f"<th>{header}</th>" not in rows[0]:
            continue
        return [
            [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", r)]
            for r in rows[1:]
        ]
    raise AssertionError(f"no table with a {header!r} column")


def ids_in_order(markup: str) -> list[str]:
    """Item ids of the ranked rows in one rendered panel, in order."""
    return re.findall(r'class="rs-item-id">([^<]+)<', markup)


def panels(at: AppTest) -> dict[str, str]:
    """Panel title -> its markup."""
    out = {}
    for m in at.markdown:
        found = re.search(r'class="rs-panel-name">.*?</span>(.*?)</div>', m.value)
        if found:
            out[found.group(1)] = m.value
    return out


def active_users(live: Live) -> list[str]:
    """Users of the training data, most active first."""
    counts: dict[str, int] = {}
    for line in live.trained.data.read_text().splitlines()[1:]:
        user = line.split("\t", 1)[0]
        counts[user] = counts.get(user, 0) + 1
    return sorted(counts, key=lambda u: (-counts[u], u))


@pytest.fixture
def sdk(dash_env: Live):
    with RecsysClient(dash_env.address) as c:
        yield c


def test_overview_shows_counts_models_metrics_and_live_traffic(dash_env: Live, sdk) -> None:
    models = sdk.list_models()
    at = page("overview")
    body = text(at)
    manifest = json.loads(next(dash_env.trained.artifacts.glob("*/manifest.json")).read_text())
    assert f"{manifest['n_users']:,}" in body  # users
    assert f"{manifest['catalog']['n_items']:,}" in body  # catalog items
    assert models.version in body
    assert "Requests / s" in body and "Latency p95" in body
    table = at.dataframe[-1].value
    assert sorted(table["model"].str.replace(" (default)", "")) == sorted(
        m.name for m in models.models
    )
    for m in models.models:
        row = table[table["model"].str.startswith(m.name)].iloc[0]
        assert row["NDCG@10"] == pytest.approx(m.metrics["ndcg@10"])
        assert row["version"] == models.version
    # A second run compares two scrapes: the rate is measured over a window, not since start.
    sdk.recommend(active_users(dash_env)[0], 5)
    at.run()
    assert re.search(r"last \d+ s|since the server started", text(at))


def test_user_explorer_matches_the_sdk_model_by_model(dash_env: Live, sdk) -> None:
    user = active_users(dash_env)[5]
    # Two stored events, so GetUserHistory has events with types and times to show.
    item = sdk.recommend(user, 1, model="popularity").item_ids[0]
    at_ = datetime(2026, 11, 5, 9, 30, tzinfo=UTC)
    sdk.record_interactions(
        [
            Interaction.create(user, item, "view", timestamp=at_),
            Interaction.create(user, item, "purchase", timestamp=at_ + timedelta(minutes=2)),
        ]
    )
    at = page("users", user=user)
    shown = panels(at)
    for m in sdk.list_models().models:
        expected = sdk.recommend(user, 8, model=m.name, explain=True)
        assert ids_in_order(shown[m.name]) == expected.item_ids
        for rec in expected.items:  # explanation text and its structured evidence
            assert rec.explanation is not None
            assert rec.explanation.text.replace("$", "&#36;")[:30] in shown[m.name]
            proof = evidence(rec.explanation)
            assert proof and f'<div class="rs-evidence">{proof}</div>' in shown[m.name]
    routed = sdk.recommend(user, 8)
    body = text(at)
    assert routed.fallback_tier.replace("_", " ") in body
    assert f"{routed.experiment} / {routed.variant}" in body
    # The history tables are GetUserHistory's answer: stored events newest first with types
    # and times, and the version's training items.
    h = sdk.user_history(user, 200)
    events = table_rows(body, "time (UTC)")
    assert [(r[2], r[1]) for r in events] == [(e.item_id, e.event_type) for e in h.events]
    assert events[0][:2] == ["2026-11-05 09:32:00", "purchase"]
    assert events[1][:2] == ["2026-11-05 09:30:00", "view"]
    assert events[0][5] == "live"  # recorded after the version was trained
    training = table_rows(body, "weight")
    assert [r[0] for r in training] == [t.item_id for t in h.training_items]
    assert len(training) > 0
    # The structured explanations are there too.
    assert at.json, "explanation structure missing"


def test_user_explorer_unknown_user_gets_a_clear_note(dash_env: Live) -> None:
    at = page("users", user="nobody-at-all")
    body = text(at)
    assert "is not a known user" in body
    assert "popularity" in body


def test_lab_table_charts_and_weights(dash_env: Live, sdk) -> None:
    user = active_users(dash_env)[20]
    models = sdk.list_models()
    at = page("lab", user=user)
    table = at.dataframe[0].value
    for m in models.models:
        row = table[table["model"] == m.name].iloc[0]
        assert row["NDCG@10"] == pytest.approx(m.metrics["ndcg@10"])
        assert row["MAP@10"] == pytest.approx(m.metrics["map@10"])
        assert row["Train time (s)"] == pytest.approx(m.metrics["train_time_s"])
    assert len(at.tabs) == 3
    # At the trained weights the client-side blend is the server's hybrid list.
    server = sdk.recommend(user, 8, model="hybrid")
    shown = panels(at)
    assert ids_in_order(shown["server hybrid · trained weights"]) == server.item_ids
    assert ids_in_order(shown["re-blended · your weights"]) == server.item_ids
    # Only item-CF weighted: the blend ranks like item-CF itself.
    for name in blend.components(sdk.list_models().get("hybrid").params):
        at.slider(key=f"w_{name}").set_value(4.0 if name == "item_cf" else 0.0)
    at.run()
    assert_clean(at)
    item_cf = sdk.recommend(user, 8, model="item_cf")
    assert ids_in_order(panels(at)["re-blended · your weights"]) == item_cf.item_ids


def test_similar_items_per_model_and_unknown_item(dash_env: Live, sdk) -> None:
    item = sdk.recommend(active_users(dash_env)[0], 1, model="popularity").item_ids[0]
    at = page("similar", item=item)
    shown = panels(at)
    for model in style.SIMILAR_MODELS:
        assert ids_in_order(shown[model]) == sdk.similar_items(item, 8, model).item_ids
    at = page("similar", item="no-such-item")
    assert "is not in the serving model's catalog" in text(at)


def test_simulation_warms_a_cold_user_up(dash_env: Live, sdk) -> None:
    at = page("simulate")
    at.button[0].click().run()  # "New cold user"
    assert_clean(at)
    user = at.session_state["user"]
    assert user.startswith("sim-")
    assert "popularity" in text(at)
    tiers = []
    for _ in range(5):
        first = next(b for b in at.button if (b.key or "").startswith("click_"))
        first.click().run()
        assert_clean(at)
        tiers.append(sdk.recommend(user, 6).fallback_tier)
        assert at.session_state["sim_last"]["item"] == first.key.removeprefix("click_")
    assert tiers == ["cold_start"] * 4 + ["personalized"]
    timeline = at.dataframe[-1].value
    assert len(timeline) == 5 and timeline["tier after"].iloc[0] == "personalized"
    assert "Past the threshold" in text(at)
    # The page shows what the server now recommends.
    now = [i for m in at.markdown if "rs-compact" in m.value for i in ids_in_order(m.value)]
    assert now == sdk.recommend(user, 6).item_ids
    before = panels(at)[next(p for p in panels(at) if p.startswith("before the click"))]
    assert "clicked" in before and "Why it changed" in text(at)


def test_catalogue_adds_toggles_and_watches_an_item(dash_env: Live, sdk) -> None:
    user = active_users(dash_env)[3]
    at = page("catalogue", user=user)
    at.text_input(key="cat_new_id").input("dash-apptest-item")
    at.text_input(key="cat_new_title").input("Apptest lamp")
    at.text_input(key="cat_new_categories").input("Home, Lighting ")
    next(b for b in at.button if b.label == "Add item").click().run()
    assert_clean(at)
    got = sdk.get_item("dash-apptest-item")
    assert (got.title, list(got.categories), got.available) == (
        "Apptest lamp",
        ["Home", "Lighting"],
        True,
    )
    assert not got.in_model
    body = text(at)
    assert "UpsertItems stored dash-apptest-item (changed 1, unchanged 0)" in body
    listed = {r[0]: r for r in table_rows(body, "availability")}
    assert listed["dash-apptest-item"][1:4] == ["Apptest lamp", "Home Lighting", "available"]
    assert listed["dash-apptest-item"][4] == "new"
    assert '<tr class="rs-hl"><td><span class="rs-item-id">dash-apptest-item<' in body
    # The user's list is Recommend's; a new item is ranked only by a content model (none here).
    assert (
        ids_in_order(panels(at)[f"{user} · {sdk.recommend(user, 10).model}"])
        == sdk.recommend(user, 10).item_ids
    )
    assert "is new to the serving version" in body

    next(b for b in at.button if b.label == "Make unavailable").click().run()
    assert_clean(at)
    assert sdk.get_item("dash-apptest-item").available is False
    assert "dash-apptest-item" in [i.item_id for i in sdk.list_items(1000, available=False).items]
    listed = {r[0]: r for r in table_rows(text(at), "availability")}
    assert listed["dash-apptest-item"][3] == "unavailable"
    at.segmented_control(key="cat_show").set_value("unavailable").run()
    assert [r[0] for r in table_rows(text(at), "availability")] == ["dash-apptest-item"]
    at.segmented_control(key="cat_show").set_value("all").run()

    # An item in the user's list leaves it when made unavailable, and comes back.
    top = sdk.recommend(user, 10).item_ids[0]
    at.text_input(key="cat_item").input(top).run()
    name = f"{user} · {sdk.recommend(user, 10).model}"
    assert ids_in_order(panels(at)[name])[0] == top
    assert f"is #1 in {user}'s top 10" in text(at)
    next(b for b in at.button if b.label == "Make unavailable").click().run()
    assert_clean(at)
    after = sdk.recommend(user, 10).item_ids
    assert top not in after and ids_in_order(panels(at)[name]) == after
    assert "is unavailable" in text(at)
    next(b for b in at.button if b.label == "Make available").click().run()
    assert sdk.get_item(top).available and sdk.recommend(user, 10).item_ids[0] == top
    assert ids_in_order(panels(at)[name])[0] == top


def test_catalogue_shows_a_new_item_reaching_a_matching_user(dash_env: Live, sdk) -> None:
    """An item added with the categories the user's history is mostly made of is in their
    list on the next run of the page, at the reserved slot, explained as new."""
    user = active_users(dash_env)[5]
    counts: dict[str, int] = {}
    for h in sdk.user_history(user, 1).training_items:
        for c in sdk.get_item(h.item_id).categories:
            counts[c] = counts.get(c, 0) + 1
    cats = sorted(counts, key=lambda c: (-counts[c], c))[:2]
    at = page("catalogue", user=user)
    at.text_input(key="cat_new_id").input("dash-apptest-match")
    at.text_input(key="cat_new_title").input("Zyxwv matching thing")
    at.text_input(key="cat_new_categories").input(", ".join(cats))
    next(b for b in at.button if b.label == "Add item").click().run()
    assert_clean(at)
    got = sdk.recommend(user, 10, explain=True)
    assert got.item_ids[2] == "dash-apptest-match"
    assert got.items[2].explanation.new_item
    body = text(at)
    assert f"is #3 in {user}'s top 10" in body
    panel_ids = ids_in_order(panels(at)[f"{user} · {got.model}"])
    assert panel_ids == got.item_ids
    assert "(new to you: just added)" in body
    sdk.set_item_availability(["dash-apptest-match"], False)  # leave the session's lists as were


def test_catalogue_refused_writes_are_messages(dash_env: Live, sdk) -> None:
    at = page("catalogue")
    next(b for b in at.button if b.label == "Add item").click().run()
    assert not at.exception and [w.value for w in at.warning] == ["An item needs an id."]
    at.text_input(key="cat_new_id").input("dash-bad-item")
    at.text_input(key="cat_new_categories").input("x" * 129)
    next(b for b in at.button if b.label == "Add item").click().run()
    assert not at.exception and "Traceback" not in text(at)
    assert "The server rejected the request." in at.error[0].value
    assert "categories" in text(at)  # the server's message names the field
    with pytest.raises(NotFound):
        sdk.get_item("dash-bad-item")


def test_catalogue_pages_through_list_items(dash_env: Live, sdk) -> None:
    at = page("catalogue")
    at.selectbox(key="cat_size").set_value(50).run()
    first = [r[0] for r in table_rows(text(at), "availability")]
    assert first == [i.item_id for i in sdk.list_items(50).items]
    next(b for b in at.button if b.label == "Next page").click().run()
    assert_clean(at)
    second = [r[0] for r in table_rows(text(at), "availability")]
    assert second == [
        i.item_id for i in sdk.list_items(50, sdk.list_items(50).next_page_token).items
    ]
    assert "Page 2" in text(at)
    next(b for b in at.button if b.label == "Previous page").click().run()
    assert [r[0] for r in table_rows(text(at), "availability")] == first


def test_evidence_lines() -> None:
    e = Explanation(
        "Because you watched A",
        "because_you_interacted",
        items=[ItemContribution("a", "A <b>", 0.5, 0.25), ItemContribution("b", "", 0.125)],
    )
    assert evidence(e) == "from A &lt;b&gt; (sim 0.50, adds 0.25) · b (0.12, 0.00)"
    users = SimilarUsers(count=3, neighbours=10, mean_similarity=0.5, max_similarity=0.75)
    assert evidence(Explanation("x", similar_users=users)) == (
        "3 of 10 neighbours · mean sim 0.50, max 0.75"
    )
    assert evidence(Explanation("x", trending=Trending(rank=2, half_life_days=7.0))) == (
        "#2 by decayed popularity (half-life 7 d)"
    )
    week = Trending(3, 7.0, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC))
    assert evidence(Explanation("x", trending=week)) == (
        "#3 by decayed popularity (half-life 7 d, window 2026-11-01 to 2026-11-08)"
    )
    parts = [ComponentShare("item_cf", 0.75, 0.5), ComponentShare("svd", 0.25, 0.125)]
    assert evidence(Explanation("x", components=parts)) == (
        "item_cf 75% (adds 0.50) · svd 25% (adds 0.12)"
    )
    match = ContentMatch(["Drama", "Noir"], [ItemContribution("h", "Heat", 1.0)])
    assert evidence(Explanation("x", content=match, new_item=True)) == (
        "your categories Drama, Noir (as in Heat) | new item: no interactions yet"
    )
    assert evidence(Explanation("plain")) == "" and evidence(None) == ""


@pytest.mark.parametrize("name", list(PAGES))
def test_server_down_shows_a_clear_message(
    name: str, dash_env: Live, dead_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_TARGET", dead_address)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if name != "overview":
        at.switch_page(PAGES[name]).run()
    assert not at.exception
    assert [e.value for e in at.error] and "Cannot reach the recsys server" in at.error[0].value
    assert dead_address in at.error[0].value and "Traceback" not in text(at)
    assert "OFFLINE" in text(at)


def test_metrics_endpoint_down_is_a_warning(dash_env: Live, monkeypatch) -> None:
    monkeypatch.setenv("RECSYS_METRICS_URL", "http://127.0.0.1:9/metrics")
    at = page("overview")
    assert any("metrics endpoint" in w.value for w in at.warning)


def test_histogram_quantiles() -> None:
    buckets = {0.001: 0.0, 0.005: 50.0, 0.01: 90.0, 0.025: 100.0, float("inf"): 100.0}
    assert promtext.quantile(buckets, 0.5) == pytest.approx(0.005)
    assert promtext.quantile(buckets, 0.95) == pytest.approx(0.0175)
    assert promtext.quantile({}, 0.5) is None
