"""Live simulation: a user clicks recommended items (recorded with RecordInteractions) and the
recommendations change; a cold user warms up past the threshold."""

from __future__ import annotations

import uuid

import pandas as pd
import streamlit as st

from recsys_client import Interaction
from recsys_dashboard import context, history, pickers
from recsys_dashboard.ui import (
    Kpi,
    chip,
    esc,
    hero,
    item_row,
    kpis,
    note,
    panel,
    progress,
    show,
    tier_chip,
)

client = context.client()
models = client.list_models()
found = context.load_artifacts(models.version)
hybrid = models.get("hybrid")
threshold = int(float(hybrid.params.get("cold_start_threshold", 5))) if hybrid else 5
EVENTS = ("click", "view", "add_to_cart", "purchase")
DONE = {"click": "clicked", "view": "viewed", "add_to_cart": "added to cart", "purchase": "bought"}

hero(
    "recsys-engine · live simulation",
    "Watch the recommendations learn",
    "Each click is sent to the server with RecordInteractions, folded into the user's live "
    "history at once, and the next Recommend sees it: the list, the explanations and, for a new "
    f"user, the fallback tier change (cold start below {threshold} items).",
)


def new_cold_user() -> None:
    # Set the picker's own state too: the browser sends its old value with the rerun.
    st.session_state["user"] = st.session_state["sim_user"] = f"sim-{uuid.uuid4().hex[:8]}"
    st.session_state.pop("sim_last", None)


top = st.columns([2, 1, 1, 1], gap="medium", vertical_alignment="bottom")
with top[0]:
    user = pickers.user(found, key="sim_user", label="Simulated user")
with top[1]:
    event = st.selectbox("Event sent", EVENTS, key="sim_event")
with top[2]:
    k = st.slider("Top K", 3, 12, 6, key="sim_k")
with top[3]:
    st.button("New cold user", icon=":material/person_add:", on_click=new_cold_user, type="primary")


def record(user: str, item: str, title: str, categories: list[str], before) -> None:
    """Sends one event (a button callback, run before the page reruns) and remembers the list
    it was clicked in, for the diff."""
    client.record_interactions(Interaction.create(user, item, event))
    history.remember(user, item, event, title, categories)
    st.session_state["sim_last"] = {"user": user, "item": item, "title": title, "before": before}
    st.session_state["sim_pending"] = True


now = client.recommend(user, k, explain=True)
sent = len(history.recorded(user))
trained_n = len(found.history(user)) if found is not None else 0
size = trained_n + len({e["item"] for e in history.recorded(user)})
last = st.session_state.get("sim_last")
if last is not None and last["user"] != user:
    last = None
steps: list[dict] = st.session_state.setdefault("sim_steps", {}).setdefault(user, [])
if last is not None and st.session_state.pop("sim_pending", False):
    steps.append(
        {
            "step": len(steps) + 1,
            "event": event,
            "item": last["item"],
            "title": last["title"],
            "history": size,
            "tier after": now.fallback_tier,
            "new in top K": len(set(now.item_ids) - set(last["before"].item_ids)),
        }
    )

kpis(
    [
        Kpi("User", user, "known from training" if trained_n else "new to the server", "#a78bfa"),
        Kpi("History", f"{size}", f"{trained_n} trained + {sent} sent here", "#f472b6"),
        Kpi(
            "Tier",
            now.fallback_tier.replace("_", " "),
            f"route {now.model}" + (f" · {now.experiment}/{now.variant}" if now.experiment else ""),
            "#34d399" if now.fallback_tier == "personalized" else "#fbbf24",
        ),
        Kpi("Events sent", str(sent), "this session, for this user", "#22d3ee"),
    ]
)
if size < threshold:
    progress(
        size / threshold,
        f"Warming up: {size} of {threshold} items. "
        f"{threshold - size} more and the user leaves the cold-start blend.",
    )
else:
    progress(1.0, f"Past the threshold ({threshold} items): personalised answers.")


def move(rank: int, was: int | None) -> str:
    if was is None:
        return '<span class="rs-delta-new">new</span>'
    if was > rank:
        return f'<span class="rs-delta-up">▲{was - rank}</span>'
    if was < rank:
        return f'<span class="rs-delta-down">▼{rank - was}</span>'
    return "<span>=</span>"


before = last["before"] if last is not None else None
old = {r.item_id: i for i, r in enumerate(before.items, 1)} if before else {}
show('<div style="height:.8rem"></div>')
left, right = st.columns(2, gap="large")
with left:
    st.markdown("**Recommended now** · click one to send an event")
    for i, rec in enumerate(now.items, 1):
        row = st.columns([6, 1], vertical_alignment="center")
        with row[0]:
            extra = move(i, old.get(rec.item_id)) if before else ""
            show(
                f'<div class="rs-card rs-compact">{item_row(i, rec, "#a78bfa", extra=extra)}</div>'
            )
        with row[1]:
            st.button(
                event.replace("_", " "),
                key=f"click_{rec.item_id}",
                on_click=record,
                args=(user, rec.item_id, rec.title, rec.categories, now),
                width="stretch",
            )
with right:
    if last is not None and before is not None:
        current = set(now.item_ids)
        rows = []
        for i, rec in enumerate(before.items, 1):
            if rec.item_id == last["item"]:
                status = chip(DONE[event], "#22d3ee")
            elif rec.item_id not in current:
                status = chip("left the list", "#f87171")
            else:
                status = chip(f"now #{now.item_ids.index(rec.item_id) + 1}", "#34d399")
            rows.append(item_row(i, rec, "#475569", extra=status))
        badge = tier_chip(before.fallback_tier) + " → " + tier_chip(now.fallback_tier)
        panel(f"before the {event} on {last['title'] or last['item']}", "#22d3ee", badge, rows)
        gone = [r for r in before.items if r.item_id not in current]
        mentions = [r for r in now.items if r.explanation and last["title"] in r.explanation.text]
        reasons = []
        if before.fallback_tier != now.fallback_tier:
            reasons.append(
                f"the tier moved from <b>{esc(before.fallback_tier)}</b> to "
                f"<b>{esc(now.fallback_tier)}</b>"
            )
        if mentions and last["title"]:
            reasons.append(
                f"{len(mentions)} item(s) now say they come from <b>{esc(last['title'])}</b>"
            )
        fresh = [r for r in now.items if r.item_id not in old]
        if fresh:
            reasons.append(f"{len(fresh)} new item(s) entered, pulled in by the new history entry")
        if gone:
            reasons.append(
                f"{len(gone)} left the list (the clicked item is excluded as already seen)"
            )
        if reasons:
            note("Why it changed: " + "; ".join(reasons) + ".")
    else:
        panel(
            "what changes",
            "#22d3ee",
            chip("waiting for a click"),
            [],
            empty="Send an event on the left: this card shows the list before it, what moved, "
            "what left, and why.",
        )

if steps:
    st.markdown("**Timeline**")
    st.dataframe(pd.DataFrame(steps[::-1]), hide_index=True, height=min(38 + 35 * len(steps), 260))
