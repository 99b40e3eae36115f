"""Training time and peak memory of all five models (the trainer's CLI path, default config).

    python trainer/bench/train_time.py [--ml100k PATH/u.data] [--sizes 500k,5M] [--write-docs]

Each data set is trained in a fresh subprocess so its peak resident memory (ru_maxrss) is its
own. Targets (issue 3): ML-100k < 10 s, the default synthetic data (500k events) < 60 s, a 5M
synthetic set < 10 min with peak memory < 8 GB.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from recsys_trainer.models.registry import NAMES

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Training time (trainer/bench/train_time.py)"
MODELS = NAMES
SIZES = {"500k": (10_000, 5_000, 500_000), "5M": (100_000, 20_000, 5_000_000)}
TARGETS = {"ML-100k": (10, None), "500k": (60, None), "5M": (600, 8 * 1024)}

CHILD = r"""
import json, sys, time
from recsys_trainer import config, synthetic
from recsys_trainer.cli import build_models
from recsys_trainer.data import from_frame, load_interactions
spec = json.loads(sys.argv[1])
if spec["kind"] == "ml100k":
    inter = load_interactions(spec["path"])
else:
    df, _ = synthetic.generate(*spec["size"])
    inter = from_frame(df)
times = {}
t0 = time.perf_counter()
from recsys_trainer.models.registry import NAMES
for name, model in build_models(config.load(), NAMES).items():
    t = time.perf_counter()
    model.fit(inter)
    times[name] = time.perf_counter() - t
times["total"] = time.perf_counter() - t0
shape = {"rows": len(inter), "users": inter.n_users, "items": inter.n_items}
print(json.dumps({"times": times, **shape}))
"""


def run(spec: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, check=True
    )
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_mib"] = max(peak_kib, before) / 1024
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ml100k", help="MovieLens 100k u.data")
    ap.add_argument("--sizes", default="500k,5M", help="synthetic sizes: 500k, 5M")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    specs = []
    if a.ml100k and Path(a.ml100k).exists():
        specs.append(("ML-100k", {"kind": "ml100k", "path": a.ml100k}))
    elif a.ml100k:
        print(f"skipping ML-100k: {a.ml100k} does not exist")
    for s in filter(None, a.sizes.split(",")):
        specs.append((s, {"kind": "synthetic", "size": SIZES[s]}))
    rows = []
    for name, spec in specs:
        print(f"training all five on {name} ...", flush=True)
        r = run(spec)
        limit_s, limit_mib = TARGETS[name]
        ok = r["times"]["total"] < limit_s and (limit_mib is None or r["peak_mib"] < limit_mib)
        rows.append((name, r, limit_s, limit_mib, ok))
        t = r["times"]
        print(
            f"  {name}: {r['rows']:,} events, {r['users']:,} users x {r['items']:,} items; "
            + ", ".join(f"{m} {v:.1f} s" for m, v in t.items())
            + f"; peak RSS {r['peak_mib']:,.0f} MiB; target < {limit_s} s"
            + (f" and < {limit_mib:,} MiB" if limit_mib else "")
            + (": PASS" if ok else ": FAIL"),
            flush=True,
        )
    if a.write_docs:
        write_docs(rows, " ".join(["python", *sys.argv]))
    return 0 if all(r[4] for r in rows) else 1


def write_docs(rows, command: str) -> None:
    lines = [
        SECTION,
        "",
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or 'x86_64'},"
        " 2 cores. Default configuration; the hybrid's time is its weight tuning (it refits its"
        " four components on a validation split), the components' own fits are listed apart.",
        "",
        "| data | events | " + " | ".join(MODELS) + " | total | peak RSS | target | result |",
        "|---|---:|" + "---:|" * (len(MODELS) + 2) + "---|---|",
    ]
    for name, r, limit_s, limit_mib, ok in rows:
        t = r["times"]
        target = f"< {limit_s} s" + (f", < {limit_mib // 1024} GB" if limit_mib else "")
        lines.append(
            f"| {name} | {r['rows']:,} | "
            + " | ".join(f"{t[m]:.1f} s" for m in (*MODELS, "total"))
            + f" | {r['peak_mib']:,.0f} MiB | {target} | {'PASS' if ok else 'FAIL'} |"
        )
    text = DOCS.read_text()
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        text = head + "\n".join(lines) + "\n" + (rest[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    DOCS.write_text(text)
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    sys.exit(main())
