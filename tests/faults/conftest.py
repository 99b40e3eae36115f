"""The fault suite (tests/faults): each scenario drives a real `recsys-serve` process.

Short form (default, CI): ``pytest tests/faults``. Long form: ``RECSYS_FAULTS_LONG=1 pytest
tests/faults`` (longer storms and fuzzing; see docs/reliability.md)."""

from __future__ import annotations

import shutil

import pytest
from fsupport import ROOT  # noqa: F401 (puts server/tests on sys.path)
from srv_support import trained  # noqa: F401 (fixture)


@pytest.fixture
def artifacts_root(trained, tmp_path):  # noqa: F811
    dst = tmp_path / "artifacts"
    shutil.copytree(trained, dst)
    return dst
