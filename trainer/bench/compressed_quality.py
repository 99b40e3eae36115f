"""SVD quality with compressed scoring forced on vs exact, on the shared data sets.

    python trainer/bench/compressed_quality.py [--ml100k PATH/u.data]
        [--steam PATH/steam-200k-play.csv] [--write-docs]

The protocol of trainer/bench/quality.py (users with >= 5 interactions, a seeded per-user
80/20 holdout, top 10 with training items excluded, binary gains), with SVD's default
configuration fitted twice, ``scoring="exact"`` and ``scoring="compressed"``: the same seed
gives the same factors (checked), so the NDCG@10 difference is the scoring's alone. Issue 20
asks it to stay within 0.002. The default synthetic set is always included.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

TRAINER = Path(__file__).resolve().parents[1]
REPO = TRAINER.parent
if str(TRAINER) not in sys.path:
    sys.path.insert(0, str(TRAINER))

from quality import MIN_USER, TEST_SEED, add_shared_set_args, shared_sets  # noqa: E402

from recsys_core.models import SVD, SVDConfig  # noqa: E402
from recsys_core.splits import random_holdout  # noqa: E402
from recsys_trainer.evaluate import accuracy  # noqa: E402

SECTION = "## Compressed scoring: quality on the shared data sets"


def run(title: str, inter) -> tuple[str, float, float, bool, float]:
    train, test = random_holdout(inter, 0.2, seed=TEST_SEED)
    out = {}
    for scoring in ("exact", "compressed"):
        t = time.perf_counter()
        m = SVD(SVDConfig(scoring=scoring)).fit(train)
        out[scoring] = (m, accuracy(m, train, test, 10)["ndcg@10"], time.perf_counter() - t)
    same = np.array_equal(out["exact"][0].item_factors_, out["compressed"][0].item_factors_)
    build = out["compressed"][0].info()["index"]["build_seconds"]
    return title, out["exact"][1], out["compressed"][1], same, build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_set_args(ap)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    sets = shared_sets(a)
    rows = [run(d.title, d.inter) for d in sets]
    lines = [
        SECTION,
        "",
        "`python trainer/bench/compressed_quality.py`: SVD's defaults fitted with "
        '`scoring="exact"` and with `scoring="compressed"` (same seed, same factors), users '
        f"with >= {MIN_USER} interactions, 80/20 holdout (seed {TEST_SEED}), NDCG@10. "
        "Target: within 0.002.",
        "",
        "| data set | exact | compressed | difference | same factors | index build s |",
        "|---|---:|---:|---:|:---:|---:|",
    ]
    ok = True
    for title, e, c, same, build in rows:
        ok &= abs(c - e) <= 0.002 and same
        lines.append(
            f"| {title} | {e:.4f} | {c:.4f} | {c - e:+.4f} | {'yes' if same else 'NO'} | "
            f"{build:.3f} |"
        )
    print("\n".join(lines))
    if a.write_docs:
        sys.path.insert(0, str(REPO))
        from tests.support.markdown import replace_section

        doc = REPO / "docs" / "benchmarks.md"
        doc.write_text(replace_section(doc.read_text(), SECTION, lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
