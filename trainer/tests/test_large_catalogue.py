"""Large catalogues: ``generate --size`` and Zipf popularity (at a small scale), and the
factor model's exact/compressed scoring choice, stored in the artifact and checked on load."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

import recsys_core as rc
from recsys_core import artifacts
from recsys_core.data import from_frame
from recsys_core.models import SVD, SVDConfig
from recsys_core.models.compressed import chosen, codes_file
from recsys_trainer import cli, synthetic
from recsys_trainer.synthetic import generate


def test_zipf_keeps_the_catalogue_and_has_a_long_tail():
    df, catalog = generate(3_000, 20_000, 60_000, seed=3, popularity="zipf")
    df2, _ = generate(3_000, 20_000, 60_000, seed=3, popularity="zipf")
    assert df.equals(df2)
    # every item in the catalogue, interacted with or not; titles as the log-normal set's
    assert len(catalog) == 20_000
    ldf, lognormal = generate(3_000, 20_000, 60_000, seed=3)
    assert catalog.titles.tolist() == lognormal.titles.tolist()
    counts = np.sort(df["item"].value_counts()["count"].to_numpy())[::-1]
    # most items have few or no interactions; a small head holds a large share
    assert len(counts) < 0.8 * 20_000
    assert np.median(counts) <= 3
    head = counts[:200].sum() / counts.sum()  # the top 1% of the catalogue
    assert head > 0.2
    # a heavier head than the log-normal default's
    lcounts = np.sort(ldf["item"].value_counts()["count"].to_numpy())[::-1]
    assert head > 1.5 * lcounts[:200].sum() / lcounts.sum()


def test_popularity_is_checked():
    with pytest.raises(ValueError, match="popularity"):
        generate(10, 30, 10, popularity="pareto")


def test_size_preset_and_overrides(tmp_path):
    p = cli.build_parser()
    a = p.parse_args(["generate", "--out", "x", "--size", "1M"])
    assert cli.generate_shape(a) == (*synthetic.SIZES["1M"], "zipf")
    a = p.parse_args(["generate", "--out", "x", "--size", "10M", "--items", "5000"])
    assert cli.generate_shape(a) == (1_000_000, 5_000, 20_000_000, "zipf")
    a = p.parse_args(["generate", "--out", "x"])
    assert cli.generate_shape(a) == (10_000, 5_000, 500_000, "lognormal")
    # the preset's shape of data, scaled down: the CLI writes it with every item listed
    out = tmp_path / "d" / "interactions.tsv"
    args = ["generate", "--out", str(out), "--size", "1M", "--users", "200"]
    assert cli.main([*args, "--items", "3000", "--interactions", "4000"]) == 0
    assert pl.read_csv(out, separator="\t").height == 4000
    assert pl.read_csv(out.with_name("catalog.tsv"), separator="\t").height == 3000


# -- scoring choice ----------------------------------------------------------------------------


def test_choice_by_size_and_override():
    assert chosen("auto", 1000, 999) == "exact"
    assert chosen("auto", 1000, 1000) == "compressed"
    assert chosen("exact", 1, 10**7) == "exact"
    assert chosen("compressed", 10**7, 10) == "compressed"
    with pytest.raises(ValueError, match="scoring"):
        SVDConfig(scoring="fast")
    with pytest.raises(ValueError, match="compressed_min_items"):
        SVDConfig(compressed_min_items=0)


@pytest.fixture(scope="module")
def inter():
    df, _ = generate(400, 600, 20_000, seed=11)
    return from_frame(df)


def fit(inter, **kw) -> SVD:
    return SVD(SVDConfig(n_factors=16, iterations=4, **kw)).fit(inter)


def test_defaults_stay_exact_on_small_catalogues(inter):
    m = fit(inter)
    assert m.scoring == "exact"
    assert m.info() == {"index": {"scoring": "exact"}}
    assert "index" not in m.params()


def test_compressed_scoring_serves_every_path(inter):
    m = fit(inter, scoring="auto", compressed_min_items=500)
    assert m.scoring == "compressed"
    index = m.info()["index"]
    assert index["bytes"] > 0 and index["build_seconds"] >= 0 and index["ivf_lists"] >= 0
    exact = fit(inter, scoring="exact")
    h = inter.to_csr()
    users = np.arange(50)
    a = m.recommend(users, h[users], 10)
    b = exact.recommend(users, h[users], 10)
    hits = [len(set(a.user(i).items.tolist()) & set(b.user(i).items.tolist())) for i in users]
    assert np.mean(hits) >= 9  # same factors (same seed): the rerank recovers the exact top-10
    # seen items never come back; the deny list is honoured and still k items come back
    row = h[3]
    deny = np.sort(exact.recommend_one(3, row, 5).items.astype(np.int32))
    got = m.recommend_one(3, row, 10, deny=deny)
    assert len(got.items) == 10
    assert not set(got.items.tolist()) & (set(row.indices.tolist()) | set(deny.tolist()))
    sim = m.similar_items(7, 10)
    assert len(sim.items) == 10 and 7 not in sim.items.tolist()


def test_deny_mask_follows_a_new_deny_array(inter):
    m = fit(inter, scoring="compressed")
    row = inter.to_csr()[5]
    first = m.recommend_one(5, row, 10).items
    deny = np.sort(first[:3].astype(np.int32))
    got = m.recommend_one(5, row, 10, deny=deny).items
    assert not set(got.tolist()) & set(deny.tolist())
    assert m.recommend_one(5, row, 10, deny=deny).items.tolist() == got.tolist()  # cached mask
    # availability changed: a new array object, so a new mask, at once
    deny2 = np.sort(first[3:6].astype(np.int32))
    got2 = m.recommend_one(5, row, 10, deny=deny2).items
    assert not set(got2.tolist()) & set(deny2.tolist())
    assert set(deny.tolist()) <= set(got2.tolist())


def publish(tmp_path, inter, model):
    return artifacts.publish(
        {"svd": model},
        out=tmp_path,
        user_ids=inter.user_ids,
        item_ids=inter.item_ids,
        data_fingerprint=artifacts.data_fingerprint(inter),
    )


def test_artifact_round_trip_with_codes(tmp_path, inter):
    m = fit(inter, scoring="compressed")
    path = publish(tmp_path, inter, m)
    manifest = json.loads((path / artifacts.MANIFEST).read_text())
    files = set(manifest["files"])
    assert {"svd.items.codes", "svd.similar.codes"} <= files
    assert manifest["models"]["svd"]["info"]["index"]["scoring"] == "compressed"
    loaded = artifacts.load_version(path).models["svd"]
    assert loaded.scoring == "compressed"
    h = inter.to_csr()
    for u in (0, 9, 77):
        np.testing.assert_array_equal(
            loaded.recommend_one(u, h[u], 10).items, m.recommend_one(u, h[u], 10).items
        )
    np.testing.assert_array_equal(loaded.similar_items(3, 10).items, m.similar_items(3, 10).items)


def test_exact_artifact_has_no_codes(tmp_path, inter):
    path = publish(tmp_path, inter, fit(inter))
    assert not list(path.glob("*.codes"))
    assert artifacts.load_version(path).models["svd"].scoring == "exact"


def corrupt(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def test_corrupt_codes_are_refused(tmp_path, inter):
    path = publish(tmp_path, inter, fit(inter, scoring="compressed"))
    corrupt(codes_file(path, "svd", "items"))
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.load_version(path)
    assert e.value.reason == "checksum_mismatch" and "svd.items.codes" in str(e.value)
    # without the manifest's checksums the scorer's own check still refuses the blob
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.load_version(path, verify=False)
    assert e.value.reason == "corrupt_array" and "svd.items.codes" in str(e.value)


def test_codes_of_other_factors_are_refused(tmp_path, inter):
    """A blob that is intact but was built for different factors does not load."""
    path = publish(tmp_path, inter, fit(inter, scoring="compressed"))
    other = SVD(SVDConfig(n_factors=16, iterations=4, seed=1, scoring="compressed")).fit(inter)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other.save(other_dir)
    target = codes_file(path, "svd", "items")
    target.write_bytes(codes_file(other_dir, "svd", "items").read_bytes())
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.load_version(path, verify=False)
    assert e.value.reason == "corrupt_array"
    with pytest.raises(rc.InvalidArgumentError), np.load(path / "svd.npz") as z:
        rc.CompressedScorer.from_bytes(target.read_bytes(), z["item_factors"])


def test_trainer_setting_reaches_the_model(tmp_path):
    out = tmp_path / "d" / "interactions.tsv"
    args = ["generate", "--out", str(out), "--users", "200", "--items", "400"]
    assert cli.main([*args, "--interactions", "5000"]) == 0
    art = tmp_path / "art"
    train = ["train", "--interactions", str(out), "--out", str(art), "--models", "svd"]
    sets = ["--set", 'models.svd.scoring="compressed"', "--set", "models.svd.n_factors=16"]
    assert cli.main([*train, "--no-tune", "--no-evaluate", *sets]) == 0
    loaded = artifacts.load_version(art / artifacts.latest_version(art))
    assert loaded.models["svd"].scoring == "compressed"
    assert loaded.manifest["params"]["models"]["svd"]["scoring"] == "compressed"


def test_config_fields_have_defaults():
    c = SVDConfig()
    assert (c.scoring, c.compressed_min_items) == ("auto", 200_000)
    assert dataclasses.replace(c, scoring="exact").scoring == "exact"


def test_models_too_big_for_the_catalogue_are_left_out_and_recorded(tmp_path, capsys):
    out = tmp_path / "d" / "interactions.tsv"
    args = ["generate", "--out", str(out), "--users", "150", "--items", "300"]
    assert cli.main([*args, "--interactions", "3000"]) == 0
    art = tmp_path / "art"
    train = ["train", "--interactions", str(out), "--out", str(art), "--no-tune"]
    assert cli.main([*train, "--no-evaluate", "--set", "models.item_cf.max_items=100"]) == 0
    loaded = artifacts.load_version(art / artifacts.latest_version(art))
    assert "item_cf" not in loaded.models and "svd" in loaded.models
    reason = loaded.manifest["params"]["left_out"]["item_cf"]
    assert "max_items=100" in reason and "neighbour lists" in reason
    # named explicitly, it is an error naming the limit
    named = ["--models", "item_cf", "--set", "models.item_cf.max_items=100"]
    assert cli.main([*train, "--no-evaluate", *named]) == 2
    report = tmp_path / "report"
    ev = ["evaluate", "--interactions", str(out), "--report", str(report), "--no-tune"]
    assert cli.main([*ev, "--models", "popularity,svd,hybrid", "--set",
                     "models.item_cf.max_items=100"]) == 0  # fmt: skip
    assert "item_cf: 300 items is more than max_items=100" in (report / "report.md").read_text()
    assert "300 items is more than max_items=100" in capsys.readouterr().err


@pytest.mark.parametrize("scoring", ["exact", "compressed"])
def test_similar_items_of_an_item_without_interactions(scoring):
    """Zero factors: every score is 0, so the first k other items, as a scan gives them."""
    df, _ = generate(300, 500, 6_000, seed=2)
    inter = from_frame(df)
    # one more catalogue item that no one interacted with
    inter = dataclasses.replace(inter, item_ids=np.concatenate([inter.item_ids, ["i9999"]]))
    m = fit(inter, scoring=scoring)
    item = inter.n_items - 1
    assert not m.item_factors_[item].any()
    got = m.similar_items(item, 10)
    scan = m._index.recommend("similar", m._unit[item], 10, exclude=[item])
    np.testing.assert_array_equal(got.items, scan.items)
    np.testing.assert_array_equal(got.scores, np.zeros(10, np.float32))
    assert m.similar_items(3, 10).items.tolist() != list(range(10))  # others still scan


def test_a_model_saved_before_the_index_loads_exact(tmp_path, inter):
    """svd.json without ``info`` (artifacts older than compressed scoring): exact scoring."""
    m = fit(inter, scoring="compressed")
    m.save(tmp_path)
    meta = json.loads((tmp_path / "svd.json").read_text())
    del meta["info"]
    (tmp_path / "svd.json").write_text(json.dumps(meta))
    for p in tmp_path.glob("*.codes"):
        p.unlink()
    old = SVD.load(tmp_path)
    assert old.scoring == "exact" and old.info() == {"index": {"scoring": "exact"}}
    row = inter.to_csr()[4]
    assert len(old.recommend_one(4, row, 10).items) == 10


def test_a_compressed_model_shipped_to_a_worker_recommends_the_same(inter):
    """The engine ships arrays and params (`engine.pack`); the worker's model builds the same
    index (same config and seed) on first use."""
    from recsys_trainer import engine

    m = fit(inter, scoring="compressed")
    copy = engine.unpack(engine.pack(m))
    assert copy.scoring == "compressed"
    h = inter.to_csr()
    users = np.arange(40)
    a, b = m.recommend(users, h[users], 10), copy.recommend(users, h[users], 10)
    np.testing.assert_array_equal(a.items, b.items)
