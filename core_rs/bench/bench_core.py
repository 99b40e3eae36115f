#!/usr/bin/env python
"""Benchmark of the Rust core (`recsys_core`) against the numpy/scipy reference and `implicit`.

    python core_rs/bench/bench_core.py [--ml100k PATH] [--threads 2] [--quick] [--write-docs]

Cases (choose with --only, e.g. ``--only a,b``):

  a  item-item top-100 cosine (and BM25) similarity fit
  b  item-KNN top-10 for a batch of 1,000 users, excluding seen items
  c  single-user item-KNN top-10 latency (p50, p99)
  d  dense top-10 for one user over 100k and 1M items x 64 factors, vs the bandwidth bound
  e  GIL release: single-user call throughput from 1 vs 2 Python threads

This file only prepares the process environment (it must run before numpy is imported) and
hands over to ``bench_cases.run``; the cases live in ``bench_cases.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# They slow numpy's OpenBLAS down on this machine; removed before numpy is loaded.
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
CASES = "abcde"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ml100k", metavar="PATH", help="MovieLens 100k u.data (tab separated)")
    p.add_argument(
        "--ml100k-values",
        choices=("binary", "rating"),
        default="binary",
        help="ML-100k matrix values: 1.0 per rating (default) or the rating",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for ours, implicit and BLAS")
    p.add_argument("--quick", action="store_true", help="small datasets, few repeats (smoke run)")
    p.add_argument("--only", default=CASES, help="cases to run, e.g. 'a,c' (default: all)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic 5M dataset")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="before each case wait up to this long for other processes to leave the CPUs\n"
        "alone (< 0.1 core over 2 s); 0 disables (default: 120)",
    )
    p.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        metavar="N",
        help="rerun a case up to N times when other processes used > 0.15 core meanwhile",
    )
    p.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    p.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    p.add_argument("--seed", type=int, default=20240601, help="seed of all generated data")
    args = p.parse_args(argv)
    only = set(args.only.replace(",", "").replace(" ", "").lower())
    if not only or only - set(CASES):
        p.error(f"--only takes letters from {CASES!r}")
    args.only = "".join(c for c in CASES if c in only)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def prepare_env(args: argparse.Namespace) -> dict[str, str]:
    """Removes the OpenBLAS tuning variables (re-executing if numpy is already loaded) and sets
    RECSYS_NUM_THREADS so ours uses --threads wherever a call has no num_threads argument."""
    marker = "_RECSYS_BENCH_REMOVED_ENV"
    removed = json.loads(os.environ.pop(marker, "{}"))
    removed.update({v: os.environ.pop(v) for v in BLAS_ENV_VARS if v in os.environ})
    if removed and "numpy" in sys.modules:  # too late to unset in-process: start afresh
        os.environ[marker] = json.dumps(removed)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    os.environ["RECSYS_NUM_THREADS"] = str(args.threads)
    return removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    removed = prepare_env(args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_cases  # imports numpy: only after prepare_env

    return bench_cases.run(args, removed)


if __name__ == "__main__":
    sys.exit(main())
