"""`recsys_server.wire` writes the very bytes the protobuf library gives for the same answer
(`service.answer_pb(...).SerializeToString()`), for every route, tier and kind of explanation,
and the gRPC Recommend / RecommendBatch answers parse to those messages."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from srv_support import serving, trained  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_core.models.registry import NAMES
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_server import scoring, snapshot, wire
from recsys_server.explain import Reason
from recsys_server.scoring import Answer, Scored
from recsys_server.service import TIER, answer_bytes, answer_pb, query_from


@pytest.fixture(scope="module")
def snap(trained):  # noqa: F811
    return snapshot.build(trained / artifacts.latest_version(trained), (), "hybrid")


def queries(snap):
    users = [str(u) for u in snap.user_ids[:40:3].tolist()]
    items = [str(i) for i in snap.item_ids[:5]]
    for model in ["", *NAMES]:
        for user in users:
            for explain in (False, True):
                yield scoring.Query(user, 10, model, explain=explain)
        yield scoring.Query("nobody", 7, model, explain=True)  # popularity tier
        yield scoring.Query("nobody", 10, model, recent_item_ids=items[:2], explain=True)
        yield scoring.Query(users[0], 5, model, exclude_item_ids=items, explain=True)
        yield scoring.Query(users[1], 20, model, diversity=0.5, explain=True)


def test_answer_bytes_are_the_protobuf_serialisation(snap):
    for n, q in enumerate(queries(snap)):
        a = scoring.recommend(snap, None, (), q)
        a.recommendation_id = f"rid-{n}"
        assert answer_bytes(a) == answer_pb(a).SerializeToString(), q
    # kept explanations (bytes) and explanations made now (Reason) both occurred
    a = scoring.recommend(snap, None, (), scoring.Query(str(snap.user_ids[0]), 10, explain=True))
    assert all(isinstance(s.reason, bytes) for s in a.items)
    a = scoring.recommend(snap, None, (), scoring.Query("nobody", 10, "item_cf", explain=True))
    assert a.items and all(isinstance(s.reason, Reason) for s in a.items)


def test_edge_values_are_written_as_protobuf_writes_them():
    reason = Reason(text="", kind="")
    items = [
        Scored("a", 0.0, -0.0, "", ()),  # 0 is left out, -0.0 is not
        Scored("b", 1e39, -1e39, "t", ("x", "", "é")),  # beyond float32: +-inf
        Scored("c", math.nan, 0.1, "ünï", ("y",), reason),  # an empty explanation is still set
        Scored("d" * 300, 1.5, 2.5, "t" * 200, (), b""),
    ]
    for tier in TIER:
        a = Answer("u" * 130, items, "m", "v", tier, "exp", "", "")
        assert answer_bytes(a) == answer_pb(a).SerializeToString()
    empty = Answer("", [], "", "", "popularity")
    assert answer_bytes(empty) == answer_pb(empty).SerializeToString()


def test_item_heads_follow_title_changes():
    heads = wire.ItemHeads(max_items=2)
    cats = ("c",)
    first = heads.parts("i1", "old", cats)
    assert heads.parts("i1", "old", cats) == first
    assert heads.parts("i1", "new", cats)[1] == wire.field(b"\x22", "new") + b"\x2a\x01c"
    for n in range(5):  # bounded
        heads.parts(f"j{n}", "t", cats)
    assert len(heads._kept) <= 2


def test_grpc_answers_parse_to_the_same_messages(trained, snap, tmp_path):  # noqa: F811
    with serving(trained, tmp_path) as srv, grpc.insecure_channel(srv.address) as ch:
        check_grpc(pb_grpc.RecommenderStub(ch), snap)


def check_grpc(stub, snap):
    users = [str(u) for u in snap.user_ids[:6].tolist()]
    for user in users:
        req = pb.RecommendRequest(user_id=user, k=10, explain=True)
        got = stub.Recommend(req)
        want = answer_pb(scoring.recommend(snap, None, (), query_from(req)))
        want.recommendation_id = got.recommendation_id
        assert got == want
    batch = stub.RecommendBatch(
        pb.RecommendBatchRequest(
            requests=[pb.RecommendRequest(user_id=u, k=5, explain=True) for u in users]
        )
    )
    assert [r.user_id for r in batch.responses] == users
    assert all(len(r.items) == 5 and r.items[0].explanation.text for r in batch.responses)
    assert np.all([len(r.recommendation_id) == 32 for r in batch.responses])
