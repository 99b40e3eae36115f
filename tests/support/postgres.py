"""A throwaway PostgreSQL server for tests and benchmarks.

Debian's server binaries (installed by ``.ci/system-deps``), ``initdb`` in a fresh temporary
directory, listening on a free loopback TCP port (its unix socket in that directory too), with
``fsync=on`` like a real deployment. The tests reach it through the root ``conftest.py``
fixtures ``postgres_server`` and ``postgres_dsn``; a script uses it directly::

    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.postgres import PostgresServer

    with PostgresServer.started() as server:
        dsn = server.create_database()
        ...

PostgreSQL refuses to run as root: when this process is root, initdb and the server run as the
``postgres`` user (or ``nobody``), which then owns the temporary directory. The server is this
process's child and gets SIGKILL if this process dies (setpriv --pdeathsig), so a killed test
run leaves no server behind (its temporary directory stays).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SUPERUSER = "recsys"
INSTALL_HINT = "run .ci/system-deps (installs Debian's postgresql)"
# pg_ctl's shutdown modes, as the signals it sends the postmaster.
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
# Its one worker thread is idle until interpreter exit (see _spawn).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-spawner")


class PostgresUnavailable(RuntimeError):
    """The server cannot be found, initialised or started; the message says what to do."""


def find_bindir() -> Path:
    """The directory holding initdb and postgres: $RECSYS_PG_BINDIR, else ``pg_config
    --bindir``, else the newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    if os.environ.get("RECSYS_PG_BINDIR"):
        candidates.append(Path(os.environ["RECSYS_PG_BINDIR"]))
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        versioned = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(versioned, key=lambda p: _version_key(p.parent.name), reverse=True)
    for d in candidates:
        if all(os.access(d / b, os.X_OK) for b in ("initdb", "postgres", "pg_isready")):
            return d
    looked = ", ".join(map(str, candidates)) or "pg_config --bindir, /usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, postgres) not found (looked in {looked}): "
        f"{INSTALL_HINT}"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One initdb'd data directory and the postmaster serving it (started, stopped and
    restarted at will; the port and the data survive a restart)."""

    def __init__(self, bindir: Path | None = None, parent_dir: str | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="recsys-pg-", dir=parent_dir))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: int | None = None
        self._group: int | None = None
        try:
            if os.geteuid() == 0:
                self._run_as_unprivileged()
            self._initdb()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def started(cls, **kwargs: object) -> Iterator[PostgresServer]:
        """A started server, stopped and removed on exit (also at interpreter exit)."""
        server = cls(**kwargs)  # type: ignore[arg-type]
        atexit.register(server.destroy)
        try:
            server.start()
            yield server
        finally:
            server.destroy()
            atexit.unregister(server.destroy)

    def start(self, timeout: float = 30.0) -> None:
        """Starts the postmaster and waits until it accepts connections. Raises
        PostgresUnavailable with the server log's tail when it does not."""
        if self.running:
            return
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except PostgresUnavailable:
                # Another process took the free port between _free_port and bind: new port.
                if attempt < 2 and "could not bind" in self.log_tail() and not self.running:
                    self.port = _free_port()
                    continue
                self.stop("immediate")
                raise

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shuts the server down like ``pg_ctl stop -m MODE``: "fast" rolls back open
        transactions and closes every connection, "immediate" kills it (crash recovery on the
        next start), "smart" waits for the clients to disconnect."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(STOP_SIGNALS[mode])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def destroy(self) -> None:
        """Stops the server (immediate: its data is thrown away) and removes the directory.
        Idempotent."""
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- clients -----------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL over TCP with the superuser's password (the server asks for it)."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Creates an empty database and returns its URL."""
        name = name or f"t_{secrets.token_hex(6)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        # FORCE: a pool the test left open must not keep the database alive.
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- internals ---------------------------------------------------------------------------

    def _run_as_unprivileged(self) -> None:
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            self._user, self._group = entry.pw_uid, entry.pw_gid
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            return
        raise PostgresUnavailable("running as root and neither user postgres nor nobody exists")

    def _command(self, cmd: list[str], pdeathsig: bool = False) -> tuple[list[str], dict]:
        """``cmd`` and the Popen arguments that run it in the directory, as the unprivileged
        user when this process is root (and, with ``pdeathsig``, killed when it dies).

        With setpriv the user switch happens in setpriv, after exec: Popen without user/group
        arguments forks with vfork, which runs no pthread_atfork handlers. Switching in Popen
        (user=, group=) needs a plain fork, and grpc's atfork handlers start threads in the
        child: with gRPC channels open in this process (the fault tests), the child crashed
        with SIGSEGV before it could exec postgres (a restart failing, "exited with -11")."""
        setpriv = shutil.which("setpriv")
        args: dict[str, object] = {"cwd": self.dir}
        if setpriv is None:
            if self._user is not None:
                args.update(user=self._user, group=self._group, extra_groups=[])
            return cmd, args
        prefix = [setpriv]
        if pdeathsig:
            prefix += ["--pdeathsig", "KILL"]  # kept across the user switch (setpriv sets it last)
        if self._user is not None:
            prefix += ["--reuid", str(self._user), "--regid", str(self._group), "--clear-groups"]
        return ([*prefix, "--", *cmd] if len(prefix) > 1 else cmd), args

    def _initdb(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._user is not None:
            os.chown(pwfile, self._user, self._group or -1)
        cmd = [
            str(self.bindir / "initdb"),
            f"--pgdata={self.data}",
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            # The unix socket trusts this machine's users; TCP asks for the password, as a
            # deployment would.
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            # initdb's own fsync of a throwaway directory buys nothing; the server runs fsync=on.
            "--no-sync",
            "--no-instructions",
        ]
        cmd, args = self._command(cmd)
        out = subprocess.run(cmd, capture_output=True, text=True, **args)  # type: ignore[call-overload]
        pwfile.unlink()
        if out.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed (exit {out.returncode}) in {self.data}:\n{out.stdout}{out.stderr}"
            )

    def _spawn(self) -> None:
        cmd = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.dir}",
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "max_connections=100",
        ]
        cmd, args = self._command(cmd, pdeathsig=True)
        with open(self.log_path, "ab") as log:
            # The parent-death signal follows the *thread* that forked: spawn from one thread
            # that lives as long as this process, not from a caller's short-lived worker
            # thread (asyncio.to_thread), whose exit would kill the server.
            self.proc = _SPAWNER.submit(
                subprocess.Popen,  # type: ignore[arg-type]
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **args,
            ).result()

    def _wait_ready(self, timeout: float) -> None:
        isready = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise PostgresUnavailable(
                    f"PostgreSQL ({self.bindir}) exited with {code} while starting; "
                    f"server log {self.log_path}:\n{self.log_tail()}"
                )
            if subprocess.run([*isready, "-t", "1"], capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        raise PostgresUnavailable(
            f"PostgreSQL did not accept connections within {timeout:.0f} s on port {self.port}; "
            f"server log {self.log_path}:\n{self.log_tail()}"
        )

    def _admin(self, sql: str) -> None:
        import psycopg  # a recsys-core dependency; imported late so find_bindir works without

        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
