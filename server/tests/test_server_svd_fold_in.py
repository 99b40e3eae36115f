"""SVD fold-in through a real server: a known user's SVD answer and the hybrid's (SVD a
component) move towards a different taste once their events for it are recorded."""

from __future__ import annotations

from srv_support import Client, artifacts_copy, event, serving, trained  # noqa: F401 (fixtures)

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb


def ids(c: Client, user: str, model: str, k: int = 20, explain: bool = False) -> list[str]:
    r = c.Recommend(pb.RecommendRequest(user_id=user, k=k, model=model, explain=explain))
    assert r.model == model
    return [i.item_id for i in r.items]


def test_known_users_svd_and_hybrid_answers_follow_recorded_events(
    artifacts_copy,  # noqa: F811
    tmp_path,
):
    loaded = artifacts.load_version(artifacts_copy / artifacts.latest_version(artifacts_copy))
    users = [str(u) for u in loaded.user_ids]
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        me = users[0]
        before = {m: ids(c, me, m) for m in ("svd", "hybrid")}
        # the SVD top 10 of the user whose list shares least with mine: a different taste
        other = min(users[1:40], key=lambda u: len(set(ids(c, u, "svd")) & set(before["svd"])))
        theirs = ids(c, other, "svd", k=10)
        events = [event(f"fold-{n}", me, it, "purchase") for n, it in enumerate(theirs)]
        assert c.RecordInteractions(pb.RecordInteractionsRequest(events=events)).recorded == 10
        for model in ("svd", "hybrid"):
            after = ids(c, me, model)
            assert after != before[model], model
            assert not set(after) & set(theirs), model  # what I now have is excluded
            # with explanations: the same items, each explained
            r = c.Recommend(pb.RecommendRequest(user_id=me, k=20, model=model, explain=True))
            assert [i.item_id for i in r.items] == after
            assert all(i.HasField("explanation") for i in r.items)
        c.close()
