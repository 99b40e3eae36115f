"""Hypothesis profiles and the PostgreSQL fixtures for every test directory.

``bash .ci/test`` (and so CI) runs the ``ci`` profile: derandomised, so a run explores the same
examples every time and a failure reproduces from the clean clone. Plain ``pytest`` runs
``explore``: fresh random examples on each run, remembered in the local ``.hypothesis/``
database (gitignored). A failure found while exploring becomes an ``@example`` or a regression
test with its exact input, never only a database entry. Choose with HYPOTHESIS_PROFILE.

``postgres_server`` (session) is a real PostgreSQL server started on first use in a fresh
temporary directory (tests/support/postgres.py); ``postgres_dsn`` is the URL of a fresh empty
database on it, dropped after the test. When the server cannot be found or started, the tests
that need it fail with the reason (never skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support.postgres import PostgresServer, PostgresUnavailable

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "explore")
settings.load_profile(PROFILE)


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (HYPOTHESIS_PROFILE; see conftest.py)"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server. A test may stop and restart it (``stop``/``start``);
    ``postgres_dsn`` starts it again if a test left it stopped."""
    try:
        server = PostgresServer()  # finds the binaries and runs initdb
    except PostgresUnavailable as e:
        pytest.fail(f"PostgreSQL is needed by this test: {e}", pytrace=False)
    try:
        try:
            server.start()
        except PostgresUnavailable as e:
            pytest.fail(f"PostgreSQL is needed by this test: {e}", pytrace=False)
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh empty database (with the password), dropped after the test."""
    postgres_server.start()  # no-op unless an earlier test left it stopped
    dsn = postgres_server.create_database()
    yield dsn
    postgres_server.start()
    postgres_server.drop_database(dsn.rsplit("/", 1)[1])
