import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.data import Interactions
from recsys_core.models import Popularity
from recsys_core.models.base import Recommender
from recsys_trainer.evaluate import Report, compare, fingerprint, top_k

log2 = math.log2


class FixedOrder(Recommender):
    """Scores every item by its position in a fixed global order (first = best); the base
    class's ``recommend`` does the top-k and the exclusion of seen items."""

    name = "fixed"

    def __init__(self, order):
        self.order = np.asarray(order)
        self.fitted_on = None

    def fit(self, train):
        self.n_users, self.n_items = train.n_users, train.n_items
        self.fitted_on = len(train)
        return self

    def score(self, users, history):
        s = np.zeros(self.n_items, np.float32)
        s[self.order] = np.arange(len(self.order), 0, -1)
        return np.tile(s, (len(users), 1))

    def explain(self, user, history, items):
        return []

    def _arrays(self):
        return {}

    def _restore(self, arrays):
        pass

    @classmethod
    def from_params(cls, params):
        return cls(params["order"])

    def params(self):
        return {"order": self.order.tolist()}


def _inter(pairs, n_users, n_items):
    u, i = (np.array(x, dtype=np.int32) for x in zip(*pairs, strict=True))
    return Interactions(
        user_idx=u,
        item_idx=i,
        weight=np.ones(len(u), np.float32),
        timestamp=np.arange(len(u), dtype=np.int64),
        user_ids=np.array([f"u{n}" for n in range(n_users)]),
        item_ids=np.array([f"i{n}" for n in range(n_items)]),
    )


# 3 users x 6 items. User 2 has no test items, so only users 0 and 1 are evaluated.
TRAIN = _inter([(0, 0), (1, 1), (2, 0), (2, 1), (2, 2)], 3, 6)
TEST = _inter([(0, 2), (0, 3), (1, 4)], 3, 6)


@pytest.fixture(scope="module")
def report():
    models = {"forward": FixedOrder([0, 1, 2, 3, 4, 5]), "backward": FixedOrder([5, 4, 3, 2, 1, 0])}
    return compare(models, TRAIN, TEST, k=2, latency_users=5, dataset="toy", split="hand-made")


def test_hand_checked_metrics(report):
    m = report.metrics["forward"]
    # user 0 (train {0}, test {2, 3}) gets [1, 2]: a hit at rank 2.
    # user 1 (train {1}, test {4}) gets [0, 2]: no hit.
    assert m["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / log2(3)) / (1 + 1 / log2(3)) / 2)
    assert m["map@2"] == pytest.approx(((1 / 2) / 2) / 2)  # AP_0 = P@2 / min(2, 2)
    assert m["hit_rate@2"] == pytest.approx(0.5)
    assert m["coverage@2"] == pytest.approx(3 / 6)  # items {0, 1, 2}
    # Train popularity: item0 2, item1 2, item2 1 of 5 -> self-information log2(5/2), log2(5).
    assert m["novelty@2"] == pytest.approx((log2(5 / 2) + log2(5)) / 2)
    # Train-matrix cosine: items 1 ({u1, u2}) and 2 ({u2}) -> 1/sqrt(2); items 0 ({u0, u2}) and
    # 2 -> 1/sqrt(2). Both lists have one pair.
    assert m["diversity@2"] == pytest.approx(1 - 1 / math.sqrt(2))

    b = report.metrics["backward"]
    # Both users get [5, 4]: user 1 hits item 4 at rank 2; items 4, 5 never seen (count 1).
    assert b["precision@2"] == pytest.approx(0.25)
    assert b["recall@2"] == pytest.approx((0 + 1) / 2)
    assert b["hit_rate@2"] == pytest.approx(0.5)
    assert b["coverage@2"] == pytest.approx(2 / 6)
    assert b["novelty@2"] == pytest.approx(log2(5))
    assert b["diversity@2"] == pytest.approx(1.0)  # unseen items: all-zero columns


def test_cost_metrics_and_protocol(report):
    for m in report.metrics.values():
        assert m["train_time_s"] >= 0
        assert 0 < m["latency_p50_ms"] <= m["latency_p99_ms"]
    p = report.protocol
    assert p["k"] == 2
    assert p["n_users_evaluated"] == 2
    assert p["dataset"] == "toy"
    assert p["split"] == "hand-made"
    assert p["fingerprint"] == fingerprint(TRAIN, TEST)
    assert report.params["forward"] == {"order": [0, 1, 2, 3, 4, 5]}


def test_models_are_fitted_on_train_only():
    model = FixedOrder(range(6))
    compare({"m": model}, TRAIN, TEST, k=2)
    assert model.fitted_on == len(TRAIN)


def test_item_features_drive_diversity():
    # Categories: items 0, 1 -> A; item 2 -> A and B; others -> B.
    feats = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 1], [0, 1]], dtype=np.float32)
    r = compare({"f": FixedOrder(range(6))}, TRAIN, TEST, k=2, item_features=feats)
    # Lists [1, 2] and [0, 2]: cos = 1/sqrt(2) each.
    assert r.metrics["f"]["diversity@2"] == pytest.approx(1 - 1 / math.sqrt(2))
    with pytest.raises(ValueError, match="rows"):
        compare({"f": FixedOrder(range(6))}, TRAIN, TEST, k=2, item_features=feats[:3])


def test_top_k_pads_and_excludes_history():
    history = TRAIN.to_csr()
    model = FixedOrder(range(6)).fit(TRAIN)
    recs = top_k(model, history, np.array([2, 0]), 4, batch_size=1)
    assert recs.tolist() == [[3, 4, 5, -1], [1, 2, 3, 4]]


def test_fingerprint_ignores_row_order():
    shuffled = TRAIN.take(np.array([4, 2, 0, 3, 1]))
    assert fingerprint(shuffled, TEST) == fingerprint(TRAIN, TEST)
    assert fingerprint(TEST, TRAIN) != fingerprint(TRAIN, TEST)


def test_json_round_trip(report, tmp_path):
    path = report.to_json(tmp_path / "r.json")
    back = Report.from_json(path)
    assert back == report
    assert back.best("ndcg") == report.best("ndcg") == "backward"


def test_json_round_trip_non_finite(tmp_path):
    r = Report(
        metrics={"a": {"ndcg@10": math.nan, "train_time_s": 1.5}},
        protocol={"k": 10},
        params={"a": {"half_life_days": math.inf}},
    )
    back = Report.from_json(r.to_json(tmp_path / "r.json"))
    assert math.isnan(back.metrics["a"]["ndcg@10"])
    assert back.metrics["a"]["train_time_s"] == 1.5
    assert back.params["a"] == {"half_life_days": "inf"}


def test_markdown_bolds_best_per_column(report, tmp_path):
    text = report.to_markdown(tmp_path / "r.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    header = [c.strip() for c in rows["Model"].split("|")[1:-1]]
    fwd = [c.strip() for c in rows["forward"].split("|")[1:-1]]
    bwd = [c.strip() for c in rows["backward"].split("|")[1:-1]]
    col = {name: n for n, name in enumerate(header)}
    # backward: NDCG 0.315 and recall 0.5 beat forward's 0.193 and 0.25; coverage is forward's.
    assert bwd[col["NDCG@2"]] == "**0.3155**" and fwd[col["NDCG@2"]] == "0.1934"
    assert bwd[col["R@2"]].startswith("**") and not fwd[col["R@2"]].startswith("**")
    assert fwd[col["Coverage@2"]].startswith("**") and not bwd[col["Coverage@2"]].startswith("**")
    # A tie bolds both.
    assert fwd[col["HR@2"]].startswith("**") and bwd[col["HR@2"]].startswith("**")
    assert "fingerprint" in text


def test_write_creates_files_and_valid_png(report, tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.write(tmp_path / "out")
    assert sorted(p.name for p in paths) == ["report.json", "report.md", "report.png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 1000


def test_real_model_runs():
    rng = np.random.default_rng(0)
    pairs = {
        (int(u), int(i))
        for u, i in zip(rng.integers(0, 30, 400), rng.integers(0, 40, 400), strict=True)
    }
    inter = _inter(sorted(pairs), 30, 40)
    from recsys_core.splits import random_holdout

    train, test = random_holdout(inter, 0.2, seed=1)
    r = compare({"popularity": Popularity()}, train, test, k=5, latency_users=10)
    m = r.metrics["popularity"]
    assert 0 <= m["ndcg@5"] <= 1
    assert r.protocol["n_users_evaluated"] > 0
    assert sp.issparse(train.to_csr())
