"""The pure parts of server/bench/store_rss.py (the benchmark itself is not run here), plus
its store-building step on a small SQLite store: the newer events start right after the
version's cursor in both stores."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from recsys_core.datastore import open_store

PATH = Path(__file__).resolve().parents[1] / "bench" / "store_rss.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("store_rss", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["store_rss"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("store_rss", None)


USERS = [f"u{i}" for i in range(50)]
ITEMS = [f"i{i}" for i in range(30)]


def test_events_are_deterministic_known_and_carry_the_probe(bench):
    a = bench.make_events(200, USERS, ITEMS, seed=3, t0=1.0, probe=5)
    assert a == bench.make_events(200, USERS, ITEMS, seed=3, t0=1.0, probe=5)
    assert a != bench.make_events(200, USERS, ITEMS, seed=4, t0=1.0, probe=5)
    assert len({e.event_id for e in a}) == 200
    assert all(len(e.event_id) == 32 for e in a)
    assert sum(e.user_id == bench.PROBE_USER for e in a) == 5
    assert {e.user_id for e in a} - {bench.PROBE_USER} <= set(USERS)
    assert {e.item_id for e in a} <= set(ITEMS)
    assert all((e.rating is not None) == (e.event_type == "rating") for e in a)


def test_the_newer_events_follow_the_cursor_in_both_stores(bench, tmp_path):
    plan = bench.Plan(old=120, new=30, seed=5)
    urls = {}
    for label, with_old in (("A", True), ("B", False)):
        urls[label] = f"sqlite:///{tmp_path / label}.db"
        asyncio.run(bench.fill(urls[label], plan, USERS, ITEMS, with_old=with_old))
        assert bench.store_ready(urls[label], plan, with_old=with_old)
        assert not bench.store_ready(urls[label], plan, with_old=not with_old)
    with open_store(urls["A"]) as a, open_store(urls["B"]) as b:
        assert (a.count(), b.count()) == (150, 30)
        newer_a = list(a.read_events(after_seq=plan.cursor))
        newer_b = list(b.read_events(after_seq=0))
        assert [(s.seq, s.event) for s in newer_a] == [(s.seq, s.event) for s in newer_b]
        assert newer_b[0].seq == plan.cursor + 1 and newer_b[-1].seq == plan.total


def test_status_table_verdict_and_docs_section(bench):
    status = bench.parse_status("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n")
    assert status == {"VmHWM": 200.0, "VmRSS": 100.0}
    assert [bench.short(n) for n in (1_000_000, 10_000, 21_500, 999)] == [
        "1M",
        "10k",
        "21.5k",
        "999",
    ]

    def run(rss):
        return bench.Run("A", "sqlite", rss, rss + 10, 0, 0, 1.0, 0.5, 10, 10.0)

    a = bench.Summary("A", "sqlite", 1_000_000, 2**20, [run(300), run(340), run(301)])
    b = bench.Summary("B", "sqlite", 10_000, 2**20, [run(250), run(251), run(900)])
    assert bench.verdict(a, b) == (50.0, 50.0, True)
    a.runs.append(run(400))
    assert bench.verdict(a, b)[2] is False  # median 320.5 - 251
    line = bench.verdict_line("sqlite", a, b)
    assert line.startswith("sqlite: RSS(1M) − RSS(10k) = +69.5 MiB") and "FAIL" in line
    assert len(bench.table([a, b])) == 4
    assert line.endswith("startup before the load +0.00 s (median of the run pairs)")

    section = bench.SECTION
    text = "# T\n\n## One\n\nx\n"
    once = bench.replace_section(text, section, [section, "", "first"])
    assert once == text + "\n" + section + "\n\nfirst\n"
    later = once + "\n## After\n\ny\n"
    again = bench.replace_section(later, section, [section, "", "second"])
    assert again == text + "\n" + section + "\n\nsecond\n\n## After\n\ny\n"
