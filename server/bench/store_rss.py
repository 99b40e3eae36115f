"""Memory of a real `recsys-serve` against the volume of its data store (issue 17).

    python server/bench/store_rss.py [--artifacts ROOT] [--dir DIR] [--runs 3]
        [--store-pg URL|auto] [--write-docs]

The question: does the server's memory grow with what the store holds, or only with what it
replays? Two stores hold the same 10k events newer than the serving version's cursor
(``params.store_seq``), which the server replays into live histories at load:

* A: 990k older events (seq <= the cursor, already in the version's training) plus those 10k;
* B: those 10k alone.

Both are written through the datastore API (``append`` in big batches, ``synchronous=OFF``
while building). One model version serves both with the same cursor (990,000): store B's
sequence is started there before its 10k are appended (SQLite: its ``sqlite_sequence`` row;
PostgreSQL: the identity column restarted), so in both the newer events are seq 990,001 to
1,000,000 and the version, its files and its cursor are byte-identical across the runs. The
events reference the version's real users and items (uuid4-like hex ids, as the SDK makes
them), so every newer one is folded; among the newer ones a probe user who is in neither the
training data nor the older events has a few events, so a Recommend for it shows the replay.

For each store, several runs alternating A and B: start ``recsys-serve --artifacts …
--store URL``, wait for SERVING, check the replay (``recsys_interactions_since_training`` =
10,000 and the probe user's tier is not the popularity fallback), send the same request mix
(Recommend on every route, with and without explanations; SimilarItems), then read VmRSS and
VmHWM (peak) from /proc/PID/status; the median per store is reported. Startup time is from the
process start to SERVING. Without ``--artifacts`` a version is trained first on the default
synthetic data (``recsys-train generate``, then ``train --no-tune --no-evaluate``: model
quality does not matter here, and both stores serve the same version).

It also times opening each SQLite store (which runs ``PRAGMA quick_check``) in this process.
Target: RSS(A) - RSS(B) <= 50 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_core import artifacts
from recsys_core.datastore import open_store, parse_store_url, redact
from recsys_core.events import Event
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(REPO))
from tests.support.markdown import replace_section  # noqa: E402

SECTION = "## Server memory vs stored volume (server/bench/store_rss.py)"
TARGET_MIB = 50.0
PROBE_USER = "bench-live-probe"
PROBE_EVENTS = 5
NOBODY = "bench-nobody"
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
TYPE_P = (0.6, 0.25, 0.08, 0.04, 0.03)
CHUNK = 50_000  # events per append while building a store
LISTENING = re.compile(r"listening on (\S+) .*metrics (http://\S+/metrics)")
LOADED = re.compile(r"serving model version (\S+) .*after ([\d.]+) s; (\d+) live events replayed")


# -- the events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What goes in the two stores: ``old`` events with seq <= ``cursor`` (only in A), then
    ``new`` events with seq ``cursor``+1 .. ``cursor``+``new`` (in both)."""

    old: int = 990_000
    new: int = 10_000
    seed: int = 17

    @property
    def cursor(self) -> int:
        return self.old

    @property
    def total(self) -> int:
        return self.old + self.new


def make_events(
    n: int, users: Sequence[str], items: Sequence[str], seed: int, t0: float, *, probe: int = 0
) -> list[Event]:
    """``n`` events of random known users and items (deterministic for ``seed``); with
    ``probe`` > 0 the first ``probe`` of them, spread through the list, belong to
    `PROBE_USER`."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, len(users), n)
    it = rng.integers(0, len(items), n)
    kinds = rng.choice(len(EVENT_TYPES), n, p=TYPE_P)
    ratings = rng.integers(1, 6, n)
    ids = rng.integers(0, 2**63, (n, 2), dtype=np.int64)
    out = []
    for i in range(n):
        kind = EVENT_TYPES[kinds[i]]
        out.append(
            Event(
                f"{ids[i, 0]:016x}{ids[i, 1]:016x}",
                users[u[i]],
                items[it[i]],
                kind,
                t0 + i,
                float(ratings[i]) if kind == "rating" else None,
            )
        )
    step = max(n // max(probe, 1), 1)
    for j in range(min(probe, n)):
        e = out[j * step]
        out[j * step] = Event(e.event_id, PROBE_USER, e.item_id, "purchase", e.timestamp)
    return out


def event_chunks(plan: Plan, users, items, *, with_old: bool) -> Iterator[list[Event]]:
    """The store's events in append order, ``CHUNK`` at a time (never all in memory)."""
    if with_old:
        for k, start in enumerate(range(0, plan.old, CHUNK)):
            n = min(CHUNK, plan.old - start)
            yield make_events(n, users, items, plan.seed * 1000 + k, 1.6e9 + start)
    yield make_events(plan.new, users, items, plan.seed, 1.7e9, probe=PROBE_EVENTS)


# -- building the stores ---------------------------------------------------------------------


def start_sequence_at(url: str, seq: int) -> None:
    """Makes the next stored event of the (empty, migrated) store at ``url`` get ``seq``+1."""
    parsed = parse_store_url(url)
    if parsed.scheme == "sqlite":
        with contextlib.closing(sqlite3.connect(parsed.path)) as conn:
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (seq,))
            conn.commit()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE events ALTER COLUMN seq RESTART WITH {int(seq) + 1}")


async def fill(url: str, plan: Plan, users, items, *, with_old: bool) -> None:
    opts = {"synchronous": "OFF"} if url.startswith("sqlite") else {}
    store = await asyncio.to_thread(open_store, url, max_batch=CHUNK, **opts)
    try:
        if store.count():
            raise SystemExit(f"{redact(url)}: not empty")
        if not with_old:
            await asyncio.to_thread(start_sequence_at, url, plan.cursor)
        for chunk in event_chunks(plan, users, items, with_old=with_old):
            result = await store.append(chunk)
            if result.duplicates:
                raise SystemExit(f"{redact(url)}: {result.duplicates} duplicate ids generated")
        expected = plan.total if with_old else plan.new
        first_new = store.read_events(after_seq=plan.cursor, batch=1)
        if store.count() != expected or store.max_seq() != plan.total:
            raise SystemExit(f"{redact(url)}: {store.count()} events up to {store.max_seq()}")
        if next(first_new).seq != plan.cursor + 1:
            raise SystemExit(f"{redact(url)}: the newer events do not start after the cursor")
    finally:
        await store.close()


def store_ready(url: str, plan: Plan, *, with_old: bool) -> bool:
    """The store at ``url`` already holds what `fill` writes (a kept --dir)."""
    parsed = parse_store_url(url)
    if parsed.scheme == "sqlite" and not Path(parsed.path).is_file():
        return False
    with open_store(url) as store:
        expected = plan.total if with_old else plan.new
        return store.count() == expected and store.max_seq() == plan.total


def sqlite_bytes(url: str) -> int:
    path = Path(parse_store_url(url).path)
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def evict(path: str) -> None:
    """Drops one file's pages (and its WAL's) from the OS page cache: a cold read next."""
    for p in (path, f"{path}-wal"):
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def time_open(url: str, *, cold: bool) -> tuple[float, float]:
    """(seconds to open the SQLite store at ``url``, seconds of ``PRAGMA quick_check`` alone);
    ``cold``: the file evicted from the OS page cache before each."""
    path = parse_store_url(url).path
    if cold:
        evict(path)
    t0 = time.perf_counter()
    with open_store(url):
        opened = time.perf_counter() - t0
    if cold:
        evict(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        t0 = time.perf_counter()
        conn.execute("PRAGMA quick_check").fetchall()
        check = time.perf_counter() - t0
    return opened, check


# -- the model version -----------------------------------------------------------------------


def train(out: Path) -> Path:
    env = dict(os.environ)
    data = out / "data" / "interactions.tsv"
    cli = [sys.executable, "-m", "recsys_trainer.cli"]
    run = dict(check=True, stdout=subprocess.DEVNULL, env=env)
    subprocess.run([*cli, "generate", "--out", str(data)], **run)
    root = out / "trained"
    subprocess.run(
        [*cli, "train", "--interactions", str(data), "--out", str(root), "--no-tune",
         "--no-evaluate"], **run,
    )  # fmt: skip
    return root


def publish_with_cursor(source: Path, out: Path, cursor: int) -> tuple[Path, list[str], list[str]]:
    """The latest version of ``source`` published again under ``out`` with
    ``params.store_seq`` = ``cursor``; returns (``out``, its user ids, its item ids)."""
    name = artifacts.latest_version(source)
    if name is None:
        raise SystemExit(f"no model version in {source}")
    loaded = artifacts.load_version(source / name)
    users = [str(u) for u in loaded.user_ids.tolist()]
    items = [str(i) for i in loaded.item_ids.tolist()]
    current = artifacts.latest_version(out) if out.is_dir() else None
    if current is not None:
        m = json.loads((out / current / artifacts.MANIFEST).read_text())
        if (
            m.get("params", {}).get("store_seq") == cursor
            and m.get("data_fingerprint") == (loaded.manifest["data_fingerprint"])
        ):
            return out, users, items
    artifacts.publish(
        loaded.models,
        out=out,
        user_ids=loaded.user_ids,
        item_ids=loaded.item_ids,
        catalog=loaded.catalog,
        data_fingerprint=loaded.manifest["data_fingerprint"],
        metrics=loaded.manifest.get("metrics", {}),
        params={**loaded.manifest.get("params", {}), "store_seq": cursor},
        history=loaded.history,
        keep=1,
    )
    return out, users, items


# -- one server run --------------------------------------------------------------------------


@dataclass
class Run:
    store: str  # "A" or "B"
    backend: str
    rss_mib: float
    hwm_mib: float
    anon_mib: float
    file_mib: float
    startup_s: float
    load_s: float
    replayed: int
    since_training: float

    @property
    def before_load_s(self) -> float:
        """Startup before the version's load began: interpreter, imports, opening the store
        (SQLite: its quick_check), the ports."""
        return self.startup_s - self.load_s


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile, … of a process, in MiB."""
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def parse_status(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) / 1024
    return out


def scrape(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def request_mix(channel: grpc.Channel, users: Sequence[str], items: Sequence[str]) -> None:
    """The same calls on every run: each route for 100 known users (with and without
    explanations), the probe and an unknown user, and 100 SimilarItems."""
    rec = pb_grpc.RecommenderStub(channel)
    for i in range(100):
        user = users[(i * 7919) % len(users)]
        for model in ("", "popularity", "item_cf", "user_cf", "svd", "ease"):
            rec.Recommend(pb.RecommendRequest(user_id=user, k=10, model=model))
        rec.Recommend(pb.RecommendRequest(user_id=user, k=10, explain=True))
        rec.Recommend(pb.RecommendRequest(user_id=PROBE_USER, k=10, explain=i % 2 == 0))
        rec.Recommend(pb.RecommendRequest(user_id=NOBODY, k=10))
        rec.SimilarItems(pb.SimilarItemsRequest(item_id=items[(i * 31) % len(items)], k=10))


def serve_once(label: str, url: str, root: Path, plan: Plan, users, items, log_dir: Path) -> Run:
    log_path = log_dir / f"serve-{label}-{time.time_ns()}.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_server.app", "--artifacts", str(root), "--port", "0",
             "--metrics-port", "0", "--store", url, "--poll-seconds", "3600"],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        m = LISTENING.search(proc.stdout.readline())
        if m is None:
            raise SystemExit(f"server did not start; see {log_path}")
        address, metrics_url = m.group(1), m.group(2)
        with grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            check = health_pb2.HealthCheckRequest()
            while health.Check(check).status != health_pb2.HealthCheckResponse.SERVING:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited; see {log_path}")
                time.sleep(0.05)
            startup = time.perf_counter() - t0
            since = scrape(metrics_url, "recsys_interactions_since_training")
            if since != plan.new:
                raise SystemExit(f"{label}: {since} events since training, expected {plan.new}")
            rec = pb_grpc.RecommenderStub(ch)
            tier = rec.Recommend(pb.RecommendRequest(user_id=PROBE_USER, k=10)).fallback_tier
            if tier == pb.FALLBACK_TIER_POPULARITY:
                raise SystemExit(f"{label}: the probe user's live events were not replayed")
            request_mix(ch, users, items)
            time.sleep(0.5)
            st = proc_status(proc.pid)
        loaded = LOADED.search(log_path.read_text())
        if loaded is None:
            raise SystemExit(f"{label}: no 'serving model version' line in {log_path}")
        return Run(
            label,
            "sqlite" if url.startswith("sqlite") else "postgresql",
            st["VmRSS"],
            st["VmHWM"],
            st.get("RssAnon", float("nan")),
            st.get("RssFile", float("nan")),
            startup,
            float(loaded.group(2)),
            int(loaded.group(3)),
            since,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- results ---------------------------------------------------------------------------------


@dataclass
class Summary:
    store: str
    backend: str
    events: int
    size_bytes: int | None
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def median_gap(self, other: Summary, attr: str) -> float:
        """Median over run pairs (run n of each) of this minus ``other``."""
        pairs = zip(self.runs, other.runs, strict=False)
        return statistics.median(getattr(x, attr) - getattr(y, attr) for x, y in pairs)


def verdict(a: Summary, b: Summary) -> tuple[float, float, bool]:
    """(RSS difference, peak difference, pass) of the medians, in MiB."""
    d_rss = a.median("rss_mib") - b.median("rss_mib")
    d_hwm = a.median("hwm_mib") - b.median("hwm_mib")
    return d_rss, d_hwm, d_rss <= TARGET_MIB


def table(summaries: Sequence[Summary]) -> list[str]:
    lines = [
        "| backend | store | events | file size | runs | VmRSS | VmHWM (peak) | RssAnon "
        "| RssFile | startup to SERVING | of it, before the load | load + replay | replayed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        size = f"{s.size_bytes / 2**20:,.1f} MiB" if s.size_bytes is not None else "-"
        lines.append(
            f"| {s.backend} | {s.store} | {s.events:,} | {size} | {len(s.runs)} "
            f"| {s.median('rss_mib'):,.1f} MiB | {s.median('hwm_mib'):,.1f} MiB "
            f"| {s.median('anon_mib'):,.1f} MiB | {s.median('file_mib'):,.1f} MiB "
            f"| {s.median('startup_s'):.2f} s | {s.median('before_load_s'):.2f} s "
            f"| {s.median('load_s'):.2f} s "
            f"| {int(s.median('replayed')):,} |"
        )
    return lines


def short(n: int) -> str:
    """1000000 -> "1M", 10000 -> "10k", 21500 -> "21.5k"."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:g}{unit}"
    return str(n)


def verdict_line(backend: str, a: Summary, b: Summary) -> str:
    d_rss, d_hwm, ok = verdict(a, b)
    return (
        f"{backend}: RSS({short(a.events)}) − RSS({short(b.events)}) = {d_rss:+.1f} MiB "
        f"(target ≤ {TARGET_MIB:.0f} MiB) {'PASS' if ok else 'FAIL'}; "
        f"peak (VmHWM) difference {d_hwm:+.1f} MiB; startup before the load "
        f"{a.median_gap(b, 'before_load_s'):+.2f} s (median of the run pairs)"
    )


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, help="a trained artifacts root (default: train)")
    ap.add_argument("--dir", type=Path, help="work directory, kept (its stores are reused)")
    ap.add_argument("--runs", type=int, default=3, help="server runs per store (median shown)")
    ap.add_argument("--old", type=int, default=990_000, help="events at or below the cursor")
    ap.add_argument("--new", type=int, default=10_000, help="events after the cursor")
    ap.add_argument(
        "--store-pg", metavar="URL",
        help="also PostgreSQL: a server URL on which databases store_rss_a/_b are (re)created, "
        "or 'auto' for a throwaway server (tests/support/postgres.py)",
    )  # fmt: skip
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    plan = Plan(a.old, a.new)
    work = a.dir or Path(tempfile.mkdtemp(prefix="store-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run_all(a, plan, work)
    finally:
        if a.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def run_all(a: argparse.Namespace, plan: Plan, work: Path) -> int:
    source = a.artifacts
    if source is None:
        source = work / "trained"
        if artifacts.latest_version(source) if source.is_dir() else None:
            print(f"reusing the version trained in {source}")
        else:
            print("training a version on the default synthetic data ...", flush=True)
            t0 = time.perf_counter()
            source = train(work)
            print(f"  trained in {time.perf_counter() - t0:.0f} s", flush=True)
    root, users, items = publish_with_cursor(source, work / "artifacts", plan.cursor)
    print(f"version {artifacts.latest_version(root)} with store_seq {plan.cursor}: "
          f"{len(users):,} users, {len(items):,} items")  # fmt: skip

    targets: list[tuple[str, str, str]] = [  # (backend, store, url)
        ("sqlite", "A", f"sqlite:///{work / 'a.db'}"),
        ("sqlite", "B", f"sqlite:///{work / 'b.db'}"),
    ]
    with contextlib.ExitStack() as stack:
        if a.store_pg:
            pg_urls = pg_databases(a.store_pg, stack)
            targets += [("postgresql", "A", pg_urls[0]), ("postgresql", "B", pg_urls[1])]
        for backend, label, url in targets:
            with_old = label == "A"
            if backend == "sqlite" and store_ready(url, plan, with_old=with_old):
                print(f"reusing {backend} store {label} ({redact(url)})")
                continue
            t0 = time.perf_counter()
            print(f"building {backend} store {label} ({redact(url)}) ...", flush=True)
            asyncio.run(fill(url, plan, users, items, with_old=with_old))
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)

        opens: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for backend, label, url in targets:
            if backend == "sqlite":
                for cold in (False, True):
                    opens[(label, "cold" if cold else "warm")] = [
                        time_open(url, cold=cold) for _ in range(3)
                    ]
        summaries = {
            (backend, label): Summary(
                label,
                backend,
                plan.total if label == "A" else plan.new,
                sqlite_bytes(url) if backend == "sqlite" else None,
            )
            for backend, label, url in targets
        }
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        for n in range(a.runs):
            order = targets if n % 2 == 0 else list(reversed(targets))
            for backend, label, url in order:
                r = serve_once(label, url, root, plan, users, items, logs)
                summaries[(backend, label)].runs.append(r)
                print(
                    f"  run {n + 1} {backend} {label}: VmRSS {r.rss_mib:,.1f} MiB, VmHWM "
                    f"{r.hwm_mib:,.1f} MiB, SERVING after {r.startup_s:.2f} s "
                    f"(load {r.load_s:.2f} s, {r.replayed:,} replayed)",
                    flush=True,
                )

    ordered = list(summaries.values())
    lines = table(ordered)
    backends = sorted({s.backend for s in ordered}, key=["sqlite", "postgresql"].index)
    verdicts = [verdict_line(b, summaries[(b, "A")], summaries[(b, "B")]) for b in backends]
    open_lines = []
    for (label, cache), times in opens.items():
        opened = statistics.median(t[0] for t in times)
        check = statistics.median(t[1] for t in times)
        open_lines.append(
            f"SQLite store {label}, {cache} OS cache: open_store {opened:.2f} s; "
            f"PRAGMA quick_check alone {check:.2f} s (medians of {len(times)})"
        )
    print()
    print("\n".join(lines))
    print()
    print("\n".join(open_lines))
    print("\n".join(verdicts))
    ok = all(verdict(summaries[(b, "A")], summaries[(b, "B")])[2] for b in backends)
    if a.write_docs:
        write_docs(a, plan, lines, open_lines, verdicts)
    return 0 if ok else 1


def pg_databases(spec: str, stack: contextlib.ExitStack) -> list[str]:
    """Two fresh databases (A, B) on the PostgreSQL server ``spec`` (a URL, or 'auto': a
    throwaway server, stopped when ``stack`` closes)."""
    if spec == "auto":
        sys.path.insert(0, str(REPO))
        from tests.support.postgres import PostgresServer

        server = stack.enter_context(PostgresServer.started())
        return [server.create_database("store_rss_a"), server.create_database("store_rss_b")]
    import psycopg

    urls = []
    with psycopg.connect(spec, autocommit=True) as conn:
        for name in ("store_rss_a", "store_rss_b"):
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
            urls.append(urlunsplit(urlsplit(spec)._replace(path=f"/{name}")))
    return urls


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {kib / 2**20:.1f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} cores{mem}, Linux {platform.release()}"


def write_docs(a, plan: Plan, lines, open_lines, verdicts) -> None:
    command = "python server/bench/store_rss.py " + " ".join(sys.argv[1:])
    doc = [
        SECTION,
        "",
        f"`{command.strip()}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; load "
        f"average at the end {os.getloadavg()[0]:.1f}.",
        "",
        f"Store A holds {plan.total:,} events, of which {plan.new:,} are newer than the serving "
        f"version's cursor (`store_seq` {plan.cursor:,}); store B holds those {plan.new:,} "
        "alone (seq after the same cursor, so one version serves both). A real `recsys-serve` "
        f"per run, {a.runs} runs per store alternating A and B, medians; memory read from "
        "`/proc/PID/status` after SERVING, the replay checked and the same request mix sent. "
        "Startup is from the process start to SERVING (store files in the OS cache); before "
        "the load: interpreter, imports, opening the store (SQLite: `PRAGMA quick_check`); "
        "load + replay: building and warming up the version and replaying the newer events "
        "(the server's own log line). The open times are measured in the benchmark process, "
        "the cold ones after evicting the file from the page cache (`posix_fadvise`).",
        "",
        *lines,
        "",
        *(f"* {x}" for x in open_lines),
        *(f"* **{x}**" for x in verdicts),
    ]
    DOCS.write_text(replace_section(DOCS.read_text(), SECTION, doc))
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    raise SystemExit(main())
