import asyncio
import collections
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recsys_core.eventlog import (
    Event,
    SegmentReader,
    encode_record,
    list_segments,
    read_events,
    recover,
)
from recsys_server.interaction_log import (
    AppendResult,
    InteractionLog,
    LogClosedError,
    LogLockedError,
    LogWriteError,
)

ROOT = Path(__file__).resolve().parents[2]


def ev(i: int, prefix: str = "e") -> Event:
    return Event(f"{prefix}{i}", f"u{i % 13}", f"i{i % 17}", "click", 1_700_000_000.0 + i)


def ids(events) -> list[str]:
    return [e.event_id for e in events]


def stored_ids(directory: Path) -> list[str]:
    return ids(read_events(directory))


def segment_sizes(directory: Path) -> list[int]:
    return [p.stat().st_size for p in list_segments(directory)]


def assert_clean(directory: Path) -> None:
    """Every segment is a whole number of valid records (no partial or corrupt bytes)."""
    for path in list_segments(directory):
        reader = SegmentReader(path)
        for _ in reader:
            pass
        assert reader.error is None, f"{path.name}: {reader.error}"
        assert reader.valid_end == reader.size


# --- basics ------------------------------------------------------------------------------------


def test_round_trip_and_counters(tmp_path):
    events = [ev(i) for i in range(10)] + [
        Event("r1", "ü-user", "item/1", "rating", 1_700_000_100.5, rating=4.5)
    ]

    async def main():
        log = InteractionLog(tmp_path)
        res = await log.append(events[:4])
        assert res == AppendResult(events[:4], 0)
        assert (await log.append(events[4:])).recorded == events[4:]
        await log.close()
        return log

    log = asyncio.run(main())
    assert list(read_events(tmp_path)) == events
    assert log.records_written == 11 and log.batches == 2 and log.duplicates == 0
    assert log.bytes_written == sum(segment_sizes(tmp_path))
    assert log.bytes_written == sum(len(encode_record(e)) for e in events)
    assert log.fsyncs >= 2 and log.write_errors == 0 and log.recovered_corrupt_tails == 0
    assert [p.name for p in list_segments(tmp_path)] == ["events-000001.log"]


def test_duplicates_within_a_call_and_across_calls_and_reopen(tmp_path):
    async def first():
        async with InteractionLog(tmp_path) as log:
            res = await log.append([ev(1), ev(2), ev(1), ev(3), ev(2)])
            assert ids(res.recorded) == ["e1", "e2", "e3"] and res.duplicates == 2
            res = await log.append([ev(3), ev(4)])
            assert ids(res.recorded) == ["e4"] and res.duplicates == 1
            assert (await log.append([ev(4)])) == AppendResult([], 1)
            assert (await log.append([])) == AppendResult([], 0)
            assert log.duplicates == 4 and log.records_written == 4
            assert log.stored_events == 4 and "e2" in log

    async def second():  # ids are loaded from disk on open
        async with InteractionLog(tmp_path) as log:
            assert log.stored_events == 4
            res = await log.append([ev(2), ev(5), ev(4)])
            assert ids(res.recorded) == ["e5"] and res.duplicates == 2

    asyncio.run(first())
    asyncio.run(second())
    assert stored_ids(tmp_path) == ["e1", "e2", "e3", "e4", "e5"]


def test_concurrent_calls_with_the_same_ids_write_each_once(tmp_path):
    async def main():
        async with InteractionLog(tmp_path) as log:
            batch = [ev(i) for i in range(20)]
            results = await asyncio.gather(*(log.append(batch) for _ in range(10)))
            assert sum(len(r.recorded) for r in results) == 20
            assert sum(r.duplicates for r in results) == 9 * 20

    asyncio.run(main())
    assert sorted(stored_ids(tmp_path)) == sorted(f"e{i}" for i in range(20))


def test_invalid_input_writes_nothing(tmp_path):
    async def main():
        async with InteractionLog(tmp_path) as log:
            with pytest.raises(TypeError):
                await log.append([ev(1), "e2"])  # type: ignore[list-item]
            with pytest.raises(ValueError):
                await log.append([ev(1), Event("x", "u", "\ud800", "click", 1.0)])
            assert log.records_written == 0 and log.stored_events == 0
            assert (await log.append([ev(1)])).recorded == [ev(1)]  # e1 was not left pending

    asyncio.run(main())
    assert stored_ids(tmp_path) == ["e1"]


def test_close_twice_append_after_close_and_directory_lock(tmp_path):
    async def main():
        log = InteractionLog(tmp_path)
        with pytest.raises(LogLockedError):
            InteractionLog(tmp_path)
        with pytest.raises(LogLockedError):  # recovery would cut off in-flight records
            recover(tmp_path)
        pending = asyncio.ensure_future(log.append([ev(1)]))
        await asyncio.sleep(0)
        await asyncio.gather(log.close(), log.close())  # close waits for queued appends
        assert (await pending).recorded == [ev(1)]
        await log.close()
        with pytest.raises(LogClosedError):
            await log.append([ev(2)])
        reopened = InteractionLog(tmp_path)  # the lock was released
        await reopened.close()

    asyncio.run(main())
    assert stored_ids(tmp_path) == ["e1"]


# --- group commit ------------------------------------------------------------------------------


def test_group_commit_50_concurrent_appends(tmp_path):
    async def main():
        async with InteractionLog(tmp_path) as log:
            base = log.fsyncs
            results = await asyncio.gather(
                *(log.append([ev(2 * k), ev(2 * k + 1)]) for k in range(50))
            )
            return log, log.fsyncs - base, results

    log, fsyncs, results = asyncio.run(main())
    assert all(len(r.recorded) == 2 for r in results)
    assert log.batches <= 5 and fsyncs <= 5, (log.batches, fsyncs)  # far fewer than 50
    assert sorted(stored_ids(tmp_path)) == sorted(f"e{i}" for i in range(100))


def test_appends_arriving_during_a_flush_share_the_next_fsync(tmp_path):
    """Staggered arrivals with a slow disk: each write carries everything queued meanwhile."""

    def slow_fsync(fd: int) -> None:
        time.sleep(0.02)
        os.fsync(fd)

    async def main():
        async with InteractionLog(tmp_path, _fsync=slow_fsync) as log:
            base = log.fsyncs

            async def one(k: int) -> AppendResult:
                await asyncio.sleep(k * 0.002)  # arrivals spread over ~100 ms
                return await log.append([ev(k)])

            results = await asyncio.gather(*(one(k) for k in range(50)))
            return log, log.fsyncs - base, results

    log, fsyncs, results = asyncio.run(main())
    assert [r.recorded for r in results] == [[ev(k)] for k in range(50)]
    assert 2 <= log.batches <= 12 and fsyncs == log.batches, (log.batches, fsyncs)
    assert sorted(stored_ids(tmp_path)) == sorted(f"e{k}" for k in range(50))


def test_max_batch_bounds_records_per_write(tmp_path):
    async def main():
        async with InteractionLog(tmp_path, max_batch=10) as log:
            await asyncio.gather(*(log.append([ev(k)]) for k in range(35)))
            big = await log.append([ev(k, "big") for k in range(25)])  # never split
            return log, big

    log, big = asyncio.run(main())
    assert log.batches == 4 + 1 and len(big.recorded) == 25
    assert len(stored_ids(tmp_path)) == 60


def test_event_loop_keeps_running_during_a_slow_fsync(tmp_path):
    ticked = threading.Event()  # set by the event loop once it has ticked 10 times

    def slow_fsync(fd: int) -> None:
        # Lasts until the loop has ticked 10 times: never, if the fsync blocked the loop (then
        # the wait's limit ends it, with fewer ticks).
        ticked.wait(30)

    async def main():
        async with InteractionLog(tmp_path, _fsync=slow_fsync) as log:
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1
                    if ticks == 10:
                        ticked.set()

            t = asyncio.create_task(ticker())
            await log.append([ev(1)])
            t.cancel()
            return ticks

    assert asyncio.run(main()) >= 10


# --- recovery ----------------------------------------------------------------------------------


def _truncate_mid_record(path: Path, last_len: int) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - last_len // 2)


def _append_garbage(path: Path, last_len: int) -> None:
    with path.open("ab") as f:
        f.write(b"\x17\x00\x00\x00garbage-garbage")


def _flip_last_payload_byte(path: Path, last_len: int) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, last_survives",
    [(_truncate_mid_record, False), (_append_garbage, True), (_flip_last_payload_byte, False)],
)
def test_torn_tail_is_set_aside_and_appending_continues(tmp_path, damage, last_survives):
    events = [ev(i) for i in range(20)]

    async def write():
        async with InteractionLog(tmp_path) as log:
            for k in range(0, 20, 5):
                await log.append(events[k : k + 5])

    asyncio.run(write())
    [segment] = list_segments(tmp_path)
    size = segment.stat().st_size
    damage(segment, len(encode_record(events[-1])))
    damaged = segment.read_bytes()

    async def reopen():
        async with InteractionLog(tmp_path) as log:
            report = log.recovery
            res = await log.append([events[-1], ev(100)])
            more = await log.append([ev(101)])
            return log, report, res, more

    log, report, res, more = asyncio.run(reopen())
    keep = size if last_survives else size - len(encode_record(events[-1]))
    assert log.recovered_corrupt_tails == 1 and report.corrupt_tails == 1
    assert report.bytes_set_aside == len(damaged) - keep
    [aside] = report.paths
    assert aside.exists() and aside.read_bytes() == damaged[keep:]
    assert report.records == (20 if last_survives else 19)
    # The lost event was not stored, so it is recorded again rather than a duplicate.
    assert ids(res.recorded) == (["e100"] if last_survives else ["e19", "e100"])
    assert more.recorded == [ev(101)]
    assert stored_ids(tmp_path) == [*ids(events), "e100", "e101"]
    assert_clean(tmp_path)


def test_segment_rotation(tmp_path):
    record = len(encode_record(ev(10)))
    rotate = 4 * record + record // 2  # room for 4 records a segment

    async def write(start: int, stop: int, step: int):
        async with InteractionLog(tmp_path, rotate_bytes=rotate) as log:
            for k in range(start, stop, step):
                await log.append([ev(i) for i in range(k, min(k + step, stop))])

    asyncio.run(write(10, 40, 2))  # same-size records: 2 batches per segment
    sizes = segment_sizes(tmp_path)
    assert len(sizes) == 8 and all(s <= rotate for s in sizes)
    asyncio.run(write(40, 50, 3))  # reopen continues with the last segment, then rotates
    asyncio.run(write(50, 60, 10))  # a batch above the limit gets a segment of its own
    names = [p.name for p in list_segments(tmp_path)]
    assert names[0] == "events-000001.log" and len(names) == len(set(names))
    assert segment_sizes(tmp_path)[-1] == sum(len(encode_record(ev(i))) for i in range(50, 60))
    assert stored_ids(tmp_path) == [f"e{i}" for i in range(10, 60)]
    assert recover(tmp_path).corrupt_tails == 0


# --- write failures ----------------------------------------------------------------------------


class FlakyDisk:
    """`_write` seam: while ``full``, writes half of the data, then fails with ENOSPC."""

    def __init__(self) -> None:
        self.full = False
        self.calls = 0

    def __call__(self, fd: int, data) -> int:
        self.calls += 1
        if self.full:
            if len(data) > 1:
                os.write(fd, data[: len(data) // 2])  # a partial record reaches the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)


def test_enospc_rolls_back_and_the_next_append_works(tmp_path):
    disk = FlakyDisk()

    async def main():
        async with InteractionLog(tmp_path, _write=disk) as log:
            await log.append([ev(1), ev(2)])
            size = segment_sizes(tmp_path)[0]
            disk.full = True
            results = await asyncio.gather(
                log.append([ev(3), ev(4)]), log.append([ev(5)]), return_exceptions=True
            )
            for r in results:  # every append of the failed batch gets the error
                assert isinstance(r, LogWriteError) and r.errno == errno.ENOSPC
                assert "ENOSPC" in str(r)
            assert segment_sizes(tmp_path)[0] == size  # no partial record remains
            assert_clean(tmp_path)
            assert log.write_errors == 1 and log.records_written == 2 and log.stored_events == 2
            disk.full = False
            res = await log.append([ev(3), ev(4), ev(5)])  # not "duplicates": never stored
            assert ids(res.recorded) == ["e3", "e4", "e5"] and res.duplicates == 0
            return log

    log = asyncio.run(main())
    assert stored_ids(tmp_path) == ["e1", "e2", "e3", "e4", "e5"]
    assert log.write_errors == 1 and log.records_written == 5
    assert_clean(tmp_path)


def test_fsync_failure_rolls_back(tmp_path):
    fail = {"next": False}

    def fsync(fd: int) -> None:
        if fail["next"]:
            fail["next"] = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)

    async def main():
        async with InteractionLog(tmp_path, _fsync=fsync) as log:
            await log.append([ev(1)])
            fail["next"] = True
            with pytest.raises(LogWriteError) as info:
                await log.append([ev(2)])
            assert info.value.errno == errno.EIO
            assert stored_ids(tmp_path) == ["e1"]
            assert (await log.append([ev(2)])).recorded == [ev(2)]

    asyncio.run(main())
    assert stored_ids(tmp_path) == ["e1", "e2"]


def test_call_sharing_ids_with_a_failed_call_fails_too(tmp_path):
    disk = FlakyDisk()
    first_write_fails = True

    def write(fd, data):
        nonlocal first_write_fails
        disk.full, first_write_fails = first_write_fails, False
        return disk(fd, data)

    async def main():
        async with InteractionLog(tmp_path, max_batch=2, _write=write) as log:
            a = log.append([ev(1), ev(2)])  # first write: fails
            b = log.append([ev(2), ev(3)])  # e3 in the second write; e2 rides on a's
            ra, rb = await asyncio.gather(a, b, return_exceptions=True)
            assert isinstance(ra, LogWriteError) and isinstance(rb, LogWriteError)
            assert stored_ids(tmp_path) == ["e3"]
            res = await log.append([ev(2), ev(3)])  # the retry is idempotent
            assert ids(res.recorded) == ["e2"] and res.duplicates == 1

    asyncio.run(main())
    assert stored_ids(tmp_path) == ["e3", "e2"]


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("real full-disk test needs root and mount(8) for a 256 KiB tmpfs")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk(small_tmpfs):
    directory = small_tmpfs / "log"

    async def main():
        async with InteractionLog(directory) as log:
            filler = small_tmpfs / "filler"
            filler.write_bytes(b"\0" * (200 * 1024))
            n, error = 0, None
            for _ in range(1000):
                batch = [ev(i) for i in range(n, n + 25)]
                try:
                    await log.append(batch)
                except LogWriteError as e:
                    error = e
                    break
                n += 25
            assert error is not None and error.errno == errno.ENOSPC, error
            assert n > 0 and log.write_errors == 1
            assert_clean(directory)  # the failed (possibly partial) write was truncated
            assert stored_ids(directory) == [f"e{i}" for i in range(n)]
            filler.unlink()  # the "disk" recovers
            res = await log.append([ev(i) for i in range(n, n + 25)])
            assert len(res.recorded) == 25
            return n + 25

    total = asyncio.run(main())
    assert stored_ids(directory) == [f"e{i}" for i in range(total)]
    assert recover(directory).corrupt_tails == 0


# --- a real crash ------------------------------------------------------------------------------

CRASH_WRITER = """
import asyncio, sys
from recsys_server.interaction_log import InteractionLog
from recsys_core.eventlog import Event

N, BATCH, PAIRS = 10_000, 10, 4

async def main(directory):
    log = InteractionLog(directory, max_batch=200)

    async def worker(pair):
        # Both workers of a pair send the same batches: concurrent duplicates.
        for start in range(pair * BATCH, N, BATCH * PAIRS):
            batch = [
                Event(f"ev-{i}", f"u{i % 97}", f"i{i % 89}", "click", 1.7e9 + i)
                for i in range(start, min(start + BATCH, N))
            ]
            await log.append(batch + batch[:2])  # and repeats within the call
            sys.stdout.write("".join(e.event_id + "\\n" for e in batch))
            sys.stdout.flush()

    await asyncio.gather(*(worker(p) for w in range(2) for p in range(PAIRS)))
    await log.close()
    print("DONE", flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_sigkill_loses_no_acknowledged_event(tmp_path):
    directory = tmp_path / "log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "server"), str(ROOT / "trainer"), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    acked: list[str] = []
    try:
        while len(set(acked)) < 3000:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.rstrip("\n"))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # acks already in the pipe when it died count too
        stderr = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
    assert not finished, f"the writer finished before it could be killed: {stderr}"
    assert proc.returncode == -signal.SIGKILL
    acked += [line for line in rest.split("\n")[:-1]]  # a last line without "\n" is torn
    assert "DONE" not in acked
    acked_set = set(acked)
    assert len(acked_set) >= 3000

    report = recover(directory)
    stored = stored_ids(directory)
    counts = collections.Counter(stored)
    assert [i for i, c in counts.items() if c > 1] == []  # no duplicates at all
    assert acked_set <= counts.keys()  # every acknowledged event survived, exactly once
    assert len(stored) < 10_000
    assert report.records == len(stored)

    async def finish():  # the log keeps working after the crash
        async with InteractionLog(directory) as log:
            rest = [Event(f"ev-{i}", "u", "i", "click", 1.0) for i in range(10_000)]
            res = await log.append(rest)
            assert res.duplicates == len(stored)

    asyncio.run(finish())
    assert sorted(stored_ids(directory)) == sorted(f"ev-{i}" for i in range(10_000))
