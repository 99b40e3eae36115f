"""Hypothesis profiles for every test directory.

``bash .ci/test`` (and so CI) runs the ``ci`` profile: derandomised, so a run explores the same
examples every time and a failure reproduces from the clean clone. Plain ``pytest`` runs
``explore``: fresh random examples on each run, remembered in the local ``.hypothesis/``
database (gitignored). A failure found while exploring becomes an ``@example`` or a regression
test with its exact input, never only a database entry. Choose with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "explore")
settings.load_profile(PROFILE)


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (HYPOTHESIS_PROFILE; see conftest.py)"
