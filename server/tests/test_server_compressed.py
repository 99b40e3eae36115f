"""A factor model with compressed scoring over a real server: it answers Recommend (with
explanations) and SimilarItems, availability changes apply on the next call, ListModels
shows the index, and a version whose codes are damaged is refused while the old one serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from srv_support import Client, flip_byte, republish, serving

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_trainer import cli

K = 10


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> Path:
    """svd and popularity trained with svd's scoring forced compressed."""
    root = tmp_path_factory.mktemp("compressed")
    data = root / "data.tsv"
    gen = ["generate", "--out", str(data), "--users", "300", "--items", "400"]
    assert cli.main([*gen, "--interactions", "8000", "--seed", "3"]) == 0
    train = ["train", "--interactions", str(data), "--out", str(root / "art")]
    sets = ["--set", 'models.svd.scoring="compressed"', "--set", "models.svd.n_factors=16"]
    assert cli.main([*train, "--models", "svd,popularity", "--no-tune", *sets]) == 0
    return root / "art"


def ids(r) -> list[str]:
    return [i.item_id for i in r.items]


def test_serves_and_honours_availability_at_once(compressed, tmp_path):
    with serving(compressed, tmp_path, default_model="svd") as srv:
        c = Client(srv.address)
        try:
            info = {m.name: m for m in c.ListModels(pb.ListModelsRequest()).models}
            assert info["svd"].params["index.scoring"] == "compressed"
            assert int(info["svd"].params["index.bytes"]) > 0

            ask = pb.RecommendRequest(user_id="u001", k=K, model="svd", explain=True)
            first = c.Recommend(ask)
            assert len(first.items) == K and first.model == "svd"
            assert all(i.explanation.text for i in first.items)
            sim = c.SimilarItems(pb.SimilarItemsRequest(item_id=ids(first)[0], k=K, model="svd"))
            assert len(sim.items) == K

            gone = ids(first)[:3] + ids(sim)[:2]
            c.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=gone, available=False))
            after = c.Recommend(ask)
            assert len(after.items) == K and not set(ids(after)) & set(gone)
            sim2 = c.SimilarItems(pb.SimilarItemsRequest(item_id=ids(first)[0], k=K, model="svd"))
            assert len(sim2.items) == K and not set(ids(sim2)) & set(gone)

            c.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=gone, available=True))
            assert ids(c.Recommend(ask)) == ids(first)
        finally:
            c.close()


def test_damaged_codes_are_refused_old_keeps_serving(compressed, tmp_path):
    root = tmp_path / "art"
    shutil.copytree(compressed, root)
    old = artifacts.latest_version(root)
    with serving(root, tmp_path, default_model="svd") as srv:
        c = Client(srv.address)
        try:
            new_dir = republish(root)
            flip_byte(new_dir / "svd.items.codes")
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert not r.changed and r.version == old
            assert "checksum_mismatch" in r.message and "svd.items.codes" in r.message
            got = c.Recommend(pb.RecommendRequest(user_id="u001", k=K, model="svd"))
            assert got.model_version == old and len(got.items) == K
        finally:
            c.close()
