"""The engine seam without Ray: blocks, shipping fitted models as arrays, Parquet
partitions in and out, and the local engine being the plain in-process path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_core import artifacts
from recsys_core.data import load_interactions
from recsys_core.models import MODELS
from recsys_core.models.base import LOCAL_KERNELS
from recsys_trainer import engine as engine_mod
from recsys_trainer import tuning
from recsys_trainer.cli import main
from recsys_trainer.evaluate import top_k


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "parts"
    args = ["generate", "--out", str(out), "--format", "parquet", "--partitions", "3"]
    assert main([*args, "--users", "200", "--items", "90", "--interactions", "3000"]) == 0
    return out


def test_blocks_cover_the_range_evenly():
    assert engine_mod.blocks(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert engine_mod.blocks(2, 5) == [(0, 1), (1, 2)]
    assert engine_mod.blocks(0, 4) == []
    assert engine_mod.blocks(7, 1) == [(0, 7)]


def test_local_engine_maps_in_order_and_keeps_local_kernels():
    eng = engine_mod.make("local")
    assert eng.map(lambda x, s: x * s, [1, 2, 3], 10) == [10, 20, 30]
    model = eng.attach(MODELS["item_cf"]())
    assert model.kernels is LOCAL_KERNELS
    with pytest.raises(ValueError, match="engine must be one of"):
        engine_mod.make("spark")


def test_generate_writes_parquet_partitions_by_user(parts):
    files = sorted(parts.glob("*.parquet"))
    assert [f.name for f in files] == [f"part-0000{n}.parquet" for n in range(3)]
    assert (parts / "catalog.tsv").exists()
    frames = [pl.read_parquet(f) for f in files]
    assert sum(f.height for f in frames) == 3000
    users = [set(f["user"]) for f in frames]
    assert not (users[0] & users[1]) and not (users[1] & users[2]) and not (users[0] & users[2])


@pytest.mark.parametrize("form", ["dir", "glob"])
def test_train_reads_partitions_as_one_log(parts, tmp_path, form):
    data = str(parts) if form == "dir" else str(parts / "part-*.parquet")
    args = ["train", "--data", data, "--out", str(tmp_path), "--no-tune", "--no-evaluate"]
    assert main([*args, "--models", "popularity"]) == 0
    loaded = artifacts.load_version(tmp_path / artifacts.latest_version(tmp_path))
    assert loaded.history.nnz > 0
    assert loaded.catalog is not None  # catalog.tsv inside the directory
    whole = pl.concat([pl.read_parquet(f) for f in sorted(parts.glob("*.parquet"))])
    assert len(loaded.user_ids) == whole["user"].n_unique()


def test_missing_partitions_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "a")]
    assert main(args) == 2
    assert "no such file" in capsys.readouterr().err


def test_ray_address_needs_the_ray_engine(parts, tmp_path, capsys):
    args = ["train", "--data", str(parts), "--out", str(tmp_path), "--ray-address", "x:1"]
    assert main(args) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_an_address_where_no_cluster_answers_exits_2_at_once(parts, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["train", "--data", str(parts), "--out", str(tmp_path), "--engine", "ray"]
    assert main([*args, "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"--ray-address '127.0.0.1:{port}': no Ray cluster answers there" in err


@pytest.mark.parametrize("name", ["item_cf", "user_cf", "svd", "popularity", "ease", "hybrid"])
def test_packed_models_recommend_as_the_fitted_ones(parts, name):
    inter = load_interactions(parts / "part-00000.parquet")
    model = MODELS[name]().fit(inter)
    again = engine_mod.unpack(engine_mod.pack(model))
    history = inter.to_csr()
    users = np.arange(inter.n_users)
    np.testing.assert_array_equal(top_k(again, history, users, 5), top_k(model, history, users, 5))


def test_tuning_with_the_local_engine_is_the_plain_search(parts):
    inter = load_interactions(parts / "part-00001.parquet")
    configs = {"item_cf": MODELS["item_cf"]().config}
    cfg = tuning.TuneConfig(budget_seconds=0, passes=1)
    a, ra, _ = tuning.tune(inter, configs, cfg)
    b, rb, _ = tuning.tune(inter, configs, cfg, engine=engine_mod.make("local"))
    assert a == b
    assert [t.params for t in ra["item_cf"].trials] == [t.params for t in rb["item_cf"].trials]
    assert rb["item_cf"].model is not None


def test_kernel_row_blocks_put_together_are_the_whole_result():
    """What the Ray engine relies on: neighbour rows and ALS rows computed by blocks (ALS
    with the Gram matrix computed once) equal the whole-matrix kernels bit for bit."""
    import scipy.sparse as sp

    import recsys_core as rc

    r = sp.random(60, 40, density=0.2, format="csr", dtype=np.float32, random_state=2)
    kw = dict(weighting="bm25", measure="cosine", shrink=2.0)
    whole = rc.similarity_topk(r, 5, **kw)
    parts = [rc.similarity_topk(r, 5, rows=b, **kw) for b in engine_mod.blocks(60, 4)]
    stacked = sp.vstack(parts, format="csr")
    np.testing.assert_array_equal(stacked.indptr, whole.indptr)
    np.testing.assert_array_equal(stacked.indices, whole.indices)
    np.testing.assert_array_equal(stacked.data, whole.data)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    y = rng.standard_normal((40, 8)).astype(np.float32)
    als = dict(alpha=2.0, reg=3.0, reg_exponent=0.5)
    a = x.copy()
    rc.als_half_step(r, a, y, **als)
    b, gram = x.copy(), rc.als_gram(y, als["reg"])
    for lo, hi in engine_mod.blocks(60, 3):
        block = b[lo:hi].copy()
        rc.als_half_step(r[lo:hi], block, y, gram=gram, num_threads=1, **als)
        b[lo:hi] = block
    np.testing.assert_array_equal(a, b)
    with pytest.raises(rc.InvalidArgumentError):
        rc.similarity_topk(r, 5, rows=(10, 61))
