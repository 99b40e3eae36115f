"""In-process cost of turning a Recommend answer into response bytes: the protobuf message
built item by item and serialised (``answer_pb(a).SerializeToString()``, the baseline) against
the bytes written directly (``answer_bytes(a)``, `recsys_server.wire`).

    python server/bench/response_cost.py --artifacts /work/art/artifacts [--n 5000 --rounds 6]

Answers: the latest version's hybrid, k=10 with explanations, for known users drawn Zipf(1.1)
(as the load test draws them), ranked once up front. Rounds alternate the two ways over the
same answers; both must give the same bytes. Prints us per answer and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from recsys_core.artifacts import latest_version
from recsys_server import scoring, snapshot
from recsys_server.service import answer_bytes, answer_pb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    root = Path(a.artifacts)
    snap = snapshot.build(root / str(latest_version(root)), (), "hybrid")
    rng = np.random.default_rng(7)
    ids = [str(x) for x in rng.permutation(snap.user_ids)]
    w = 1.0 / np.arange(1, len(ids) + 1) ** 1.1
    drawn = np.searchsorted(np.cumsum(w) / w.sum(), rng.random(a.n), side="right")
    answers = []
    for i in drawn.tolist():
        q = scoring.Query(ids[min(i, len(ids) - 1)], 10, explain=True)
        answers.append(scoring.recommend(snap, None, (), q))
        answers[-1].recommendation_id = "0" * 32
    assert all(answer_bytes(x) == answer_pb(x).SerializeToString() for x in answers)
    size = sum(len(answer_bytes(x)) for x in answers) / len(answers)
    ways = {
        "message + SerializeToString": lambda x: answer_pb(x).SerializeToString(),
        "wire (bytes directly)": answer_bytes,
    }
    took: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(a.rounds):
        for name in ways if r % 2 == 0 else reversed(ways):
            f = ways[name]
            t = time.perf_counter()
            for x in answers:
                f(x)
            took[name].append((time.perf_counter() - t) / len(answers) * 1e6)
    print(f"{len(answers)} answers, {size:.0f} bytes each on average, {a.rounds} rounds")
    med = {k: statistics.median(v) for k, v in took.items()}
    for k, v in med.items():
        print(f"{k:30s} {v:7.1f} us per answer (median of rounds)")
    base, new = med["message + SerializeToString"], med["wire (bytes directly)"]
    print(f"wire / baseline = {new / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
