"""The throwaway PostgreSQL server the data store's tests run against (postgres.py)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.support.postgres import PostgresServer, PostgresUnavailable


def test_missing_binaries_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresUnavailable, match=r"not found .*run \.ci/system-deps"):
        PostgresServer()


def test_a_stopped_server_restarts_on_its_port_with_its_data(postgres_server, postgres_dsn):
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
    port = postgres_server.port
    postgres_server.stop("immediate")
    assert not postgres_server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_dsn, connect_timeout=2)
    postgres_server.start()
    assert postgres_server.port == port
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_the_password_is_required_over_tcp(postgres_server, postgres_dsn):
    wrong = postgres_dsn.replace(postgres_server.password, "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_a_failed_start_reports_the_server_log():
    server = PostgresServer()
    try:
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write("no_such_setting = 1\n")
        with pytest.raises(PostgresUnavailable, match="no_such_setting") as info:
            server.start(timeout=20)
        assert "server log" in str(info.value)
        assert not server.running
    finally:
        server.destroy()
    assert not server.dir.exists()


def test_a_server_started_from_a_worker_thread_outlives_it(postgres_server, postgres_dsn):
    # The store's fault tests restart the server from asyncio.to_thread; the executor's threads
    # end with asyncio.run, and the server must not end with them.
    async def restart() -> None:
        await asyncio.to_thread(postgres_server.stop, "fast")
        await asyncio.to_thread(postgres_server.start)

    asyncio.run(restart())
    assert postgres_server.running
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
