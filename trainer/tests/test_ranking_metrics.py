import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core import metrics
from recsys_core.metrics import (
    as_matrix,
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    map_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

log2 = math.log2


def test_hand_case_two_of_three():
    recs, rel = [[1, 2, 3]], [{1, 3}]
    # Hits at ranks 1 and 3.
    assert precision_at_k(recs, rel, 3) == pytest.approx(2 / 3)  # 2 hits / k=3
    assert recall_at_k(recs, rel, 3) == pytest.approx(1.0)  # 2 hits / 2 relevant
    # DCG = 1/log2(2) + 1/log2(4); IDCG over min(3, 2) = 2 ranks = 1/log2(2) + 1/log2(3)
    assert ndcg_at_k(recs, rel, 3) == pytest.approx((1 + 1 / log2(4)) / (1 + 1 / log2(3)))
    # AP = (P@1 + P@3) / min(3, 2) = (1/1 + 2/3) / 2
    assert map_at_k(recs, rel, 3) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert hit_rate_at_k(recs, rel, 3) == 1.0


def test_hand_case_fewer_hits_than_relevant():
    recs, rel = [[4, 1, 5, 2, 6]], [[1, 2, 3]]
    # Hits at ranks 2 and 4; 3 relevant items.
    assert precision_at_k(recs, rel, 5) == pytest.approx(2 / 5)
    assert recall_at_k(recs, rel, 5) == pytest.approx(2 / 3)
    # DCG = 1/log2(3) + 1/log2(5); IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4)
    dcg = 1 / log2(3) + 1 / log2(5)
    idcg = 1 + 1 / log2(3) + 1 / log2(4)
    assert ndcg_at_k(recs, rel, 5) == pytest.approx(dcg / idcg)
    # AP = (P@2 + P@4) / min(5, 3) = (1/2 + 2/4) / 3
    assert map_at_k(recs, rel, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_hand_case_k_smaller_than_relevant():
    recs, rel = [[7, 8, 9]], [{8, 9, 10, 11}]
    # k=2: top-2 = [7, 8], one hit at rank 2, min(k, R) = 2.
    assert precision_at_k(recs, rel, 2) == pytest.approx(1 / 2)
    assert recall_at_k(recs, rel, 2) == pytest.approx(1 / 4)
    assert ndcg_at_k(recs, rel, 2) == pytest.approx((1 / log2(3)) / (1 + 1 / log2(3)))
    assert map_at_k(recs, rel, 2) == pytest.approx((1 / 2) / 2)


def test_averages_over_users_with_relevant_items():
    recs = [[1, 2], [3, 4], [5, 6]]
    rel = [{1}, {9}, set()]  # third user has nothing to find: skipped
    # user 0: P@2 = 1/2, user 1: 0 -> mean 1/4
    assert precision_at_k(recs, rel, 2) == pytest.approx(0.25)
    assert hit_rate_at_k(recs, rel, 2) == pytest.approx(0.5)
    assert recall_at_k(recs, rel, 2) == pytest.approx(0.5)


def test_perfect_lists():
    recs, rel = [[3, 1, 2], [5, 4, 6]], [{1, 2, 3}, {4, 5, 6}]
    for name, value in ranking_metrics(recs, rel, 3).items():
        assert value == pytest.approx(1.0), name


def test_perfect_with_fewer_relevant_than_k():
    recs, rel = [[3, 1, 2]], [{3}]
    assert ndcg_at_k(recs, rel, 3) == pytest.approx(1.0)
    assert map_at_k(recs, rel, 3) == pytest.approx(1.0)
    assert precision_at_k(recs, rel, 3) == pytest.approx(1 / 3)


def test_no_match():
    for name, value in ranking_metrics([[1, 2, 3]], [{4, 5}], 3).items():
        assert value == 0.0, name


def test_empty_lists_score_zero():
    for name, value in ranking_metrics([[], []], [{1}, {2, 3}], 5).items():
        assert value == 0.0, name


def test_nothing_to_evaluate_is_nan():
    assert math.isnan(precision_at_k([[1, 2]], [set()], 2))
    assert math.isnan(ndcg_at_k([], [], 2))


def test_padding_ragged_lists_and_repeats():
    # -1 is padding; a repeated relevant item counts once.
    assert as_matrix([[4, 4, 2], [-1, 3]], 4).tolist() == [[4, -1, 2, -1], [-1, 3, -1, -1]]
    assert precision_at_k([[4, 4, 2]], [{4}], 3) == pytest.approx(1 / 3)
    assert recall_at_k([[4, 4, 2]], [{4}], 3) == pytest.approx(1.0)


def test_array_and_list_inputs_agree():
    rng = np.random.default_rng(0)
    recs = np.array([rng.permutation(30)[:10] for _ in range(50)])
    rel = [set(rng.choice(30, size=rng.integers(1, 8), replace=False).tolist()) for _ in range(50)]
    assert ranking_metrics(recs, rel, 10) == ranking_metrics(recs.tolist(), rel, 10)
    # Truncation: a wider array evaluated at k=5 equals its first five columns.
    assert ranking_metrics(recs, rel, 5) == ranking_metrics(recs[:, :5], rel, 5)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 15), max_size=8, unique=True),
            st.sets(st.integers(0, 15), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=10,
    ),
    st.integers(1, 8),
)
def test_metric_bounds_and_identities(cases, k):
    recs = [r for r, _ in cases]
    rel = [s for _, s in cases]
    values = ranking_metrics(recs, rel, k)
    for v in values.values():
        assert 0.0 <= v <= 1.0 + 1e-12
    # Per user, recall <= hit rate and precision * k = recall * R (both count hits).
    hits = [len(set(r[:k]) & s) for r, s in cases]
    assert values[f"precision@{k}"] == pytest.approx(np.mean([h / k for h in hits]))
    assert values[f"recall@{k}"] == pytest.approx(
        np.mean([h / len(s) for h, s in zip(hits, rel, strict=True)])
    )
    assert values[f"recall@{k}"] <= values[f"hit_rate@{k}"] + 1e-12


def test_catalog_coverage():
    # Distinct items in the top 2: {1, 2, 3} out of 10.
    assert catalog_coverage([[1, 2, 9], [2, 3, 9], []], n_items=10, k=2) == pytest.approx(0.3)


FEATURES = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])


@pytest.fixture(params=["looked-up cosines", "summed feature rows"])
def feature_path(request, monkeypatch):
    """Both ways ILD is computed from features: cosines among the recommended items looked
    up by pairs, and (past DENSE_PAIRS_MAX distinct items) each list's feature rows summed."""
    if request.param == "summed feature rows":
        monkeypatch.setattr(metrics, "DENSE_PAIRS_MAX", 0)


def test_intra_list_diversity_hand_case(feature_path):
    # cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/sqrt(2): ILD = mean(1, 1 - 1/sqrt2, 1 - 1/sqrt2)
    expected = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    assert intra_list_diversity([[0, 1, 2]], 3, features=FEATURES) == pytest.approx(expected)
    # Same direction: diversity 0. A repeat is dropped, leaving no pair. An all-zero vector
    # has cosine 0 to anything.
    same = [[2.0, 2.0], [0, 0], [1, 1]]
    assert intra_list_diversity([[0, 2]], 2, features=same) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(intra_list_diversity([[0, 0]], 2, features=FEATURES))
    assert intra_list_diversity([[0, 3]], 2, features=FEATURES) == pytest.approx(1.0)


def test_intra_list_diversity_feature_and_similarity_forms_agree(feature_path):
    rng = np.random.default_rng(1)
    feats = rng.random((20, 5)) * (rng.random((20, 5)) < 0.5)
    recs = np.array([rng.permutation(20)[:6] for _ in range(30)])
    norm = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = np.divide(feats, norm, out=np.zeros_like(feats), where=norm > 0)
    sim = unit @ unit.T
    dense = intra_list_diversity(recs, 6, features=feats)
    assert intra_list_diversity(recs, 6, features=sp.csr_matrix(feats)) == pytest.approx(dense)
    assert intra_list_diversity(recs, 6, similarity=sim) == pytest.approx(dense)
    assert intra_list_diversity(recs, 6, similarity=sp.csr_matrix(sim)) == pytest.approx(dense)
    fn = intra_list_diversity(recs, 6, similarity=lambda a, b: (unit[a] * unit[b]).sum(axis=1))
    assert fn == pytest.approx(dense)
    # Brute force mean over lists of mean over pairs.
    brute = np.mean(
        [np.mean([1 - sim[a, b] for i, a in enumerate(r) for b in r[i + 1 :]]) for r in recs]
    )
    assert dense == pytest.approx(brute)


def test_intra_list_diversity_needs_two_items_and_one_source(feature_path):
    assert math.isnan(intra_list_diversity([[1], []], 3, features=FEATURES))
    with pytest.raises(ValueError):
        intra_list_diversity([[0, 1]], 2)
    with pytest.raises(ValueError):
        intra_list_diversity([[0, 1]], 2, features=FEATURES, similarity=np.eye(4))


def test_novelty_hand_case():
    popularity = np.array([6, 2, 0])  # total 8; item 2 never seen -> counted as 1
    # list [0, 1]: (-log2(6/8) - log2(2/8)) / 2; list [2]: -log2(1/8) = 3
    first = (-log2(6 / 8) - log2(2 / 8)) / 2
    assert novelty([[0, 1], [2], []], popularity, 2) == pytest.approx((first + 3) / 2)
    assert math.isnan(novelty([[]], popularity, 2))
