"""Bearer-token auth: who may call what, and the status codes of refusals."""

from __future__ import annotations

import grpc
import pytest
from srv_support import Client, code_of, event, metric, scrape, serving, trained  # noqa: F401

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.interceptors import bearer_token

READ, WRITE, ADMIN = "read-tok-1", "write-tok-2", "admin-tok-3"
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


def record(client: Client, eid: str):
    return client.RecordInteractions(
        pb.RecordInteractionsRequest(events=[event(eid, "auth-user", "i001")])
    )


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):  # noqa: F811
    with serving(
        trained,
        tmp_path_factory.mktemp("auth"),
        write_token=WRITE,
        admin_token=ADMIN,
    ) as s:
        yield s


def test_write_needs_write_or_admin_token(srv):
    anon, wrong, writer, admin = (Client(srv.address, t) for t in (None, "nope", WRITE, ADMIN))
    try:
        code, msg = code_of(record, anon, "a1")
        assert code == UNAUTH and "Bearer" in msg
        code, msg = code_of(record, wrong, "a2")
        assert code == DENIED and "nope" not in msg
        assert record(writer, "a3").recorded == 1
        assert record(admin, "a4").recorded == 1
        # Reads stay open without a read token configured.
        assert anon.Recommend(pb.RecommendRequest(user_id="x", k=2)).items
    finally:
        for c in (anon, wrong, writer, admin):
            c.close()


def test_reload_needs_admin_token(srv):
    anon, writer, admin = (Client(srv.address, t) for t in (None, WRITE, ADMIN))
    try:
        assert code_of(anon.ReloadModels, pb.ReloadModelsRequest())[0] == UNAUTH
        assert code_of(writer.ReloadModels, pb.ReloadModelsRequest())[0] == DENIED
        r = admin.ReloadModels(pb.ReloadModelsRequest())
        assert not r.changed and r.version and "already serving" in r.message
    finally:
        for c in (anon, writer, admin):
            c.close()


def test_refusals_are_counted_without_tokens_in_metrics(srv):
    text = scrape(srv.metrics_url)
    assert (
        metric(text, "recsys_requests_total", method="RecordInteractions", code="UNAUTHENTICATED")
        >= 1
    )
    assert (
        metric(text, "recsys_requests_total", method="ReloadModels", code="PERMISSION_DENIED") >= 1
    )
    for tok in (READ, WRITE, ADMIN, "nope"):
        assert tok not in text


def test_read_token_guards_reads(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path, read_token=READ, write_token=WRITE) as srv:
        anon, reader, writer = (Client(srv.address, t) for t in (None, READ, WRITE))
        try:
            req = pb.RecommendRequest(user_id="x", k=2)
            assert code_of(anon.Recommend, req)[0] == UNAUTH
            assert reader.Recommend(req).items and writer.Recommend(req).items
            assert code_of(record, reader, "r1")[0] == DENIED  # read-only
            assert record(writer, "r2").recorded == 1
            # No admin token configured: reload needs the read level.
            assert reader.ReloadModels(pb.ReloadModelsRequest()).version
            assert code_of(anon.ReloadModels, pb.ReloadModelsRequest())[0] == UNAUTH
            # Health stays open for load balancers.
            assert anon.status() == 1
        finally:
            for c in (anon, reader, writer):
                c.close()


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer  abc "),), "abc"),
        ((("Authorization", b"Bearer abc"),), "abc"),
        ((("authorization", "Basic abc"),), None),
        ((("authorization", "Bearer "),), None),
        ((("x-other", "Bearer abc"),), None),
        ((), None),
        (None, None),
    ],
)
def test_bearer_token_parsing(metadata, token):
    assert bearer_token(metadata) == token
