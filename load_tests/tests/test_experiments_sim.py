"""The experiment simulation's machinery: a --quick run prints every check with its target and
verdict, the naive test's A/A false positives exceed the sequential test's, and --out rewrites
only its marked section (numbers are measured by the full run, never asserted on speed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "load_tests" / "experiments_sim.py"
START, END = "<!-- experiments_sim: start -->", "<!-- experiments_sim: end -->"


def test_quick_run_reports_every_check(tmp_path: Path) -> None:
    doc = tmp_path / "experiments.md"
    doc.write_text(f"# Experiments\n\n## Other\n\nkept\n\n{START}\nstale line\n{END}\n\n## After\n")
    cmd = [sys.executable, str(SIM), "--quick", "--out", str(doc)]
    for _ in range(2):  # twice: the section is replaced, not appended
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    checks = [line for line in out.splitlines() if re.search(r"\(target .*\) (PASS|MISS)", line)]
    assert [c.split(",")[0].split(":")[0] for c in checks] == [
        "power",
        "A/A false positives",
        "SRM",
        "SRM",
        "interleaving vs A/B",
    ]
    aa = re.search(r"sequential: (\d+)/(\d+) = .*read the same way: ([\d.]+)%", out)
    assert aa, out
    sequential = int(aa[1]) / int(aa[2])
    naive = float(aa[3]) / 100
    assert naive > sequential
    power = re.search(
        r"always-valid at the final look: (\d+)/(\d+).*fixed-horizon test: (\d+)%", out
    )
    assert power, out
    # At the always-valid MDE's size the fixed-horizon test (narrower) detects at least as often.
    assert int(power[3]) >= 100 * int(power[1]) // int(power[2])
    text = doc.read_text()
    assert text.count(START) == text.count(END) == 1
    assert "stale line" not in text and "kept" in text and text.rstrip().endswith("## After")
    section = text.split(START)[1].split(END)[0]
    assert "experiments_sim.py --quick --out" in section
    assert section.count("PASS") + section.count("MISS") == len(checks)
