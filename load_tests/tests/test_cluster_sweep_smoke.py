"""Smoke test of load_tests/cluster_sweep.py: one short run over the real local cluster (1 then
2 replicas behind nginx, then a SIGKILL under a retrying load) reports both capacities, their
ratio and the kill, with no call failing after retries."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Never import locust here (see test_load_smoke.py): it monkey-patches the whole process.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "load_tests" / "cluster_sweep.py"
LOOSE_MS = "10000"  # the harness is under test, not the machine's speed


def test_one_run_sweeps_one_then_two_replicas_and_kills_one(tmp_path: Path) -> None:
    train = [sys.executable, "-m", "recsys_trainer.cli"]
    data = tmp_path / "data.tsv"
    gen = ["generate", "--users", "600", "--items", "300", "--interactions", "15000"]
    subprocess.run([*train, *gen, "--out", str(data)], check=True, capture_output=True)
    art = tmp_path / "artifacts"
    subprocess.run(
        [*train, "train", "--interactions", str(data), "--out", str(art), "--no-tune"],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "cluster.md"
    args = ["--artifacts", str(art), "--out", str(out), "--budget-ms", LOOSE_MS]
    args += ["--start", "50", "--step", "50", "--max-rate", "100", "--step-duration", "8s"]
    args += ["--warmup", "0", "--kill-duration", "10s", "--kill-at", "3s"]
    p = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    text = out.read_text()
    assert "- **1 replica: 100 calls/s**" in text
    assert "- **2 replicas: 100 calls/s**" in text
    assert "Ratio 2 : 1 replica = 1.00x" in text
    assert re.search(r"\*\*Failed calls after retries: 0\*\* of [1-9]\d*\.", text), text
    assert "SIGKILL of one replica under 100 calls/s" in text


def test_the_section_replaces_only_its_own(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "load_tests"))
    import cluster_sweep  # imports run.py, never locust

    doc = tmp_path / "load-test.md"
    doc.write_text("# Load test\n\nsweep.py's report\n")
    cluster_sweep.write_section(doc, "## Local cluster: first\n")
    assert doc.read_text() == "# Load test\n\nsweep.py's report\n\n## Local cluster: first\n"
    cluster_sweep.write_section(doc, "## Local cluster: second\n")
    assert doc.read_text() == "# Load test\n\nsweep.py's report\n\n## Local cluster: second\n"
    fresh = tmp_path / "new.md"
    cluster_sweep.write_section(fresh, "## Local cluster: only\n")
    assert fresh.read_text() == "## Local cluster: only\n"
