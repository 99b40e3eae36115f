"""What interleave serving costs a request: `scoring.recommend` for users of an interleave
experiment (both variants' lists, then the team draft) against the same users in A/B
experiments routed to one of the two models.

    python server/bench/interleave_cost.py --artifacts /tmp/ml100k-artifacts [--n 400]

In process, no gRPC. Known users only (the personalised tier, where interleaving happens). The
cases are interleaved per call so machine noise hits them alike; prints p50 per case in
microseconds and its ratio to the first variant's A/B route (the baseline), and the
interleaved p50 over the sum of both A/B p50s (what two rankings cost; the rest is the team
draft and the second list's Python work).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recsys_core import artifacts
from recsys_server import scoring, snapshot
from recsys_server.config import Experiment, Variant


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True, type=Path)
    ap.add_argument("--a", default="hybrid", help="first variant's model")
    ap.add_argument("--b", default="svd", help="second variant's model")
    ap.add_argument("--n", type=int, default=400, help="calls per case")
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    root = a.artifacts
    cases = {
        f"ab {a.a}": Experiment("e", (Variant("x", a.a, 1.0),)),
        f"ab {a.b}": Experiment("e", (Variant("x", a.b, 1.0),)),
        f"interleave {a.a}+{a.b}": Experiment(
            "e", (Variant("x", a.a, 0.5), Variant("y", a.b, 0.5)), kind="interleave"
        ),
    }
    snaps = {}
    for name, exp in cases.items():
        s = snapshot.build(root / artifacts.latest_version(root), (exp,), "hybrid")
        for c in s.caches.values():  # room for every user's stored ranking, as in a server
            c.keep = 10_000
        snaps[name] = s
    snap = next(iter(snaps.values()))
    rng = np.random.default_rng(0)
    counts = np.diff(snap.history.indptr)
    warm = np.flatnonzero(counts >= snap.cold_threshold)
    users = [str(snap.user_ids[u]) for u in rng.choice(warm, a.n)]
    print(f"{root}: {snap.n_items} items, {len(snap.user_ids)} users, k={a.k}, n={a.n}")
    times: dict[str, list[float]] = {c: [] for c in cases}
    for rounds in (0, 1):  # a warm-up pass, then the measured one
        for u in users:
            for name, exp in cases.items():
                q = scoring.Query(u, a.k)
                t0 = time.perf_counter()
                got = scoring.recommend(snaps[name], None, (exp,), q)
                dt = time.perf_counter() - t0
                if rounds:
                    times[name].append(dt)
                assert got.experiment == "e", got
    p50 = {name: float(np.median(ts)) for name, ts in times.items()}
    base = next(iter(p50.values()))
    for name, t in p50.items():
        print(f"{name:<32}{t * 1e6:>8.0f} us {t / base:>6.2f}x")
    both = sum(list(p50.values())[:2])
    inter = list(p50.values())[2]
    print(f"{'interleave / (ab a + ab b)':<32}{'':>11} {inter / both:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
