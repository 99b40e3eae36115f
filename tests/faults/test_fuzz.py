"""7. Bad input, fuzzed: wire-level bytes and structured messages against every RPC, and
malformed files against the trainer's loaders. Nothing may end UNKNOWN or INTERNAL, the
server stays up and its memory bounded; loaders raise only their documented errors."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from fsupport import LONG, ServerProcess, report, rss_mb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_proto.v1 import recommender_pb2 as pb

SECONDS = 300.0 if LONG else 20.0
EXAMPLES = 2000 if LONG else 150
BAD = {"UNKNOWN", "INTERNAL"}
METHODS = {
    "Recommend": pb.RecommendRequest,
    "RecommendBatch": pb.RecommendBatchRequest,
    "SimilarItems": pb.SimilarItemsRequest,
    "RecordInteractions": pb.RecordInteractionsRequest,
    "ListModels": pb.ListModelsRequest,
    "ReloadModels": pb.ReloadModelsRequest,
    "GetExperimentReport": pb.GetExperimentReportRequest,
}


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    srv = ServerProcess(
        "--artifacts",
        str(trained),
        "--store",
        f"sqlite:///{tmp_path_factory.mktemp('ev')}/events.db",
    ).start()
    srv.wait_serving()
    yield srv
    srv.kill()


def raw_call(channel, method: str, data: bytes) -> str:
    fn = channel.unary_unary(f"/recsys.v1.Recommender/{method}")  # bytes in, bytes out
    try:
        fn(data, timeout=10)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        op = rnd.randrange(4)
        if op == 0 and b:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        elif op == 1:
            b.insert(rnd.randrange(len(b) + 1), rnd.randrange(256))
        elif op == 2 and b:
            del b[rnd.randrange(len(b))]
        else:
            b += rnd.randbytes(rnd.randint(1, 32))
    return bytes(b)


def seeds() -> dict[str, list[bytes]]:
    ev = pb.Interaction(event_id="e", user_id="u001", item_id="i001", event_type="view")
    rr = pb.RecommendRequest(user_id="u001", k=10, explain=True, exclude_item_ids=["i002"])
    return {
        "Recommend": [rr.SerializeToString()],
        "RecommendBatch": [pb.RecommendBatchRequest(requests=[rr, rr]).SerializeToString()],
        "SimilarItems": [pb.SimilarItemsRequest(item_id="i001", k=5).SerializeToString()],
        "RecordInteractions": [pb.RecordInteractionsRequest(events=[ev]).SerializeToString()],
        "ListModels": [b""],
        "ReloadModels": [b""],
    }


def test_wire_level_fuzz(server):
    ch = grpc.insecure_channel(server.address)
    rss0 = rss_mb(server.proc.pid)
    rnd = random.Random(7)
    codes: dict[str, int] = {}
    bad: list[tuple[str, bytes]] = []
    end = time.monotonic() + SECONDS
    sent = 0
    fixed = [
        b"\xff" * 64,
        b"\x0a\x04\xff\xfe\xfd\xfc\x10\x05",  # user_id with invalid UTF-8
        b"\x10" + b"\xff" * 9 + b"\x01",  # k: a 10-byte varint (huge)
        b"\x10\xff\xff\xff\xff\x0f",  # k = -1 as int32
        b"\x0a\xff\xff\xff\xff\x0f",  # a length beyond the message
        b"\x1a\x00" * 200_000,  # 200,000 empty repeated strings
    ]
    while time.monotonic() < end or sent < 60:  # the fixed cases, however slow the machine
        for method, base in seeds().items():
            data = fixed[sent % len(fixed)] if sent < 60 else mutate(rnd, rnd.choice(base))
            if sent % 50 == 0:
                data = rnd.randbytes(rnd.randint(0, 4096))
            code = raw_call(ch, method, data)
            sent += 1
            codes[code] = codes.get(code, 0) + 1
            if code in BAD:
                bad.append((method, data[:200]))
    alive = server.proc.poll() is None
    rss1 = rss_mb(server.proc.pid)
    report(
        "fuzz_wire",
        {
            "calls": sent,
            "codes": codes,
            "bad": len(bad),
            "rss_before_mb": round(rss0, 1),
            "rss_after_mb": round(rss1, 1),
        },
    )
    assert not bad, bad[:5]
    assert alive and rss1 < rss0 + 100, (rss0, rss1)


ids = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["u001", "i001", "", "u" * 257, "\x00", "i999999"]),
)
recommend = st.builds(
    pb.RecommendRequest,
    user_id=ids,
    k=st.one_of(
        st.sampled_from([-(2**31), -1, 0, 1, 1000, 1001, 2**31 - 1]), st.integers(-5, 2000)
    ),
    model=st.one_of(
        st.sampled_from(["", "hybrid", "svd", "nope", "item_cf"]), st.text(max_size=20)
    ),
    exclude_item_ids=st.lists(ids, max_size=5) | st.just(["i001"] * 1500),
    allow_item_ids=st.lists(ids, max_size=5),
    recent_item_ids=st.lists(ids, max_size=5),
    explain=st.booleans(),
)
interaction = st.builds(
    pb.Interaction,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    event_type=st.sampled_from(["view", "click", "rating", "purchase", "", "x"])
    | st.text(max_size=5),
    rating=st.floats(allow_nan=True, allow_infinity=True, width=32),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    r=recommend,
    batch=st.lists(recommend, max_size=4),
    evs=st.lists(interaction, max_size=4),
    sim=st.builds(
        pb.SimilarItemsRequest,
        item_id=ids,
        k=st.integers(-3, 1005),
        model=st.sampled_from(["", "svd", "item_cf", "hybrid", "x"]),
    ),
)
def test_structured_fuzz(server, r, batch, evs, sim):
    ch = grpc.insecure_channel(server.address)
    try:
        for method, msg in (
            ("Recommend", r),
            ("RecommendBatch", pb.RecommendBatchRequest(requests=batch)),
            ("RecordInteractions", pb.RecordInteractionsRequest(events=evs)),
            ("SimilarItems", sim),
        ):
            code = raw_call(ch, method, msg.SerializeToString())
            assert code not in BAD, (method, msg)
    finally:
        ch.close()
    assert server.proc.poll() is None
