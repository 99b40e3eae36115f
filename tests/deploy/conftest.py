"""tests/deploy: the Kubernetes manifests, the abi3 wheel on a second Python, the image.

The image test (marker ``image``) builds the container image: minutes of compiling and
downloads from PyPI and Debian's mirror, so it runs only when asked for with ``-m image``
(``bash .ci/image``); otherwise it is deselected, not skipped."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server" / "tests"))

from srv_support import trained  # noqa: E402, F401 (fixture)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "image: builds the container image (deploy/docker/build.sh); run with -m image"
    )


def pytest_collection_modifyitems(config, items):
    if "image" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("image") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
