"""The Rust extension is one abi3 wheel (PyO3's abi3-py311): built here with maturin for this
interpreter, it installs and works on a second CPython >= 3.11 as well.

The second interpreter is looked for as python3.N on PATH and under pyenv's versions
($PYENV_ROOT, default ~/.pyenv); the newest one whose minor version differs from this
interpreter's is used. Where there is none the test is skipped with that reason: Debian 12
ships only python3.11 (no python3.12 or python3.13 package in bookworm), and building another
(pyenv install) downloads CPython's sources from python.org. Its numpy and scipy come from
PyPI, at the versions .ci/requirements-dev.txt pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / ".ci" / "requirements-dev.txt"

# Runs in the second interpreter's venv, outside the repository: what it imports is the wheel.
CHECK = """
import json, sys
import numpy as np
import recsys_core, recsys_core._native as native
r = recsys_core.DenseScorer(np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)).recommend(
    np.array([1.0, 0.5], dtype=np.float32), k=2)
b = recsys_core.select_topk(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), 2)
print(json.dumps({
    "version": list(sys.version_info[:2]),
    "package": recsys_core.__file__,
    "native": native.__file__,
    "dense": [r.items.tolist(), r.scores.tolist()],
    "select": [b.items.tolist(), b.scores.tolist()],
}))
"""


def version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [
                python,
                "-c",
                "import sys, venv, ensurepip; "
                "print(sys.implementation.name, *sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 3 or parts[0] != "cpython":
        return None
    return int(parts[1]), int(parts[2])


def candidates() -> list[str]:
    found = []
    for minor in range(11, 20):
        if path := shutil.which(f"python3.{minor}"):
            found.append(path)
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        found += [str(p) for p in sorted(pyenv.glob("3.*/bin/python3")) if p.is_file()]
    return found


def second_python() -> tuple[str, tuple[int, int]] | None:
    ours = sys.version_info[:2]
    best: tuple[str, tuple[int, int]] | None = None
    for path in candidates():
        version = version_of(path)
        if version is None or version < (3, 11) or version == ours:
            continue
        if best is None or version > best[1]:
            best = (path, version)
    return best


def pins(*names: str) -> list[str]:
    text = REQS.read_text()
    out = []
    for name in names:
        m = re.search(rf"^{re.escape(name)}==\S+$", text, re.M | re.I)
        assert m, f"{name} is not pinned in {REQS}"
        out.append(m.group(0))
    return out


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (the test run's points at the checkout, which would shadow the wheel)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_the_abi3_wheel_installs_and_works_on_a_second_python(tmp_path):
    second = second_python()
    if second is None:
        pytest.skip(
            f"no second CPython >= 3.11 besides this {sys.version_info[0]}.{sys.version_info[1]} "
            f"(looked for python3.N on PATH and under pyenv's versions): Debian 12 packages only "
            f"python3.11, and building another downloads its sources from python.org"
        )
    python, version = second
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent)) or shutil.which(
        "maturin"
    )
    assert maturin, "maturin is not installed (it is pinned in .ci/requirements-dev.txt)"
    dist = tmp_path / "dist"
    build = subprocess.run(
        [maturin, "build", "--release", "--interpreter", sys.executable, "-o", str(dist)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={**clean_env(), "PYO3_PYTHON": sys.executable},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("recsys_core-*.whl")
    # One wheel for every CPython from 3.11 on: tagged cp311-abi3, holding _native.abi3.so.
    assert "-cp311-abi3-" in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if "_native" in n] == ["recsys_core/_native.abi3.so"]

    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    for args in (["--no-deps", str(wheel)], pins("numpy", "scipy")):
        out = subprocess.run(
            [*pip, *args], capture_output=True, text=True, timeout=900, check=False,
            env=clean_env(),
        )  # fmt: skip
        assert out.returncode == 0, f"pip install {args} on {python}: {out.stderr[-2000:]}"
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean_env(),
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert tuple(got["version"]) == version != sys.version_info[:2]
    assert got["package"].startswith(str(venv)), got["package"]
    assert got["native"].endswith("_native.abi3.so"), got["native"]
    assert got["dense"] == [[2, 0], [1.5, 1.0]]
    assert got["select"] == [[1, 2], [0.8999999761581421, 0.5]]
