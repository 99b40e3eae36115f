"""Local engine against Ray on one synthetic data set: wall time and peak memory per
process of ``recsys-train train`` with the heavy models (item-CF, SVD), on this machine.

    python trainer/bench/ray_scale.py [--size 20M] [--models item_cf,svd] [--write-docs]

The data (MovieLens-20M's shape at 20M: 138k users, 27k items; smaller sizes keep its
interactions per user) is written first as Parquet partitions (not timed). Then, each in a
fresh subprocess: ``train --engine local`` and ``train --engine ray --ray-address A`` on a
two-node cluster started here (``ray start --head`` + ``ray start --address``, one CPU
each, the test suite's helper). Both runs: no tuning (``--no-tune``: the trials are
sample-sized whatever the data, so they would only add a constant), the holdout evaluation
and the final fit. A sampler (psutil, every 0.25 s) records each process's resident memory:
the driver (the CLI process), every Ray worker and the Ray daemons (raylet, which holds the
node's object store, GCS); peaks are per process and of the sum of all of them.

On this 2-core machine the Ray run uses the same two cores as the local one (one task per
node, one kernel thread per task), so the ratio measures Ray's overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Training on Ray (trainer/bench/ray_scale.py)"
sys.path.insert(0, str(REPO / "trainer" / "tests"))
sys.path.insert(0, str(REPO))
from tests.support.markdown import replace_section  # noqa: E402

ML20M = (138_493, 26_744, 20_000_263)


def shape(size: str) -> tuple[int, int, int]:
    """Users, items, interactions: ML-20M's shape scaled to ``size`` (e.g. 2M, 20M)."""
    n = int(float(size.rstrip("MmKk")) * (1e6 if size[-1] in "Mm" else 1e3))
    scale = n / ML20M[2]
    return max(int(ML20M[0] * scale), 100), max(int(ML20M[1] * min(1, scale**0.5)), 50), n


class Sampler(threading.Thread):
    """Peak RSS per process of ``root`` (the CLI) and of the Ray process groups."""

    def __init__(self, root: int, groups: list[int]) -> None:
        super().__init__(daemon=True)
        self.root, self.groups = root, groups
        self.peak: dict[str, float] = {}
        self.total = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total = 0.0
            for p in psutil.process_iter(["pid", "name", "cmdline", "memory_info"]):
                try:
                    kind = self.kind(p)
                    if kind is None:
                        continue
                    rss = p.info["memory_info"].rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
                    continue
                total += rss
                key = kind if kind == "driver" else f"{kind}:{p.info['pid']}"
                self.peak[key] = max(self.peak.get(key, 0.0), rss)
            self.total = max(self.total, total)
            time.sleep(0.25)

    def kind(self, p: psutil.Process) -> str | None:
        if p.info["pid"] == self.root:
            return "driver"
        try:
            group = os.getpgid(p.info["pid"])
        except ProcessLookupError:
            return None
        if group not in self.groups:
            return None
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") or "default_worker.py" in cmd:
            return "worker"
        return "daemon"

    def summary(self) -> dict:
        def top(kind: str) -> float:
            vals = [v for k, v in self.peak.items() if k.split(":")[0] == kind]
            return max(vals) if vals else 0.0

        workers = [v for k, v in self.peak.items() if k.startswith("worker")]
        return {
            "driver": top("driver"),
            "worker": top("worker"),
            "workers": len(workers),
            "daemon": top("daemon"),
            "total": self.total,
        }


def train(data: Path, out: Path, models: str, groups: list[int], *engine: str) -> dict:
    cmd = [
        sys.executable, "-m", "recsys_trainer.cli", "train", "--data", str(data),
        "--out", str(out), "--models", models, "--no-tune", *engine,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid, groups)
    sampler.start()
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr.decode()[-3000:]}")
    version = (out / "latest").read_text().strip()
    manifest = json.loads((out / version / "manifest.json").read_text())
    return {"seconds": seconds, "memory": sampler.summary(), "manifest": manifest}


def kernel_throughput(data: Path) -> dict:
    """Single-thread cost of the distributed kernels on ``data``, in ns per interaction: one
    ALS iteration (both half-steps, the default 100 factors and 3 CG steps) and one item-CF
    neighbour pass (default k, BM25, dot): what a worker's CPU does per interaction of its
    block, the basis of docs/ray.md's plan."""
    import numpy as np
    import polars as pl
    import scipy.sparse as sp

    import recsys_core as rc
    from recsys_core.data import from_frame
    from recsys_core.models.item_cf import ItemCFConfig
    from recsys_core.models.svd import SVDConfig

    inter = from_frame(pl.concat([pl.read_parquet(f) for f in sorted(data.glob("*.parquet"))]))
    ui = sp.csr_matrix(inter.to_csr(), dtype=np.float32)
    iu = ui.T.tocsr()
    c = SVDConfig()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((ui.shape[0], c.n_factors)) * 0.01).astype(np.float32)
    y = (rng.standard_normal((ui.shape[1], c.n_factors)) * 0.01).astype(np.float32)
    kw = dict(alpha=c.alpha, reg=c.regularization, cg_steps=c.cg_steps, num_threads=1)
    t0 = time.perf_counter()
    rc.als_half_step(ui, x, y, **kw)
    rc.als_half_step(iu, y, x, **kw)
    als = time.perf_counter() - t0
    i = ItemCFConfig()
    t0 = time.perf_counter()
    rc.similarity_topk(ui.T, i.k_neighbors, weighting=i.weighting, measure=i.measure, num_threads=1)
    sim = time.perf_counter() - t0
    n = ui.nnz
    return {"nnz": n, "als_ns": als / n * 1e9, "itemcf_ns": sim / n * 1e9}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="20M", help="interactions, e.g. 2M or 20M (default 20M)")
    p.add_argument("--models", default="item_cf,svd")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--object-store-gb", type=float, default=2.0, help="per node")
    p.add_argument("--keep", action="store_true", help="keep the generated data (printed)")
    p.add_argument(
        "--data", type=Path, metavar="DIR",
        help="Parquet partitions already written (recsys-train generate --format parquet) "
        "instead of generating --size",
    )  # fmt: skip
    p.add_argument("--write-docs", action="store_true")
    p.add_argument(
        "--throughput", type=Path, metavar="PARTS",
        help="only time the kernels single-threaded on these Parquet partitions",
    )  # fmt: skip
    a = p.parse_args()
    if a.throughput:
        t = kernel_throughput(a.throughput)
        print(
            f"{t['nnz']:,} interactions, one thread: ALS iteration {t['als_ns']:.0f} ns and "
            f"item-CF neighbours {t['itemcf_ns']:.0f} ns per interaction"
        )
        return 0
    from ray_cluster import two_node_cluster

    users, items, n = shape(a.size)
    tmp = Path(tempfile.mkdtemp(prefix="ray_scale"))
    data = tmp / "parts"
    if a.data is not None:
        data = a.data
        import polars as pl

        frame = pl.scan_parquet(str(data / "*.parquet"))
        counts = frame.select(pl.len(), pl.col("user").n_unique(), pl.col("item").n_unique())
        n, users, items = counts.collect().row(0)
        a.partitions = len(list(data.glob("*.parquet")))
    gen = [
        sys.executable, "-m", "recsys_trainer.cli", "generate", "--out", str(data),
        "--format", "parquet", "--partitions", str(a.partitions), "--users", str(users),
        "--items", str(items), "--interactions", str(n),
    ]  # fmt: skip
    if a.data is None:
        print(f"generating {n:,} interactions ({users:,} users, {items:,} items)", flush=True)
        subprocess.run(gen, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    local = train(data, tmp / "local", a.models, [])
    print(f"local: {local['seconds']:.1f} s, {local['memory']}", flush=True)
    with two_node_cluster(int(a.object_store_gb * 1e9)) as cluster:
        engine = ("--engine", "ray", "--ray-address", cluster.address)
        remote = train(data, tmp / "ray", a.models, cluster.groups, *engine)
    print(f"ray:   {remote['seconds']:.1f} s, {remote['memory']}", flush=True)
    ndcg = {
        m: (local["manifest"]["metrics"][m]["ndcg@10"], remote["manifest"]["metrics"][m]["ndcg@10"])
        for m in local["manifest"]["metrics"]
    }
    ratio = remote["seconds"] / local["seconds"]
    print(f"ray / local wall time: {ratio:.2f}x; ndcg@10 (local, ray): {ndcg}")
    if a.write_docs:
        write_docs(a, (users, items, n), local, remote, ndcg)
    if a.keep:
        print(f"data kept in {data}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def write_docs(a, shape_, local: dict, remote: dict, ndcg: dict) -> None:
    users, items, n = shape_
    command = " ".join(["python", "trainer/bench/ray_scale.py", *sys.argv[1:]])
    lm, rm = local["memory"], remote["memory"]
    mib = "{:,.0f} MiB".format
    short = (
        []
        if n >= 20_000_000
        else [
            "",
            f"Run at {a.size}: the largest size that fitted this session's time on the shared "
            "machine. MovieLens-20M's size is `python trainer/bench/ray_scale.py --size 20M "
            "--write-docs` (about 10x the time above for both engines: the kernels are "
            "linear in interactions at this data's shape).",
        ]
    )
    lines = [
        SECTION,
        "",
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or 'x86_64'}, {os.cpu_count()} cores shared with other jobs. "
        f"{n:,} synthetic interactions ({users:,} users x {items:,} items), {a.partitions} "
        f"Parquet partitions; `recsys-train train --models {a.models} --no-tune` (holdout "
        "evaluation and final fit). Ray: two nodes on this machine, one CPU each.",
        "",
        "| engine | wall time | ratio | driver peak RSS | largest worker peak RSS "
        "| Ray daemons peak RSS (per process) | all processes, peak sum |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| local | {local['seconds']:.1f} s | 1.00x | {mib(lm['driver'])} | – | – | "
        f"{mib(lm['total'])} |",
        f"| ray (2 nodes) | {remote['seconds']:.1f} s | {remote['seconds'] / local['seconds']:.2f}x"
        f" | {mib(rm['driver'])} | {mib(rm['worker'])} ({rm['workers']} workers) | "
        f"{mib(rm['daemon'])} | {mib(rm['total'])} |",
        "",
        "NDCG@10 (local / ray): "
        + ", ".join(f"{m} {x:.4f} / {y:.4f}" for m, (x, y) in ndcg.items())
        + ".",
        *short,
    ]
    DOCS.write_text(replace_section(DOCS.read_text(), SECTION, lines))
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    sys.exit(main())
