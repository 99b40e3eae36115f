"""The Ray engine on a real two-node cluster on this machine (``ray start --head`` and
``ray start --address``, one CPU each; see ray_cluster.py): the same seed gives the same
models as the local engine. Neighbour lists and ALS factors are compared exactly: each block
runs the same Rust kernel on the same inputs, rows never depend on the other rows of their
block (docs/ray.md). The published evaluation matches to 3 decimals (it is in fact equal).
Skipped when Ray is not installed (the ``ray`` extra)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'recsys-trainer[ray]')")

from recsys_core import artifacts  # noqa: E402
from recsys_core.data import Interactions  # noqa: E402
from recsys_core.models import MODELS  # noqa: E402
from recsys_core.splits import random_holdout  # noqa: E402
from recsys_trainer import engine as engine_mod  # noqa: E402
from recsys_trainer import evaluate, tuning  # noqa: E402
from recsys_trainer.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ray_cluster import two_node_cluster  # noqa: E402

FACTOR_TOL = 1e-5
"""ALS factors may differ by float summation order only; with the same binary on every node
they come out bit for bit equal, this bounds what a node of another CPU could change."""


@pytest.fixture(scope="module")
def address():
    with two_node_cluster() as cluster:
        yield cluster.address


@pytest.fixture(scope="module")
def eng(address):
    e = engine_mod.make("ray", address)
    yield e
    e.close()


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "parts"
    args = ["generate", "--out", str(out), "--format", "parquet", "--partitions", "3"]
    assert main([*args, "--users", "240", "--items", "100", "--interactions", "5000"]) == 0
    return out


@pytest.fixture(scope="module")
def inter(parts) -> Interactions:
    import polars as pl

    from recsys_core.data import from_frame

    df = pl.concat([pl.read_parquet(f) for f in sorted(parts.glob("*.parquet"))])
    return from_frame(df)


def test_the_cluster_has_two_nodes_of_one_cpu(eng):
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2
    assert eng.workers == 2
    # blocks really run on both nodes: one CPU each, so two blocks at a time use both
    nodes = eng.map(_node_id, list(range(4)))
    assert set(nodes) == {n["NodeID"] for n in alive}


def _node_id(_item, _shared):
    import time

    import ray as r

    time.sleep(1.0)
    return r.get_runtime_context().get_node_id()


@pytest.mark.parametrize(
    "name,config",
    [
        ("item_cf", {}),
        ("item_cf", {"measure": "cosine", "weighting": "tfidf", "k_neighbors": 7, "shrink": 5.0}),
        ("user_cf", {}),
        ("user_cf", {"weighting": "none", "k_neighbors": 9}),
    ],
)
def test_neighbour_lists_are_identical(eng, inter, name, config):
    cfg = dataclasses.replace(MODELS[name]().config, **config)
    local = MODELS[name](cfg).fit(inter)
    remote = eng.attach(MODELS[name](cfg)).fit(inter)
    attr = "similarity_" if name == "item_cf" else "neighbours_"
    a, b = getattr(local, attr), getattr(remote, attr)
    assert a.shape == b.shape and a.nnz == b.nnz > 0
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def test_als_factors_equal(eng, inter):
    cfg = dataclasses.replace(MODELS["svd"]().config, n_factors=16, iterations=5)
    local = MODELS["svd"](cfg).fit(inter)
    remote = eng.attach(MODELS["svd"](cfg)).fit(inter)
    for attr in ("user_factors_", "item_factors_"):
        a, b = getattr(local, attr), getattr(remote, attr)
        assert a.shape == b.shape and np.abs(a).max() > 0
        assert np.abs(a - b).max() <= FACTOR_TOL * np.abs(a).max()


def test_evaluation_by_user_blocks_gives_the_same_metrics(eng, inter):
    train, test = random_holdout(inter, 0.2, seed=3)

    def report(engine):
        models = {n: MODELS[n]() for n in ("popularity", "item_cf", "svd")}
        return evaluate.compare(models, train, test, k=10, latency_users=0, engine=engine)

    a, b = report(None), report(eng)
    for model, row in a.metrics.items():
        for key, value in row.items():
            if key not in evaluate.COST:
                assert b.metrics[model][key] == value, (model, key)


def test_tuning_trials_on_the_cluster_choose_what_one_process_chooses(eng, inter):
    configs = {n: MODELS[n]().config for n in ("item_cf", "user_cf")}
    cfg = tuning.TuneConfig(budget_seconds=0, passes=1)
    a, ra, _ = tuning.tune(inter, configs, cfg)
    b, rb, _ = tuning.tune(inter, configs, cfg, engine=eng)
    assert a == b
    for n in configs:
        assert [(t.params, t.ndcg) for t in ra[n].trials] == [
            (t.params, t.ndcg) for t in rb[n].trials
        ]
        assert rb[n].model is not None  # refitted here for a hybrid's prefit


def _train(parts: Path, out: Path, *engine: str) -> artifacts.LoadedArtifacts:
    args = [
        "train", "--data", str(parts), "--out", str(out), "--models", "item_cf,user_cf,svd",
        "--set", "models.svd.iterations=4", "--set", "tuning.passes=1", "--tune-budget", "0",
        *engine,
    ]  # fmt: skip
    # a process of its own, as a user runs it: a fresh driver joins the cluster
    cmd = [sys.executable, "-m", "recsys_trainer.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return artifacts.load_version(out / artifacts.latest_version(out))


def _env() -> dict:
    import os

    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def test_train_with_the_ray_engine_publishes_the_local_models(address, parts, tmp_path):
    local = _train(parts, tmp_path / "local")
    remote = _train(parts, tmp_path / "ray", "--engine", "ray", "--ray-address", address)
    # the same hyperparameters chosen, the same NDCG to 3 decimals
    assert local.manifest["params"]["models"] == remote.manifest["params"]["models"]
    for name in ("item_cf", "user_cf", "svd"):
        a, b = local.manifest["metrics"][name], remote.manifest["metrics"][name]
        assert round(a["ndcg@10"], 3) == round(b["ndcg@10"], 3)
    a, b = local.models["item_cf"].similarity_, remote.models["item_cf"].similarity_
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)
    fa, fb = local.models["svd"].user_factors_, remote.models["svd"].user_factors_
    assert np.abs(fa - fb).max() <= FACTOR_TOL * np.abs(fa).max()


def test_evaluate_with_the_ray_engine_reports_the_local_metrics(address, parts, tmp_path):
    args = ["evaluate", "--data", str(parts), "--models", "item_cf,svd", "--no-tune"]
    args += ["--set", "models.svd.iterations=4"]
    reports = {}
    for name, engine in (("local", []), ("ray", ["--engine", "ray", "--ray-address", address])):
        cmd = [sys.executable, "-m", "recsys_trainer.cli", *args, "--report", str(tmp_path / name)]
        done = subprocess.run([*cmd, *engine], capture_output=True, text=True, env=_env())
        assert done.returncode == 0, done.stderr[-3000:]
        reports[name] = evaluate.Report.from_json(tmp_path / name / "report.json")
    for model in ("item_cf", "svd"):
        for key, value in reports["local"].metrics[model].items():
            if key not in evaluate.COST:
                assert reports["ray"].metrics[model][key] == value, (model, key)


def test_worker_port_ranges_stay_clear_of_the_ports_free_ports_hands_out():
    import ray_cluster as rc_mod

    low = rc_mod._ephemeral_low()
    taken = rc_mod.free_ports(14)  # what the cluster's other components get
    for seed in (0, 913, 55913, 10**6):  # 55913 once gave the head 56520-56560, in use
        a, b = rc_mod.worker_port_ranges(2, seed=seed)
        ranges = [set(range(lo, lo + rc_mod.WORKER_PORTS)) for lo in (a, b)]
        assert not ranges[0] & ranges[1]
        for r in ranges:
            assert max(r) < low and not r & set(taken)


def test_a_node_that_cannot_start_fails_the_wait_with_its_log(tmp_path):
    import ray_cluster as rc_mod

    log = tmp_path / "head.log"
    log.write_text("ValueError: Ray component worker_ports is trying to use a port number\n")
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(RuntimeError, match=r"exited \(3\)[\s\S]*worker_ports"):
        rc_mod._wait_for_nodes("127.0.0.1:1", 1, {}, [dead], [log])
