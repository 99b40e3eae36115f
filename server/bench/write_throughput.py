"""Write throughput of the durable event stores: events acknowledged per second.

    python server/bench/write_throughput.py [--events 50000] [--store postgresql://…]

For 8 and for 64 concurrent writers (asyncio tasks, each calling ``append`` in a loop with
small batches of 1-10 events until its share of ``--events`` is acknowledged) it measures:

* ``sqlite``: `recsys_core.datastore` SQLite with ``synchronous=FULL``, in a temporary
  directory;
* every ``--store URL`` given (e.g. PostgreSQL).

Event ids are random uuid4 hex strings, as the client SDK makes them (`new_event_id`): for the
databases that means inserts at random places of the UNIQUE index, so a commit rewrites about
one index page per event (SQLite's WAL holds whole pages). ``--ids sequential`` shows the
cost of that (ids made of a run token and a counter). Either way they are fresh each run, so
a database used before still stores all.

It prints events/s, commits/s and events per commit for each. The targets run interleaved,
writer count by writer count, so machine noise hits them alike; run it on a quiet machine.
(Issue 17 compared SQLite with the hand-written log it replaced, which this script measured
in the same run before that log was deleted; the figures are in docs/benchmarks.md.)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys_core.datastore import open_store, redact
from recsys_core.events import Event

Append = Callable[[Sequence[Event]], Awaitable[object]]


@dataclass
class Result:
    target: str
    writers: int
    events: int
    seconds: float
    commits: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def commits_per_s(self) -> float:
        return self.commits / self.seconds

    @property
    def events_per_commit(self) -> float:
        return self.events / self.commits if self.commits else float("nan")


def workload(total: int, writers: int, seed: int = 0, ids: str = "uuid") -> list[list[list[Event]]]:
    """Per writer, its batches (1-10 events each); ``total`` events in all, fresh ids."""
    rng = random.Random(seed)
    token = uuid.uuid4().hex[:12]

    def new_id(i: int) -> str:
        return uuid.uuid4().hex if ids == "uuid" else f"{token}-{i:09d}"

    plans: list[list[list[Event]]] = []
    n = 0
    for w in range(writers):
        share = total // writers + (1 if w < total % writers else 0)
        batches: list[list[Event]] = []
        while share > 0:
            size = min(rng.randint(1, 10), share)
            batch = [
                Event(new_id(i), f"u{i % 1000}", f"i{i % 5000}", "click", 1.7e9 + i)
                for i in range(n, n + size)
            ]
            batches.append(batch)
            n += size
            share -= size
        plans.append(batches)
    return plans


async def drive(append: Append, plans: list[list[list[Event]]]) -> tuple[int, float]:
    """Run one task per plan; return (events acknowledged as recorded, seconds)."""

    async def writer(batches: list[list[Event]]) -> int:
        done = 0
        for batch in batches:
            result = await append(batch)
            done += len(result.recorded)  # type: ignore[attr-defined]
        return done

    start = time.perf_counter()
    counts = await asyncio.gather(*(writer(b) for b in plans))
    return sum(counts), time.perf_counter() - start


async def run_store(url: str, plans: list[list[list[Event]]]) -> tuple[int, float, int]:
    store = await asyncio.to_thread(open_store, url)
    try:
        before = store.commits
        acked, seconds = await drive(store.append, plans)
        return acked, seconds, store.commits - before
    finally:
        await store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="events per target and writer count")
    ap.add_argument(
        "--store", action="append", default=[], metavar="URL", help="another store (repeatable)"
    )
    ap.add_argument("--writers", default="8,64", help="comma-separated writer counts")
    ap.add_argument("--ids", choices=["uuid", "sequential"], default="uuid")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the median is shown")
    ap.add_argument("--dir", help="where the SQLite files go (default: a temp dir)")
    a = ap.parse_args()
    writer_counts = [int(w) for w in a.writers.split(",")]
    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="write-throughput-"))
    base.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[str, int], list[Result]] = {}
    try:
        for writers in writer_counts:
            for n in range(a.repeat):  # interleaved, each run on a fresh SQLite file
                plans = workload(a.events, writers, seed=n, ids=a.ids)
                sqlite_url = f"sqlite:///{base}/{writers}-{n}.db"
                targets: list[tuple[str, Callable[[], Awaitable[tuple[int, float, int]]]]] = [
                    ("sqlite", lambda p=plans, u=sqlite_url: run_store(u, p)),
                ]
                for url in a.store:
                    targets.append((redact(url), lambda p=plans, u=url: run_store(u, p)))
                for name, run in targets:
                    acked, seconds, commits = asyncio.run(run())
                    if acked != a.events:
                        print(f"!! {name}: {acked} of {a.events} events acknowledged as new")
                    r = Result(name, writers, acked, seconds, commits)
                    runs.setdefault((name, writers), []).append(r)
                    print(f"   {name:<10} {writers:>3} writers: {r.events_per_s:>10,.0f} events/s")
    finally:
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)
    results = [sorted(rs, key=lambda r: r.events_per_s)[len(rs) // 2] for rs in runs.values()]

    print(f"\nmedian of {a.repeat} runs of {a.events} events ({a.ids} ids), fsync on everywhere")
    print(
        f"{'target':<40} {'writers':>7} {'events':>8} {'seconds':>8} {'events/s':>10} "
        f"{'commits/s':>10} {'ev/commit':>9}"
    )
    for r in results:
        print(
            f"{r.target:<40} {r.writers:>7} {r.events:>8} {r.seconds:>8.2f} "
            f"{r.events_per_s:>10,.0f} {r.commits_per_s:>10,.0f} {r.events_per_commit:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
