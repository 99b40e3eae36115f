"""Smoke test of the load-test harness: a short real run passes, an impossible budget fails."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

# Never import locust here: importing it monkey-patches the whole process for gevent, which
# deadlocks every grpc server the other tests start in this pytest process.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "load_tests" / "run.py"
RPCS = ["Recommend", "SimilarItems", "RecordInteractions", "RecommendBatch"]
# The runs that must pass test the harness, not the machine's speed: a budget no working server
# misses, however busy the machine (latency is measured by the harness, never asserted here).
LOOSE_MS = "10000"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("load")
    train = [sys.executable, "-m", "recsys_trainer.cli"]
    subprocess.run(
        [
            *train,
            "generate",
            "--users",
            "2000",
            "--items",
            "1000",
            "--interactions",
            "60000",
            "--out",
            str(d / "data.tsv"),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *train,
            "train",
            "--interactions",
            str(d / "data.tsv"),
            "--catalog",
            str(d / "catalog.tsv"),
            "--out",
            str(d / "artifacts"),
            "--no-evaluate",
        ],
        check=True,
        capture_output=True,
    )
    return d / "artifacts"


def run(artifacts: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--artifacts",
            str(artifacts),
            "--out",
            str(out),
            "--users",
            "5",
            "--spawn-rate",
            "5",
            "--rps-per-user",
            "10",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_short_run_passes_and_reports_every_rpc(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "load-test.md"
    p = run(artifacts, out, "--duration", "15s", "--floor-duration", "8s", "--budget-ms", LOOSE_MS)
    assert p.returncode == 0, p.stdout + p.stderr
    text = out.read_text()
    assert "**Result: PASS**" in text
    for rpc in RPCS:
        assert f"| {rpc} |" in text, rpc
    assert "| health Check |" in text
    assert "| server |" in text and "| Locust |" in text


def test_impossible_budget_fails(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "load-test.md"
    p = run(artifacts, out, "--duration", "5s", "--floor-duration", "2s", "--budget-ms", "0.001")
    assert p.returncode == 1, p.stdout + p.stderr  # the budget check, not a broken run (2)
    assert "FAIL" in p.stdout
    assert "**Result: FAIL**" in out.read_text()


SWEEP = REPO / "load_tests" / "sweep.py"


def sweep(artifacts: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(SWEEP),
            "--artifacts",
            str(artifacts),
            "--out",
            str(out),
            "--step-duration",
            "8s",
            "--floor-duration",
            "8s",  # a shorter window on a loaded machine can end before a user's first call
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_sweep_reports_the_highest_rate_holding_the_budget(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep.md"
    p = sweep(
        artifacts, out, "--start", "20", "--step", "20", "--max-rate", "40",
        "--target-rate", "40", "--budget-ms", LOOSE_MS, "--target-ms", LOOSE_MS,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    text = out.read_text()
    assert "**Highest rate holding the budget: 40 calls/s**" in text
    assert f"**Recommend p99 stayed at or under {LOOSE_MS} ms at every step.**" in text
    assert "## Target step: 40 calls/s" in text and "Floor (grpc.health.v1 Check" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 20 |", "| 40 |"))]
    assert len(rows) == 2 and all(line.endswith("| ok |") for line in rows), rows


def test_sweep_with_an_impossible_budget_fails(artifacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep.md"
    # sections written by hand or by other scripts are kept, from the first of them on
    kept = "\n## Per-call cost: notes\n\nkept.\n\n## Replicas\n\nalso kept.\n"
    out.write_text("# an old sweep\n\nreplaced.\n" + kept)
    p = sweep(
        artifacts, out, "--start", "20", "--step", "20", "--max-rate", "100",
        "--target-rate", "20", "--budget-ms", "0.001",
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    text = out.read_text()
    assert "**No step held the budget**" in text
    # It stopped at the first step over the budget: a step's row starts with its rate (a bare
    # "| 40 |" can also be a call count in an RPC table).
    steps = [line for line in text.splitlines() if line.startswith(("| 20 |", "| 40 |"))]
    assert [line[:6] for line in steps] == ["| 20 |"], steps
    assert text.endswith(kept) and "replaced." not in text
