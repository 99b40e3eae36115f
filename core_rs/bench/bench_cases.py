"""The benchmark cases of ``bench_core.py`` (see its docstring), the report and docs writer."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import bench_data as data
import bench_harness as h
import numpy as np
import scipy
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"
DOCS_MARKER = "<!-- end of the generated core benchmark; sections below are kept -->"
K_SIM = 100  # neighbours kept per item
K_REC = 10  # recommendations per user
N_USERS_SAMPLE = 1000
DENSE_DIM = 64


# ---------------------------------------------------------------- results


@dataclass
class Cell:
    """One implementation's measurement: seconds (median) for timings, calls/s for throughput."""

    value: float | None
    best: float | None = None
    p99: float | None = None
    n: int = 0
    peak: int | None = None
    note: str = ""


@dataclass
class Row:
    case: str
    dataset: str
    what: str
    cells: dict[str, Cell]
    extra: dict = field(default_factory=dict)


@dataclass
class Target:
    case: str
    dataset: str
    goal: str
    measured: str
    ok: bool | None  # None: could not be measured


def cell_from(t: h.Timing) -> Cell:
    return Cell(value=t.median, best=t.best, n=len(t.times), peak=t.peak)


def cell_from_lat(ns: np.ndarray, peak: int | None) -> Cell:
    return Cell(
        value=float(np.percentile(ns, 50)) / 1e9,
        best=float(ns.min()) / 1e9,
        p99=float(np.percentile(ns, 99)) / 1e9,
        n=len(ns),
        peak=peak,
    )


def ratio(num: Cell | None, den: Cell | None) -> float | None:
    if num is None or den is None or not num.value or not den.value:
        return None
    return num.value / den.value


# ---------------------------------------------------------------- libraries


def load_core():
    try:
        import recsys_core

        recsys_core.SparseScorer  # noqa: B018 - the build is complete only with the scorers
        return recsys_core, None
    except Exception as e:  # ImportError, AttributeError: the lead's build is not there yet
        return None, f"{type(e).__name__}: {e}"


def load_reference():
    try:
        from recsys_core import reference

        return reference, None
    except Exception as first:
        path = REPO / "core_rs" / "python" / "recsys_core" / "reference.py"
        if not path.exists():
            return None, f"{type(first).__name__}: {first}"
        try:  # package not built/installed yet: load the pure-Python file on its own
            spec = importlib.util.spec_from_file_location("recsys_core_reference", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod, None
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"


def load_implicit():
    try:
        import implicit.nearest_neighbours
    except ImportError:
        print("implicit is missing: pip install implicit (benchmark-only dependency)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "implicit"], check=False)
        importlib.invalidate_caches()
        try:
            import implicit.nearest_neighbours
        except ImportError as e:
            return None, f"{type(e).__name__}: {e}"
    import implicit

    # CosineRecommender.fit hands a COO matrix to all_pairs_knn, which warns and converts
    warnings.filterwarnings("ignore", message="Method expects CSR input")
    return implicit, None


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, removed_env: dict[str, str]):
        self.args = args
        self.T = args.threads
        self.quick = args.quick
        self.removed_env = removed_env
        self.rows: list[Row] = []
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.load: dict[str, float | None] = {}
        self.datasets: dict[str, sp.csr_matrix] = {}
        self.dataset_info: dict[str, dict] = {}
        self._sims: dict[str, tuple[sp.csr_matrix, str]] = {}
        self.core, why = load_core()
        self.core_missing = why
        # what was loaded and checked out when the run started (the tree may change during it)
        self.start = {
            "git": h.git_state(str(REPO)),
            "date": h.now_utc(),
            "recsys_core": core_version(self.core),
        }
        self.ref, self.ref_missing = load_reference()
        self.imp, self.imp_missing = load_implicit()
        for name, mod, missing in (
            ("recsys_core (ours)", self.core, why),
            ("reference", self.ref, self.ref_missing),
            ("implicit", self.imp, self.imp_missing),
        ):
            if mod is None:
                self.note(f"{name} not available, its rows are skipped: {missing}")

    # ------------------------------------------------------------ helpers

    def note(self, msg: str) -> None:
        print(f"NOTE: {msg}", flush=True)
        self.notes.append(msg)

    def reps(self, full: int, quick: int = 2) -> int:
        return quick if self.quick else full

    def add_row(self, row: Row) -> None:
        self.rows.append(row)
        parts = []
        for impl, c in row.cells.items():
            s = h.fmt_time(c.value) if row.case not in ("e",) else f"{c.value:,.0f} calls/s"
            if c.p99 is not None:
                s += f" (p99 {h.fmt_time(c.p99)})"
            if c.peak is not None:
                s += f" [+{h.fmt_mb(c.peak)} MiB]"
            parts.append(f"{impl}={s}")
        print(f"  [{row.case}] {row.dataset:>14} | {row.what}: " + ", ".join(parts), flush=True)

    def add_target(self, t: Target) -> None:
        self.targets.append(t)
        res = {True: "PASS", False: "FAIL", None: "n/a"}[t.ok]
        print(f"  -> target {t.goal} [{t.dataset}]: {t.measured} {res}", flush=True)

    def load_datasets(self) -> None:
        a = self.args
        if a.ml100k:
            if os.path.exists(a.ml100k):
                t0 = time.perf_counter()
                self.datasets["ML-100k"] = data.load_ml100k(a.ml100k, a.ml100k_values)
                print(f"loaded ML-100k in {time.perf_counter() - t0:.2f}s", flush=True)
            else:
                self.note(f"--ml100k {a.ml100k}: no such file, the ML-100k section is skipped")
        else:
            self.note("no --ml100k PATH given, the ML-100k section is skipped")
        if not a.no_synthetic:
            if self.quick:
                name, shape = "synthetic-400k", (20_000, 5_000, 400_000)
            else:
                name, shape = "synthetic-5M", (100_000, 20_000, 5_000_000)
            t0 = time.perf_counter()
            self.datasets[name] = data.synthetic_power_law(*shape, seed=a.seed)
            print(f"generated {name} in {time.perf_counter() - t0:.2f}s", flush=True)
        for name, m in self.datasets.items():
            self.dataset_info[name] = data.describe(m)
            print(f"  {name}: {self.dataset_info[name]}", flush=True)

    def user_sample(self, ui: sp.csr_matrix) -> np.ndarray:
        rng = np.random.default_rng(self.args.seed + 1)
        n = min(N_USERS_SAMPLE, ui.shape[0])
        return rng.choice(ui.shape[0], size=n, replace=False).astype(np.int64)

    def neighbours(self, name: str, ui: sp.csr_matrix) -> tuple[sp.csr_matrix, str]:
        """The item-item top-100 cosine matrix every scorer of cases b, c, e uses."""
        if name not in self._sims:
            if self.core is not None:
                sim = self.core.similarity_topk(ui.T.tocsr(), K_SIM, num_threads=self.T)
                src = "recsys_core.similarity_topk"
            elif self.ref is not None:
                sim = self.ref.similarity_topk(ui.T.tocsr(), K_SIM)
                src = "reference.similarity_topk"
            else:
                from implicit.nearest_neighbours import CosineRecommender

                m = CosineRecommender(K=K_SIM, num_threads=self.T)
                m.fit(ui, show_progress=False)
                sim, src = m.similarity.astype(np.float32), "implicit CosineRecommender"
            self._sims[name] = (sp.csr_matrix(sim), src)
        return self._sims[name]

    def implicit_model(self, sim: sp.csr_matrix):
        """An implicit ItemItemRecommender that scores with the given neighbour matrix."""
        from implicit._nearest_neighbours import NearestNeighboursScorer
        from implicit.nearest_neighbours import ItemItemRecommender

        m = ItemItemRecommender(K=K_SIM, num_threads=self.T)
        m.similarity = sim.astype(np.float64).tocsr()
        m.scorer = NearestNeighboursScorer(m.similarity)
        return m

    # ------------------------------------------------------------ case a

    def case_a(self) -> None:
        print("\n== a. item-item top-100 similarity fit ==", flush=True)
        T = self.T
        for name, ui in self.datasets.items():
            big = ui.nnz > 1_000_000
            reps = self.reps(3 if big else 5)
            for variant in ("cosine", "bm25"):
                kw = {} if variant == "cosine" else {"weighting": "bm25", "measure": "dot"}
                cells: dict[str, Cell] = {}
                results: dict[str, object] = {}
                if self.core is not None:
                    core = self.core
                    t = h.time_call(
                        lambda core=core, kw=kw, ui=ui: core.similarity_topk(
                            ui.T.tocsr(), K_SIM, num_threads=T, **kw
                        ),
                        reps,
                    )
                    cells["ours"], results["ours"] = cell_from(t), t.result
                if self.ref is not None:
                    ref = self.ref
                    t = h.time_call(
                        lambda ref=ref, kw=kw, ui=ui: ref.similarity_topk(
                            ui.T.tocsr(), K_SIM, **kw
                        ),
                        reps,
                        slow_after=20.0,
                    )
                    cells["scipy"], results["scipy"] = cell_from(t), t.result
                if self.imp is not None:
                    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

                    cls = CosineRecommender if variant == "cosine" else BM25Recommender

                    def fit_implicit(cls=cls, ui=ui):
                        m = cls(K=K_SIM, num_threads=T)
                        m.fit(ui, show_progress=False)
                        return m

                    t = h.time_call(fit_implicit, reps)
                    cells["implicit"] = cell_from(t)
                extra = {}
                if "ours" in results and "scipy" in results:
                    extra["agreement"] = sim_agreement(results["ours"], results["scipy"])
                    print(f"    ours vs reference: {extra['agreement']}", flush=True)
                if variant == "cosine" and "ours" in results and name not in self._sims:
                    self._sims[name] = (results["ours"], "recsys_core.similarity_topk")
                what = (
                    "cosine top-100 fit"
                    if variant == "cosine"
                    else "BM25 (k1=1.2, b=0.75, dot) top-100 fit"
                )
                self.add_row(Row("a", name, what, cells, extra))
                ours = cells.get("ours")
                r_ref = ratio(cells.get("scipy"), ours)
                r_imp = ratio(cells.get("implicit"), ours)
                tag = "" if variant == "cosine" else " (BM25)"
                # The 4x bar is set for the 5M-interaction matrix; on ML-100k (1.7k items) the
                # fixed costs of a call dominate and the ratio is reported without a target.
                if name.startswith("synthetic"):
                    self.add_target(
                        Target(
                            "a",
                            name,
                            f"a{tag}: ours ≥ 4x faster than scipy",
                            f"scipy/ours = {h.fmt_ratio(r_ref)}",
                            None if r_ref is None else r_ref >= 4.0,
                        )
                    )
                self.add_target(
                    Target(
                        "a",
                        name,
                        f"a{tag}: ours faster than implicit",
                        f"implicit/ours = {h.fmt_ratio(r_imp)}",
                        None if r_imp is None else r_imp > 1.0,
                    )
                )

    # ------------------------------------------------------------ case b

    def case_b(self) -> None:
        print("\n== b. item-KNN top-10 for a batch of users, seen items excluded ==", flush=True)
        for name, ui in self.datasets.items():
            sim, src = self.neighbours(name, ui)
            users = self.user_sample(ui)
            hist = ui[users]
            reps = self.reps(5, 2)
            cells: dict[str, Cell] = {}
            results: dict[str, object] = {}
            if self.core is not None:
                scorer = self.core.SparseScorer(sim)
                t = h.time_call(
                    lambda scorer=scorer, hist=hist: scorer.recommend_batch(
                        hist, K_REC, num_threads=self.T
                    ),
                    reps,
                )
                cells["ours"], results["ours"] = cell_from(t), t.result
            if self.ref is not None:
                ref = self.ref
                t = h.time_call(
                    lambda ref=ref, sim=sim, hist=hist: ref.recommend_sparse_batch(
                        sim, hist, K_REC
                    ),
                    reps,
                )
                cells["scipy"], results["scipy"] = cell_from(t), t.result
            if self.imp is not None:
                model = self.implicit_model(sim)
                t = h.time_call(
                    lambda model=model, users=users, hist=hist: model.recommend(
                        users, hist, N=K_REC, filter_already_liked_items=True
                    ),
                    reps,
                )
                cells["implicit"], results["implicit"] = cell_from(t), t.result
            extra = {"users": len(users), "neighbours_from": src}
            if "ours" in results and "scipy" in results:
                b = results["ours"]
                indptr, items, _ = results["scipy"]
                extra["agreement"] = list_agreement(
                    np.asarray(b.indptr), np.asarray(b.items), np.asarray(indptr), items
                )
                print(f"    ours vs reference: {extra['agreement']}", flush=True)
            if "ours" in results and "implicit" in results:
                b, (ids, _) = results["ours"], results["implicit"]
                per = np.full(len(users) + 1, K_REC, dtype=np.int64)
                per[0] = 0
                extra["agreement_implicit"] = list_agreement(
                    np.asarray(b.indptr), np.asarray(b.items), np.cumsum(per), ids.ravel()
                )
                print(f"    ours vs implicit: {extra['agreement_implicit']}", flush=True)
            self.add_row(Row("b", name, f"top-10 batch of {len(users)} users", cells, extra))
            r = ratio(cells.get("implicit"), cells.get("ours"))
            self.add_target(
                Target(
                    "b",
                    name,
                    "b: batch faster than implicit",
                    f"implicit/ours = {h.fmt_ratio(r)}",
                    None if r is None else r > 1.0,
                )
            )

    # ------------------------------------------------------------ case c

    def case_c(self) -> None:
        print("\n== c. single-user item-KNN top-10 latency ==", flush=True)
        passes = self.reps(3, 1)
        for name, ui in self.datasets.items():
            sim, src = self.neighbours(name, ui)
            users = self.user_sample(ui)
            rows = [ui[int(u)] for u in users]
            args = [(int(u), r, r.indices, r.data) for u, r in zip(users, rows, strict=True)]
            cells: dict[str, Cell] = {}
            fns = {}
            if self.core is not None:
                rec = self.core.SparseScorer(sim).recommend
                fns["ours"] = lambda a, rec=rec: rec(a[2], a[3], k=K_REC)
            if self.ref is not None:
                ref = self.ref
                fns["scipy"] = lambda a, ref=ref, sim=sim: ref.recommend_sparse(
                    sim, a[2], a[3], K_REC
                )
            if self.imp is not None:
                model = self.implicit_model(sim)
                fns["implicit"] = lambda a, model=model: model.recommend(a[0], a[1], N=K_REC)
            for impl, fn in fns.items():
                ns = h.latencies_ns(fn, args, passes=passes)
                with h.PeakRSS() as m:
                    for a in args:
                        fn(a)
                cells[impl] = cell_from_lat(ns, m.peak)
            self.add_row(
                Row(
                    "c",
                    name,
                    f"single-user top-10, p50 (p99) over {len(users)} users x {passes}",
                    cells,
                    {"neighbours_from": src},
                )
            )
            ours, imp = cells.get("ours"), cells.get("implicit")
            ok = None if ours is None or imp is None else ours.value <= imp.value
            self.add_target(
                Target(
                    "c",
                    name,
                    "c: p50 ≤ implicit p50",
                    f"ours {h.fmt_time(ours and ours.value)} vs implicit "
                    f"{h.fmt_time(imp and imp.value)}",
                    ok,
                )
            )

    # ------------------------------------------------------------ case d

    def case_d(self) -> None:
        print("\n== d. dense top-10 over n items x 64 factors (float32) ==", flush=True)
        rng = np.random.default_rng(self.args.seed + 2)
        for n_items in (100_000, 1_000_000):
            name = f"dense-{n_items // 1000}k" if n_items < 10**6 else "dense-1M"
            F = rng.standard_normal((n_items, DENSE_DIM), dtype=np.float32)
            us = [rng.standard_normal(DENSE_DIM, dtype=np.float32) for _ in range(50)]
            passes = (6 if n_items <= 100_000 else 2) if not self.quick else 1
            fns = {}
            if self.core is not None:
                rec = self.core.DenseScorer(F).recommend
                stream = self.core.stream_read
                fns["ours"] = lambda u, rec=rec: rec(u, K_REC)
                fns["bound"] = lambda u, stream=stream, F=F: stream(F)
            fns["numpy"] = lambda u, F=F: numpy_topk(F, u, K_REC)
            cells: dict[str, Cell] = {}
            for impl, fn in fns.items():
                ns = h.latencies_ns(fn, us, passes=passes)
                with h.PeakRSS() as m:
                    fn(us[0])
                cells[impl] = cell_from_lat(ns, m.peak)
            gbs = {k: F.nbytes / c.value / 1e9 for k, c in cells.items()}
            extra = {"bytes": F.nbytes, "GB/s": gbs}
            if "ours" in fns:
                extra["agreement"] = dense_agreement(self.core.DenseScorer(F), F, us[:10])
            self.add_row(Row("d", name, f"{n_items:,} x {DENSE_DIM} top-10, p50", cells, extra))
            print("    GB/s: " + ", ".join(f"{k}={v:.1f}" for k, v in gbs.items()), flush=True)
            r = ratio(cells.get("ours"), cells.get("bound"))
            self.add_target(
                Target(
                    "d",
                    name,
                    "d: ours p50 within 1.5x of stream_read bound",
                    f"ours/bound = {h.fmt_ratio(r)}",
                    None if r is None else r <= 1.5,
                )
            )
            del F

    # ------------------------------------------------------------ case e

    def case_e(self) -> None:
        print("\n== e. GIL release: single-user calls from 1 vs 2 Python threads ==", flush=True)
        # one kernel thread per call, so the two Python threads are what can use both cores
        old = os.environ.get("RECSYS_NUM_THREADS")
        os.environ["RECSYS_NUM_THREADS"] = "1"
        try:
            self._case_e()
        finally:
            os.environ["RECSYS_NUM_THREADS"] = old or str(self.T)

    def _case_e(self) -> None:
        budget = 0.3 if self.quick else 1.0  # seconds of single-thread work per trial
        trials = self.reps(3, 1)
        jobs = []
        for name, ui in self.datasets.items():
            sim, _ = self.neighbours(name, ui)
            users = self.user_sample(ui)
            args = [(int(u), ui[int(u)]) for u in users]
            args = [(u, r, r.indices, r.data) for u, r in args]
            if self.core is not None:
                rec = self.core.SparseScorer(sim).recommend
                jobs.append(
                    (
                        "ours SparseScorer.recommend",
                        name,
                        lambda a, rec=rec: rec(a[2], a[3], k=K_REC),
                        args,
                        True,
                    )
                )
            if self.imp is not None:
                model = self.implicit_model(sim)
                jobs.append(
                    (
                        "implicit recommend (for comparison)",
                        name,
                        lambda a, model=model: model.recommend(a[0], a[1], N=K_REC),
                        args,
                        False,
                    )
                )
        if self.core is not None:
            rng = np.random.default_rng(self.args.seed + 3)
            F = rng.standard_normal((100_000, DENSE_DIM), dtype=np.float32)
            us = [rng.standard_normal(DENSE_DIM, dtype=np.float32) for _ in range(50)]
            rec = self.core.DenseScorer(F).recommend
            jobs.append(
                ("ours DenseScorer.recommend", "dense-100k", lambda u: rec(u, K_REC), us, True)
            )
        for what, name, fn, args, is_target in jobs:
            for a in args[:50]:
                fn(a)
            t0 = time.perf_counter()
            for a in args[:200]:
                fn(a)
            per_call = (time.perf_counter() - t0) / min(200, len(args))
            total = max(400, int(budget / per_call) // 2 * 2)
            best = {1: 0.0, 2: 0.0}
            for _ in range(trials):
                for nt in (1, 2):
                    best[nt] = max(best[nt], h.threaded_throughput(fn, args, nt, total))
            cells = {"1 thread": Cell(best[1], n=total), "2 threads": Cell(best[2], n=total)}
            r = best[2] / best[1]
            self.add_row(Row("e", name, what, cells, {"scaling": r, "per_call_s": per_call}))
            if is_target:
                self.add_target(
                    Target(
                        "e",
                        name,
                        f"e: {what.split()[1]} 2-thread/1-thread throughput ≥ 1.6x",
                        f"{r:.2f}x",
                        r >= 1.6,
                    )
                )

    # ------------------------------------------------------------ run

    def run(self) -> None:
        self.load_datasets()
        with threadpool_limits(limits=self.T, user_api="blas"):
            for c in self.args.only:
                if c != "d" and not self.datasets:
                    self.note(f"case {c}: no dataset, skipped")
                    continue
                self.run_case(c)

    def run_case(self, c: str) -> None:
        """Runs case ``c``; reruns it (at most --busy-retries times) when other processes used
        more than 0.15 cores meanwhile, keeping only the last attempt's results."""
        busy = 0.15
        for attempt in range(self.args.busy_retries + 1):
            if self.args.wait_quiet > 0:
                before = h.wait_quiet(self.args.wait_quiet)
                if before is not None and before >= 0.1:
                    print(f"  (machine still busy: {before:.2f} other cores)", flush=True)
            n_rows, n_targets = len(self.rows), len(self.targets)
            with h.CpuLoad() as load:
                getattr(self, f"case_{c}")()
            other = load.other_cores
            self.load[c] = other
            if other is None:
                return
            print(
                f"  (case {c}: other processes used {other:.2f} CPU cores on average meanwhile)",
                flush=True,
            )
            if other <= busy:
                return
            if attempt < self.args.busy_retries:
                print(f"  case {c} was disturbed: running it again", flush=True)
                del self.rows[n_rows:], self.targets[n_targets:]
        self.note(
            f"case {c}: other processes used {other:.2f} of {os.cpu_count()} cores on average "
            f"while it ran (after {self.args.busy_retries} reruns); its timings are disturbed"
        )


# ---------------------------------------------------------------- checks


def numpy_topk(F: np.ndarray, u: np.ndarray, k: int) -> np.ndarray:
    s = F @ u
    idx = np.argpartition(s, len(s) - k)[len(s) - k :]
    return idx[np.lexsort((idx, -s[idx]))]


def sim_agreement(ours, ref, n_rows: int = 200) -> str:
    ours, ref = sp.csr_matrix(ours), sp.csr_matrix(ref)
    if ours.shape != ref.shape:
        return f"shape differs: {ours.shape} vs {ref.shape}"
    rows = np.random.default_rng(0).choice(ours.shape[0], min(n_rows, ours.shape[0]), False)
    same, maxdiff = 0, 0.0
    for r in rows:
        a = ours.indices[ours.indptr[r] : ours.indptr[r + 1]]
        b = ref.indices[ref.indptr[r] : ref.indptr[r + 1]]
        if np.array_equal(np.sort(a), np.sort(b)):
            same += 1
        common = np.intersect1d(a, b)
        if len(common):
            d = np.abs(np.asarray(ours[r, common].todense()) - np.asarray(ref[r, common].todense()))
            maxdiff = max(maxdiff, float(d.max()))
    return (
        f"nnz {ours.nnz:,} vs {ref.nnz:,}; same neighbour set in {same}/{len(rows)} sampled rows;"
        f" max |Δ| on common entries {maxdiff:.2e}"
    )


def list_agreement(ip_a, items_a, ip_b, items_b) -> str:
    n = len(ip_a) - 1
    same = sum(
        np.array_equal(items_a[ip_a[i] : ip_a[i + 1]], items_b[ip_b[i] : ip_b[i + 1]])
        for i in range(n)
    )
    return f"identical top-{K_REC} lists for {same}/{n} users"


def dense_agreement(scorer, F, us) -> str:
    same = sum(
        np.array_equal(np.asarray(scorer.recommend(u, K_REC).items), numpy_topk(F, u, K_REC))
        for u in us
    )
    return f"same top-{K_REC} as numpy for {same}/{len(us)} users"


# ---------------------------------------------------------------- report


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True))

    out = [line(headers) + " |", "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) + " |" for r in rows]
    return "\n".join(out)


def _cell_time(c: Cell | None) -> str:
    if c is None:
        return "n/a"
    s = h.fmt_time(c.value)
    if c.p99 is not None:
        s += f" ({h.fmt_time(c.p99)})"
    return s


def _peaks(cells: dict[str, Cell], keys: list[str]) -> str:
    return " / ".join(h.fmt_mb(cells[k].peak) if k in cells else "n/a" for k in keys)


def tables(bench: Bench) -> dict[str, str]:
    out = {}
    rows = []
    for r in bench.rows:
        if r.case not in "abc":
            continue
        c = r.cells
        rows.append(
            [
                r.case,
                r.dataset,
                r.what,
                _cell_time(c.get("ours")),
                _cell_time(c.get("scipy")),
                _cell_time(c.get("implicit")),
                h.fmt_ratio(ratio(c.get("scipy"), c.get("ours"))),
                h.fmt_ratio(ratio(c.get("implicit"), c.get("ours"))),
                _peaks(c, ["ours", "scipy", "implicit"]),
            ]
        )
    if rows:
        out["sparse"] = md_table(
            [
                "case",
                "dataset",
                "measure",
                "ours",
                "scipy reference",
                "implicit",
                "ours vs scipy",
                "ours vs implicit",
                "peak ΔRSS MiB ours / scipy / implicit",
            ],
            rows,
        )
    rows = []
    for r in bench.rows:
        if r.case != "d":
            continue
        c, gbs = r.cells, r.extra["GB/s"]
        rows.append(
            [
                r.dataset,
                _cell_time(c.get("ours")),
                _cell_time(c.get("numpy")),
                _cell_time(c.get("bound")),
                h.fmt_ratio(ratio(c.get("ours"), c.get("bound"))),
                h.fmt_ratio(ratio(c.get("numpy"), c.get("ours"))),
                " / ".join(f"{gbs[k]:.1f}" if k in gbs else "n/a" for k in ("ours", "bound")),
                _peaks(c, ["ours", "numpy", "bound"]),
            ]
        )
    if rows:
        out["dense"] = md_table(
            [
                "dataset",
                "ours p50 (p99)",
                "numpy p50 (p99)",
                "bound: stream_read p50 (p99)",
                "ours / bound",
                "ours vs numpy",
                "GB/s ours / bound",
                "peak ΔRSS MiB ours / numpy / bound",
            ],
            rows,
        )
    rows = []
    for r in bench.rows:
        if r.case != "e":
            continue
        c = r.cells
        rows.append(
            [
                r.what,
                r.dataset,
                h.fmt_time(1.0 / c["1 thread"].value),
                f"{c['1 thread'].value:,.0f}",
                f"{c['2 threads'].value:,.0f}",
                f"{r.extra['scaling']:.2f}x",
            ]
        )
    if rows:
        out["gil"] = md_table(
            [
                "call",
                "dataset",
                "time per call, 1 thread",
                "calls/s, 1 Python thread",
                "calls/s, 2 Python threads",
                "2 / 1",
            ],
            rows,
        )
    rows = [
        [t.goal, t.dataset, t.measured, {True: "PASS", False: "FAIL", None: "n/a"}[t.ok]]
        for t in bench.targets
    ]
    if rows:
        out["targets"] = md_table(["target", "dataset", "measured", "result"], rows)
    return out


def environment(bench: Bench) -> dict:
    blas = []
    for i in threadpool_info():
        b = {k: i.get(k) for k in ("internal_api", "architecture", "version", "num_threads")}
        path = i.get("filepath") or ""
        b["used_by"] = next((m for m in ("numpy", "scipy") if m in path), "implicit (OpenMP)")
        b["library"] = os.path.basename(path)
        blas.append(b)
    env = {
        "cpu": h.lscpu(),
        "memory": h.mem_total(),
        "kernel": os.uname().release,
        "python": h.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "implicit": getattr(bench.imp, "__version__", "not installed"),
        "recsys_core": bench.start["recsys_core"],
        "threadpoolctl": blas,
        "removed_env": bench.removed_env,
        "threads": bench.T,
        "git": bench.start["git"],
        "date": bench.start["date"],
        "command": command_line(),
        "other_cpu_load": bench.load,
    }
    return env


def core_version(core) -> str:
    if core is None:
        return "not built"
    v = getattr(core, "__version__", None)
    if v is None:
        try:
            from importlib.metadata import version

            v = version("recsys-core")
        except Exception:
            v = "?"
    native = getattr(getattr(core, "_native", None), "__file__", None)
    if not native:
        return str(v)
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(native)))
    return f"{v} (`{os.path.basename(native)}` built {built})"


def command_line() -> str:
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(REPO))
    except ValueError:
        shown = "python"
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(REPO))
    except ValueError:
        script_s = str(script)
    return " ".join([shown, script_s, *(shlex.quote(a) for a in sys.argv[1:])])


def print_report(bench: Bench, tabs: dict[str, str], env: dict) -> None:
    print("\n" + "=" * 100)
    print(f"command: {env['command']}")
    print(f"git: {env['git']}   date: {env['date']}   threads: {env['threads']}")
    cpu = env["cpu"]
    print(
        f"cpu: {cpu.get('Model name')}, {cpu.get('CPU(s)')} CPUs, L2 {cpu.get('L2 cache')}, "
        f"L3 {cpu.get('L3 cache')}; python {env['python']}, numpy {env['numpy']}, "
        f"scipy {env['scipy']}, implicit {env['implicit']}"
    )
    blas = [
        f"{b['used_by']}: {b['internal_api']} {b['architecture'] or ''}".strip()
        for b in env["threadpoolctl"]
    ]
    print(f"BLAS (threadpoolctl): {', '.join(blas)}; removed env: {env['removed_env'] or 'none'}")
    for key, title in (
        ("sparse", "Sparse cases a-c (median time; latency rows p50 (p99); ratios = X / ours)"),
        ("dense", "Dense case d (p50 per call)"),
        ("gil", "GIL release case e"),
        ("targets", "Targets"),
    ):
        if key in tabs:
            print(f"\n{title}\n{tabs[key]}")
    for n in bench.notes:
        print(f"NOTE: {n}")


def write_docs(bench: Bench, tabs: dict[str, str], env: dict, path: Path) -> None:
    cpu = env["cpu"]
    blas_lines = "\n".join(
        f"  * {b['used_by']}: {b['internal_api']} {b['version'] or ''} (`{b['library']}`)"
        + (f", kernel `{b['architecture']}`" if b["architecture"] else "")
        + f", {b['num_threads']} threads"
        for b in env["threadpoolctl"]
    )
    ds_rows = [
        [
            name,
            f"{i['users']:,} x {i['items']:,}",
            f"{i['nnz']:,}",
            f"{i['density']:.4%}",
            " / ".join(str(x) for x in i["user_activity_p50_p99_max"]),
            " / ".join(str(x) for x in i["item_popularity_p50_p99_max"]),
        ]
        for name, i in bench.dataset_info.items()
    ]
    ds_table = (
        md_table(
            [
                "dataset",
                "users x items",
                "interactions",
                "density",
                "items per user p50 / p99 / max",
                "users per item p50 / p99 / max",
            ],
            ds_rows,
        )
        if ds_rows
        else "(none)"
    )
    fails = [t for t in bench.targets if t.ok is False]
    missing = [t for t in bench.targets if t.ok is None]
    verdict = (
        f"{sum(t.ok is True for t in bench.targets)} of {len(bench.targets)} targets pass"
        + (f"; failing: {', '.join(f'{t.goal} [{t.dataset}]' for t in fails)}" if fails else "")
        + (f"; not measured: {len(missing)}" if missing else "")
        + "."
    )
    versus = {"agreement": "ours vs reference", "agreement_implicit": "ours vs implicit"}
    agreements = [
        f"* {r.case} {r.dataset} {r.what}, "
        f"{'ours vs numpy' if r.case == 'd' else versus.get(k, k)}: {v}"
        for r in bench.rows
        for k, v in r.extra.items()
        if k.startswith("agreement")
    ]
    sections = [
        "# Benchmarks of the Rust core",
        "",
        "Generated by `core_rs/bench/bench_core.py --write-docs`; rerun it to refresh this page "
        "(the numbers below are from one run on the machine described).",
        "",
        "```",
        env["command"],
        "```",
        "",
        f"* date: {env['date']} (start of the run)",
        f"* git commit: {env['git']}",
        f"* threads: `--threads {env['threads']}` (ours via `num_threads=` or "
        f"`RECSYS_NUM_THREADS`, implicit via `num_threads=`, BLAS via threadpoolctl)",
        "",
        f"**Summary: {verdict}**",
        "",
        "## Machine",
        "",
        f"* CPU: {cpu.get('Model name', '?')}, {cpu.get('CPU(s)', '?')} CPUs "
        f"({cpu.get('Socket(s)', '?')} socket x {cpu.get('Core(s) per socket', '?')} cores x "
        f"{cpu.get('Thread(s) per core', '?')} threads)"
        + (f", hypervisor {cpu['Hypervisor vendor']}" if "Hypervisor vendor" in cpu else ""),
        f"* caches: L1d {cpu.get('L1d cache', '?')}, L1i {cpu.get('L1i cache', '?')}, "
        f"L2 {cpu.get('L2 cache', '?')}, L3 {cpu.get('L3 cache', '?')} (as `lscpu` reports them)",
        f"* memory: {env['memory']}; kernel {env['kernel']}",
        f"* {env['python']}, numpy {env['numpy']}, scipy {env['scipy']}, "
        f"implicit {env['implicit']}, recsys_core {env['recsys_core']}",
        "* BLAS as threadpoolctl reports it in the benchmark process:",
        blas_lines,
        "* environment: "
        + (
            "removed before numpy was loaded: "
            + ", ".join(f"`{k}={v}`" for k, v in env["removed_env"].items())
            if env["removed_env"]
            else "no `OPENBLAS_CORETYPE` / `OPENBLAS_L2_SIZE` was set"
        ),
        "* other processes' CPU use while each case ran (cores, from `/proc/stat` minus this "
        "process): "
        + (
            ", ".join(
                f"{c}: {'?' if v is None else f'{v:.2f}'}" for c, v in env["other_cpu_load"].items()
            )
            or "n/a"
        ),
        "",
        "## Datasets",
        "",
        ds_table,
        "",
        "* **ML-100k**: MovieLens 100k `u.data`, users x items, every rating stored as 1.0 "
        "(`--ml100k-values rating` keeps the rating). The file is read from `--ml100k PATH`; "
        "it is not in the repository.",
        "* **synthetic**: `bench_data.synthetic_power_law`, seeded (`--seed`). Item popularity is "
        "Zipf-like (P(rank r) ~ r^-0.9, ranks shuffled over the ids), user activity lognormal "
        "(sigma 1.1, at least 2, at most 5% of the catalogue), pairs drawn independently, "
        "deduplicated and topped up to exactly the target count of distinct pairs, value 1.0. "
        "`--quick` shrinks it to 20,000 x 5,000 x 400,000.",
        "* **dense**: seeded standard-normal float32 item factors, n x 64, and 50 user vectors.",
        "",
        "## Results",
        "",
        "Ratios are `X time / ours time`: above 1 means ours is faster.",
        "",
        "### Sparse: similarity fit (a), batch scoring (b), single-user latency (c)",
        "",
        tabs.get("sparse", "(not run)"),
        "",
        "### Dense single-user top-10 (d)",
        "",
        tabs.get("dense", "(not run)"),
        "",
        "### GIL release (e)",
        "",
        tabs.get("gil", "(not run)"),
        "",
        "### Targets",
        "",
        tabs.get("targets", "(not run)"),
        "",
    ]
    if agreements:
        sections += ["### Result agreement (sanity checks)", "", *agreements, ""]
    if bench.notes:
        sections += ["### Notes from this run", "", *(f"* {n}" for n in bench.notes), ""]
    sections += [METHOD, ""]
    # Sections written by other benchmarks (trainer, server) follow the marker; keep them.
    tail = ""
    if path.exists() and DOCS_MARKER in (old := path.read_text()):
        tail = old[old.index(DOCS_MARKER) :]
    path.write_text("\n".join(sections) + ("\n" + tail if tail else ""))
    print(f"\nwrote {path}")


METHOD = """## Method

**What each case times.** Every implementation starts from the same inputs and its timed call
includes all the conversion it needs from them:

* **a** — fit of the item-item top-100 similarity from the users x items CSR matrix `user_items`:
  ours `recsys_core.similarity_topk(user_items.T.tocsr(), 100, num_threads=T)`, the reference
  `reference.similarity_topk(user_items.T.tocsr(), 100)` (numpy/scipy, single-threaded), and
  `implicit.nearest_neighbours.CosineRecommender(K=100, num_threads=T).fit(user_items)`. The BM25
  row uses `weighting="bm25", measure="dot"` (k1 = 1.2, b = 0.75), which is what implicit's
  `BM25Recommender(K=100, num_threads=T)` computes (BM25-weighted dot products, no normalisation).
  implicit keeps each item itself among its K neighbours, ours and the reference do not
  (`include_self=False`); the work is otherwise the same.
* **b** — top-10 for a fixed seeded sample of 1,000 users (all 943 on ML-100k), items the user
  has seen excluded: ours `SparseScorer(sim).recommend_batch(user_items[users], 10,
  num_threads=T)`, the reference `reference.recommend_sparse_batch(sim, user_items[users], 10)`
  and implicit `model.recommend(users, user_items[users], N=10, filter_already_liked_items=True)`.
  All three score with the **same** neighbour matrix `sim` (ours from case a; implicit's model is
  an `ItemItemRecommender` whose `similarity`/`scorer` are set to it), so only the scoring is
  compared. Building the scorer (`SparseScorer(sim)`, implicit's `NearestNeighboursScorer`) is a
  model load, outside the timing; the row slice `user_items[users]` is made once, outside it.
* **c** — the same users one call at a time, `time.perf_counter_ns()` around each call: ours
  `SparseScorer.recommend(items, weights, k=10)`, the reference `reference.recommend_sparse`, and
  implicit `model.recommend(uid, user_items[uid], N=10)`. Each user's inputs (its index/weight
  arrays, its one-row CSR for implicit) are prepared before the loop. One untimed warm-up pass,
  then 3 timed passes over the users; p50 and p99 are over all timed calls.
* **d** — `DenseScorer(F).recommend(u, 10)` for `F` of 100k and 1M items x 64 float32 against
  numpy (`F @ u`, `argpartition`, sort of the 10) with BLAS limited to T threads, and against the
  memory-bandwidth bound: `recsys_core.stream_read(F)`, which sums `F` with the same access pattern
  and thread count as the scorer (both use `RECSYS_NUM_THREADS = T` here) and does nothing else;
  its p50 is measured in the same run, interleaved with nothing else, over the same number of
  calls. GB/s = `F.nbytes` / p50 time. With 100k items `F` is 25.6 MB and may stay in the
  last-level cache between calls, so that bound is a cache bandwidth; 1M items (256 MB) is closer
  to DRAM bandwidth (lscpu's L3 size on a VM may not be the physical one).
* **e** — throughput of single-user calls from one Python thread against two `threading.Thread`s
  (same total number of calls, split evenly, each thread its own loop, wall time from a barrier
  to the last join; best of 3 trials). `RECSYS_NUM_THREADS=1` during this case, so each call uses
  one core and only the Python threads can occupy the second: 2.0x means the GIL is released for
  the whole call. implicit's `recommend` is shown for comparison.

**Timings.** Every timed case first runs once untimed (warm-up, and the memory measurement),
then N timed runs: N = 5 (3 for the 5M-interaction fit) and the median is reported; a first run
longer than 20-30 s counts as one of the N. Latencies are percentiles of per-call
`perf_counter_ns` samples. No sampler thread runs during timed runs.

**Peak memory.** `peak ΔRSS` is the growth of the resident set during one call: a background
thread reads `/proc/self/statm` every ~1 ms and keeps the maximum, reported minus the RSS read
just before the call. A Python thread can only sample while the call has released the GIL, so
the kernel's own high-water mark is also used: `VmHWM` is reset by writing `5` to
`/proc/self/clear_refs` before the call and read from `/proc/self/status` after it, and the larger
of the two peaks is reported. Memory that the allocator reuses from earlier calls (already
resident) does not count, so this is the *additional* memory a call needed, not its total
working set. For case c it is one pass over all users.
"""


def run(args: argparse.Namespace, removed_env: dict[str, str]) -> int:
    print(f"recsys_core benchmark: cases {args.only}, threads {args.threads}", flush=True)
    if removed_env:
        print(f"removed from the environment before loading numpy: {removed_env}")
    bench = Bench(args, removed_env)
    bench.run()
    tabs = tables(bench)
    env = environment(bench)
    print_report(bench, tabs, env)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "env": env,
                    "datasets": bench.dataset_info,
                    "rows": [asdict(r) for r in bench.rows],
                    "targets": [asdict(t) for t in bench.targets],
                    "notes": bench.notes,
                },
                indent=1,
                default=str,
            )
        )
    if args.write_docs:
        write_docs(bench, tabs, env, DOCS)
    return 0
