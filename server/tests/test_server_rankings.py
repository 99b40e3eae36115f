"""The server's ranking of one user is the model's: `Snapshot.rank` (routes, stored rankings)
gives what the loaded model's batch ``recommend`` gives, and a stored ranking gives what ranking
on arrival gives. The models' own ``recommend_one`` is tested in
trainer/tests/test_recommend_one.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from srv_support import trained  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_core.models.registry import NAMES
from recsys_server import snapshot
from recsys_server.rankings import PRECOMPUTED_K, RankingCache

MODELS = NAMES


@pytest.fixture(scope="module")
def both(trained):  # noqa: F811
    path = trained / artifacts.latest_version(trained)
    return artifacts.load_version(path), snapshot.build(path, (), "hybrid")


def cases(loaded, n=25):
    """(user index, history row): training rows, the same rows for an unknown user, short
    rows (cold start), an empty row."""
    h = loaded.history
    rng = np.random.default_rng(3)
    out = []
    for u in rng.choice(h.shape[0], n, replace=False).tolist():
        row = h[u]
        out.append((u, row))
        out.append((-1, row))
        short = sp.csr_matrix(
            (np.full(2, 2.0, np.float32), row.indices[:2], [0, min(2, row.nnz)]), shape=row.shape
        )
        out.append((-1, short))
    out.append((-1, sp.csr_matrix((1, h.shape[1]), dtype=np.float32)))
    return out


@pytest.mark.parametrize("model", MODELS)
def test_rank_matches_model_recommend(both, model):
    loaded, snap = both
    deny = np.array([1, 2, 3], np.int32)
    for n, (u, row) in enumerate(cases(loaded)):
        allow = np.arange(0, row.shape[1], 2, dtype=np.int32) if n % 3 == 0 else None
        want = loaded.models[model].recommend(np.array([u]), row, 10, allow=allow, deny=deny)
        want = want.user(0)
        got = snap.rank(snap.models[model], u, row, 10, allow, deny)
        assert got.items.tolist() == want.items.tolist(), (model, u, row.nnz)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)


def test_precomputed_ranking_is_the_online_one(both):
    """A user ranked at load time gets, for any k up to PRECOMPUTED_K, exactly the items,
    scores and blend shares an on-arrival ranking of the same row gives; another row object
    for the same user (new events) is ranked on arrival; filters bypass the stored list."""
    _, snap = both
    fresh = snap.models["hybrid"]  # the model itself: ranks on arrival
    hybrid = RankingCache(fresh)
    users = np.flatnonzero(np.diff(snap.history.indptr) > 0)[:40].tolist()
    for u in users:
        row = snap.user_row(u)
        hybrid.precompute(u, row)
        for k in (1, 10, PRECOMPUTED_K):
            got = hybrid.recommend_one(u, row, k)
            got_parts = fresh.blend_parts(u, row, got.items)
            want = fresh.recommend_one(u, row, k)
            want_parts = fresh.blend_parts(u, row, want.items)
            assert got.items.tolist() == want.items.tolist(), (u, k)
            assert got.scores.tolist() == want.scores.tolist()
            np.testing.assert_array_equal(got_parts[1], want_parts[1])
            np.testing.assert_array_equal(got_parts[2], want_parts[2])
        assert hybrid.ranked_row(u) is row
    # Another history for a user with a stored ranking: all but one of their items, so the
    # one left out may come back; it must be ranked for that history, not read from the list.
    changed = 0
    for u in users:
        row = snap.user_row(u)
        if row.nnz < 6:
            continue
        other = sp.csr_matrix(
            (row.data[1:], row.indices[1:], [0, row.nnz - 1]), shape=row.shape, dtype=np.float32
        )
        got = hybrid.recommend_one(u, other, 10).items.tolist()
        assert got == fresh.recommend_one(u, other, 10).items.tolist()
        changed += got != hybrid.recommend_one(u, row, 10).items.tolist()
    assert changed > 0
    u = users[0]
    row = snap.user_row(u)
    deny = hybrid.recommend_one(u, row, 3).items[:1]
    assert deny[0] not in hybrid.recommend_one(u, row, 10, deny=deny).items.tolist()


def test_live_history_rows_and_rankings_follow_recorded_events(both):
    """A user's live history gives one row object until their next event; the hybrid ranks
    that row once and keeps it, and a new event gives a new row, ranked anew, equal to an
    on-arrival ranking of it."""
    from recsys_core.events import Event
    from recsys_server import scoring
    from recsys_server.live import LiveHistory

    _, snap = both
    fresh = snap.models["hybrid"]
    hybrid = RankingCache(fresh)
    hybrid.keep = 10
    live = LiveHistory(snap.item_index)
    user_id = str(snap.user_ids[0])
    seen = set(snap.user_row(0).indices.tolist())
    new_items = [i for i in range(snap.n_items) if i not in seen][:2]
    rows = []
    for item in new_items:
        live.fold([Event(f"e{item}", user_id, snap.item_ids[item], "purchase", 1.7e9)])
        u, row, kinds = scoring.user_history(snap, live, user_id)
        assert scoring.user_history(snap, live, user_id)[1] is row  # same events, same row
        assert kinds[item] == "purchase"
        got = hybrid.recommend_one(u, row, 10).items.tolist()
        assert hybrid.ranked_row(u) is row
        assert hybrid.recommend_one(u, row, 10).items.tolist() == got
        assert got == fresh.recommend_one(u, row, 10).items.tolist()
        assert item not in got  # an item the user just bought is history now
        rows.append(row)
    assert rows[0] is not rows[1]


def test_kept_explanations_are_the_ones_made_now_and_follow_the_row(trained):  # noqa: F811
    """A known user's hybrid explanations are kept for their row: a repeat request answers the
    same bytes a fresh snapshot makes, items new to the list are made and added, and a new
    history (another row object) is explained anew."""
    from recsys_proto.v1 import recommender_pb2 as pb
    from recsys_server import scoring
    from recsys_server.service import answer_pb

    path = trained / artifacts.latest_version(trained)
    snap, fresh = snapshot.build(path, (), "hybrid"), snapshot.build(path, (), "hybrid")
    user = str(snap.user_ids[int(np.argmax(np.diff(snap.history.indptr)))])

    def explained(s, k=10, recent=()):
        q = scoring.Query(user, k, explain=True, recent_item_ids=recent)
        return [i.explanation for i in answer_pb(scoring.recommend(s, None, (), q)).items]

    first = explained(snap, 5)
    assert len(snap.explained) == 1
    again = explained(snap, 10)  # five kept, five more made
    assert again[:5] == first and again == explained(fresh, 10)
    assert all(isinstance(e, pb.Explanation) and e.text for e in again)
    kept = snap.explained.get(
        id(snap.models["hybrid"]), snap.user_index[user], snap.user_row(snap.user_index[user])
    )
    assert len(kept) == 10
    # another history for the same user: explained for it, not read from the kept ones
    recent = [snap.item_ids[i] for i in range(3)]
    assert explained(snap, 10, recent) == explained(fresh, 10, recent)


def test_loading_explains_the_most_active_users_ahead(trained):  # noqa: F811
    """`model_versions.precompute` keeps the top-10 explanations of the most active users, the
    same bytes a request makes on a version loaded without them."""
    from recsys_server import scoring
    from recsys_server.model_versions import EXPLAINED_K, precompute
    from recsys_server.service import answer_pb

    path = trained / artifacts.latest_version(trained)
    snap, fresh = snapshot.build(path, (), "hybrid"), snapshot.build(path, (), "hybrid")
    snap.explained.max_users = 5
    precompute(snap, 8)
    active = np.argsort(-np.diff(snap.history.indptr), kind="stable")[:5].tolist()
    route = id(snap.models["hybrid"])
    for u in active:
        kept = snap.explained.get(route, u, snap.user_row(u))
        assert len(kept) == EXPLAINED_K
        q = scoring.Query(str(snap.user_ids[u]), EXPLAINED_K, explain=True)
        got = answer_pb(scoring.recommend(snap, None, (), q)).items
        want = answer_pb(scoring.recommend(fresh, None, (), q)).items
        assert [i.explanation for i in got] == [i.explanation for i in want]
        assert [kept[snap.item_index[i.item_id]] for i in got] == [
            i.explanation.SerializeToString() for i in want
        ]
    assert len(snap.explained) == 5
