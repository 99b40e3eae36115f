"""What the live catalogue's deny list costs a request: the request path (`scoring.recommend`
and `scoring.similar`) per model with no unavailable item, and with 1% and 10% of the items
unavailable.

    python server/bench/deny_cost.py --artifacts /tmp/ml100k-artifacts [--n 400]

In process, no gRPC (the deny list adds nothing to the transport). Cases are interleaved per
call so machine noise hits them alike; prints p50 per case in microseconds and the ratio to
the no-deny baseline of the same model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recsys_core import artifacts
from recsys_core.datastore import ItemRecord
from recsys_server import scoring, snapshot
from recsys_server.catalogue import Catalogue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True, type=Path)
    ap.add_argument("--n", type=int, default=400, help="calls per case")
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    root = a.artifacts

    def load() -> snapshot.Snapshot:
        s = snapshot.build(root / artifacts.latest_version(root), (), "hybrid")
        for c in s.caches.values():  # room for every user's stored ranking, as in a server
            c.keep = 10_000
        return s

    snap = load()
    rng = np.random.default_rng(0)
    # The most popular items: the ones a deny list actually removes from answers.
    pop = np.argsort(-np.diff(snap.history.tocsc().indptr))
    # One version per case, as one server has one catalogue: a hybrid route keeps each
    # user's stored ranking filtered by the current deny list.
    snaps = {"none": snap}
    cases = {"none": Catalogue()}
    for share in (0.01, 0.10):
        n = max(1, int(share * snap.n_items))
        snaps[f"{share:.0%}"] = load()
        cases[f"{share:.0%}"] = Catalogue(
            ItemRecord(snap.item_ids[i], None, available=False) for i in pop[:n]
        )
    users = [str(u) for u in rng.choice(snap.user_ids, a.n)]
    print(f"{root}: {snap.n_items} items, {len(snap.user_ids)} users, k={a.k}, n={a.n}")
    print(f"{'call':<22}" + "".join(f"{c:>16}" for c in cases))
    for model in [*sorted(snap.models), "similar:item_cf", "similar:svd"]:
        times: dict[str, list[float]] = {c: [] for c in cases}

        def call(u: str, name: str, model: str = model) -> None:
            s, cat = snaps[name], cases[name]
            if model.startswith("similar:"):
                item = s.item_ids[int(s.user_index[u]) % s.n_items]
                scoring.similar(s, item, a.k, model.split(":")[1], cat)
            else:
                scoring.recommend(s, None, (), scoring.Query(u, a.k, model), cat)

        for u in users:  # warm-up: a hybrid route's stored rankings are made on first use
            for name in cases:
                call(u, name)
        for u in users:
            for name in cases:
                t0 = time.perf_counter()
                call(u, name)
                times[name].append(time.perf_counter() - t0)
        base = float(np.median(times["none"]))
        cells = []
        for name in cases:
            p50 = float(np.median(times[name]))
            cells.append(f"{p50 * 1e6:8.0f} us {p50 / base:4.2f}x")
        print(f"{model:<22}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
