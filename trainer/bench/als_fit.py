"""ALS fit time: our SVD's half-steps against implicit's conjugate-gradient ALS, one run.

    python trainer/bench/als_fit.py [--ml100k PATH/u.data] [--steam PATH/steam-200k-play.csv]
        [--factors 64,100,128] [--reps 3]

What a tuning trial fits (6 sweeps, 3 CG steps per row, binary weights, α 2, λ 0.1) on
the training part of the quality protocol's split, with both libraries on the machine's 2
threads: ours is ``SVD.fit`` (Rust ``als_half_step``), the baseline
``implicit.cpu.als.AlternatingLeastSquares(use_cg=True)`` (3 CG steps, its default), the
same algorithm (Takács et al.'s CG for Hu-Koren-Volinsky) and cost per sweep. The two
alternate, best of ``--reps`` each; the ratio implicit / ours is the figure (the machine is
shared and noisy).
The default synthetic set is always included.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

TRAINER = Path(__file__).resolve().parents[1]
if str(TRAINER) not in sys.path:
    sys.path.insert(0, str(TRAINER))

from quality import TEST_SEED, add_shared_set_args, shared_sets  # noqa: E402

from recsys_core.models import SVD, SVDConfig  # noqa: E402
from recsys_core.splits import random_holdout  # noqa: E402

SWEEPS, CG_STEPS, ALPHA, REG = 6, 3, 2.0, 0.1


def ours(train, f: int) -> float:
    cfg = SVDConfig(
        n_factors=f,
        iterations=SWEEPS,
        cg_steps=CG_STEPS,
        alpha=ALPHA,
        regularization=REG,
        transform="binary",
    )
    t = time.perf_counter()
    SVD(cfg).fit(train)
    return time.perf_counter() - t


def theirs(user_items: sp.csr_matrix, f: int) -> float:
    from implicit.cpu.als import AlternatingLeastSquares

    m = AlternatingLeastSquares(
        factors=f,
        regularization=REG,
        alpha=ALPHA,
        iterations=SWEEPS,
        use_cg=True,  # 3 CG steps per row: implicit's fixed cg_steps
        calculate_training_loss=False,
        num_threads=2,
        random_state=0,
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's advice: its threads, not BLAS's
        t = time.perf_counter()
        m.fit(user_items, show_progress=False)
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_set_args(ap)
    ap.add_argument("--factors", default="64,100,128")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    try:
        import implicit  # noqa: F401
    except ImportError:
        print("implicit is not installed (pip install implicit): no baseline to compare with")
        return 1
    sets = shared_sets(a)
    print(f"| data | factors | ours (best of {a.reps}) | implicit | implicit / ours |")
    print("|---|---:|---:|---:|---:|")
    for d in sets:
        title, (train, _) = d.key, random_holdout(d.inter, 0.2, seed=TEST_SEED)
        ui = train.to_csr()
        binary = sp.csr_matrix((np.ones(ui.nnz, np.float32), ui.indices, ui.indptr), ui.shape)
        for f in (int(v) for v in a.factors.split(",")):
            mine, base = [], []
            for _ in range(a.reps):
                mine.append(ours(train, f))
                base.append(theirs(binary, f))
            m, b = min(mine), min(base)
            print(f"| {title} | {f} | {m:.3f} s | {b:.3f} s | {b / m:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
