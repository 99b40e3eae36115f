"""The default model's explanations: the verb rule, the length bound, cold-start texts,
configured verbs (synthetic, no server), and on MovieLens 100k with its u.item catalogue, that
the texts name evidence the structured fields carry for nearly every item."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from srv_support import Client, serving

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server import explain as ex
from recsys_server.config import DEFAULT_VERBS, ConfigError, ServerConfig
from recsys_trainer import cli

ML100K = Path("/work/shared/datasets/ml-100k")


def fake_snap(titles, verbs=None):
    return SimpleNamespace(
        verbs=DEFAULT_VERBS | (verbs or {}),
        titles=titles,
        item_ids=[f"i{n}" for n in range(len(titles))],
        title=lambda i: titles[i] or f"i{i}",
    )


def test_verb_is_the_users_latest_event_else_neutral():
    snap = fake_snap(["Heat", "Casino", "Alien"])
    assert ex.because(snap, {0: "purchase", 1: "view"}, [0, 1]) == (
        "Because you bought Heat and viewed Casino"
    )
    assert ex.because(snap, {}, [0, 1]) == "Because you chose Heat and Casino"  # training
    assert ex.because(snap, {2: "session"}, [2]) == "Because you viewed Alien"
    assert ex.because(snap, {0: "add_to_cart"}, [0]) == "Because you added Heat to your cart"
    assert ex.because(snap, {0: "rating"}, [0]) == "Because you rated Heat"
    custom = fake_snap(["Heat"], {"purchase": "ordered", "training": "watched"})
    assert ex.because(custom, {0: "purchase"}, [0]) == "Because you ordered Heat"
    assert ex.because(custom, {}, [0]) == "Because you watched Heat"
    assert ex.past("added {} to your cart") == "added to your cart"


def test_event_verbs_config_is_checked():
    assert ServerConfig(event_verbs={"purchase": "ordered"}).verbs["purchase"] == "ordered"
    assert ServerConfig().verbs == DEFAULT_VERBS
    with pytest.raises(ConfigError, match="unknown event type 'like'"):
        ServerConfig(event_verbs={"like": "liked"})
    with pytest.raises(ConfigError, match=r"event_verbs\.view"):
        ServerConfig(event_verbs={"view": ""})
    with pytest.raises(ConfigError, match="at most one"):
        ServerConfig(event_verbs={"view": "saw {} {}"})


def test_text_leads_with_the_strongest_concrete_reason_and_fits_one_line():
    cands = [
        (0.5, 4, "Trending this week", False),
        (0.3, 1, "Popular with 22 of 50 people who share your taste", True),
        (0.2, 0, "Because you bought Heat", True),
    ]
    text = ex._text(cands, cold=False, new=False)
    assert text == "Popular with 22 of 50 people who share your taste; trending this week"
    long = [(0.9, 0, "Because you chose " + "x" * 200, True), (0.1, 4, "Trending today", False)]
    for cold in (False, True):
        for new in (False, True):
            t = ex._text(long, cold, new)
            assert 0 < len(t) <= ex.MAX_TEXT and "\n" not in t
    assert ex._text([], cold=False, new=False) == ex.NO_BLEND_SIGNAL
    assert ex._text([], cold=False, new=True).endswith("(new to you: just added)")
    assert ex.short("y" * 100).endswith("…") and len(ex.short("y" * 100)) == ex.MAX_TITLE


def test_cold_start_text_says_it_will_personalise():
    pop_first = [(0.7, 4, "Trending this week", False), (0.3, 0, "Because you chose X", True)]
    assert ex._text(pop_first, cold=True, new=False) == (
        "Popular right now; we will personalise after a few more interactions"
    )
    cf_first = [(0.6, 0, "Because you clicked X", True), (0.4, 4, "Trending", False)]
    assert ex._text(cf_first, cold=True, new=False) == (
        "Because you clicked X; we will personalise after a few more interactions"
    )


def test_different_evidence_gives_different_texts():
    a = ex._text([(0.6, 0, "Because you chose Heat", True)], False, False)
    b = ex._text([(0.6, 1, "Popular with 3 of 50 people who share your taste", True)], False, False)
    assert a != b


# -- MovieLens 100k -----------------------------------------------------------------------------


def names_evidence(e) -> bool:
    """At least one concrete reason in the structured fields that the text names."""
    t = e.text
    if any(c.title[:20] in t for c in e.items):
        return True
    su = e.similar_users
    if su.count and f"{su.count} of {su.neighbours} " in t:
        return True
    lf = e.latent_factors
    if lf.closest_item_title and lf.closest_item_title[:20] in t:
        return True
    return any(c in t for c in e.content.categories)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    if not (ML100K / "u.data").exists() or not (ML100K / "u.item").exists():
        pytest.skip(f"MovieLens 100k not found at {ML100K} (u.data and u.item)")
    root = tmp_path_factory.mktemp("ml100k")
    out = root / "artifacts"
    assert cli.main(["train", "--interactions", str(ML100K / "u.data"), "--out", str(out),
                     "--no-tune"]) == 0  # fmt: skip
    with serving(out, tmp_path_factory.mktemp("ml100k-srv")) as s:
        yield s


def test_ml100k_default_model_names_its_evidence(ml100k):
    c = Client(ml100k.address)
    try:
        users = [str(u) for u in range(1, 944)]
        total = named = 0
        lengths = []
        for u in users:
            r = c.Recommend(pb.RecommendRequest(user_id=u, k=10, explain=True))
            if r.fallback_tier != pb.FALLBACK_TIER_PERSONALIZED:
                continue
            texts = {i.explanation.text for i in r.items}
            assert len(texts) > 1, (u, texts)
            for i in r.items:
                e = i.explanation
                lengths.append(len(e.text))
                total += 1
                named += names_evidence(e)
    finally:
        c.close()
    share = named / total
    print(f"ML-100k: {named}/{total} items ({share:.1%}) name a concrete reason; "
          f"text length max {max(lengths)}, mean {np.mean(lengths):.0f}")  # fmt: skip
    assert total >= 9000
    assert share >= 0.95
    assert min(lengths) > 0 and max(lengths) <= ex.MAX_TEXT
