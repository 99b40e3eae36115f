"""Training time and peak memory of ``recsys-train train`` as a user runs it: no flags, so
self-tuning, the holdout evaluation and the final fit of every model are all included.

    python trainer/bench/train_time.py [--ml100k PATH/u.data] [--steam PATH/steam-200k-play.csv]
        [--sizes 500k,5M] [--write-docs]

Each data set is trained by the CLI in a fresh subprocess (``python -m recsys_trainer.cli
train``) so its peak resident memory (ru_maxrss) is its own; the synthetic sets are written
to a temporary directory first (not timed). The tuner's own time per model is read back from
the manifest. Targets (issue 12): ML-100k and the Steam log <= 60 s each, the default
synthetic data (500k events) <= 120 s, a 5M synthetic set <= 600 s with peak memory < 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(REPO))
from tests.support.markdown import replace_section  # noqa: E402

SECTION = "## Training time (trainer/bench/train_time.py)"
SIZES = {"500k": (10_000, 5_000, 500_000), "5M": (100_000, 20_000, 5_000_000)}
TARGETS = {"ML-100k": (60, None), "Steam": (60, None), "500k": (120, None), "5M": (600, 8 * 1024)}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsys_trainer.cli", *args]


def train(data: Path, out: Path) -> dict:
    """Runs ``recsys-train train`` on ``data``; wall time, peak RSS and the manifest."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(
        cli("train", "--interactions", str(data), "--out", str(out)),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    version = (out / "latest").read_text().strip()
    manifest = json.loads((out / version / "manifest.json").read_text())
    return {"seconds": seconds, "peak_mib": max(peak_kib, before) / 1024, "manifest": manifest}


def tuning_seconds(manifest: dict) -> float:
    models = manifest.get("models", {})
    records = [m.get("params", {}).get("tuning") or {} for m in models.values()]
    return sum(r.get("seconds", 0.0) for r in records)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ml100k", type=Path, help="MovieLens 100k u.data")
    ap.add_argument("--steam", type=Path, help="steam-200k-play.csv")
    ap.add_argument("--sizes", default="500k,5M", help="synthetic sizes: 500k, 5M")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        specs: list[tuple[str, Path]] = []
        for name, path in (("ML-100k", a.ml100k), ("Steam", a.steam)):
            if path is not None and path.exists():
                specs.append((name, path))
            elif path is not None:
                print(f"skipping {name}: {path} does not exist")
        for s in filter(None, a.sizes.split(",")):
            users, items, events = SIZES[s]
            data = Path(tmp, s, "interactions.tsv")
            subprocess.run(
                cli("generate", "--out", str(data), "--users", str(users), "--items", str(items),
                    "--interactions", str(events)),
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            specs.append((s, data))
        for name, data in specs:
            load = os.getloadavg()[0]
            print(f"recsys-train train on {name} ...", flush=True)
            r = train(data, Path(tmp, "out", name))
            limit_s, limit_mib = TARGETS[name]
            ok = r["seconds"] <= limit_s and (limit_mib is None or r["peak_mib"] < limit_mib)
            m = r["manifest"]
            shape = m.get("n_users", "?"), m.get("n_items", "?")
            rows.append((name, r, limit_s, limit_mib, ok, load))
            print(
                f"  {name}: {r['seconds']:.1f} s (tuning {tuning_seconds(m):.1f} s), peak RSS "
                f"{r['peak_mib']:,.0f} MiB, models {', '.join(m['models'])}, shape {shape}; "
                f"load average at start {load:.1f}; target <= {limit_s} s"
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
        " 2 cores. The whole `recsys-train train` command with no flags: self-tuning (default"
        " budget), the holdout evaluation of every model, and the final fit on all the data.",
        "",
        "| data | wall time | of it, tuning | models | peak RSS | load at start | target "
        "| result |",
        "|---|---:|---:|---|---:|---:|---|---|",
    ]
    for name, r, limit_s, limit_mib, ok, load in rows:
        target = f"<= {limit_s} s" + (f", < {limit_mib // 1024} GB" if limit_mib else "")
        m = r["manifest"]
        lines.append(
            f"| {name} | {r['seconds']:.1f} s | {tuning_seconds(m):.1f} s | "
            f"{', '.join(m['models'])} | {r['peak_mib']:,.0f} MiB | {load:.1f} | {target} | "
            f"{'PASS' if ok else 'FAIL'} |"
        )
    DOCS.write_text(replace_section(DOCS.read_text(), SECTION, lines))
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    sys.exit(main())
