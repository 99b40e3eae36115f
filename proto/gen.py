"""Regenerates the Python code for proto/recsys_proto/**/*.proto into proto/python/recsys_proto.

    python proto/gen.py          # write the generated files
    python proto/gen.py --check  # exit 1 if the committed files differ from a fresh generation

The generated files are committed and must not be edited by hand. They are the distribution
`recsys-proto` (proto/pyproject.toml), which the client SDK and the server depend on; it installs
without grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "proto"
OUT = SRC / "python"
PACKAGE = "recsys_proto"


def generate(out: Path) -> list[Path]:
    protos = sorted((SRC / PACKAGE).rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p.relative_to(SRC)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for d in [out / PACKAGE, *(p for p in (out / PACKAGE).rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return sorted(p for p in (out / PACKAGE).rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    a = ap.parse_args()
    if not a.check:
        for f in generate(OUT):
            print(f.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.relative_to(tmp) for p in generate(Path(tmp))}
        committed = {
            p.relative_to(OUT)
            for p in (OUT / PACKAGE).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        stale = sorted(
            str(p)
            for p in fresh | committed
            if p not in fresh
            or p not in committed
            or not filecmp.cmp(Path(tmp) / p, OUT / p, shallow=False)
        )
    if stale:
        print("generated code is stale; run `python proto/gen.py`:", *stale, sep="\n  ")
        return 1
    print(f"generated code up to date ({len(fresh)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
