"""Timing, peak-memory and machine-description helpers for the core benchmark."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident set size of this process now (``/proc/self/statm``, second field)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def _reset_hwm() -> bool:
    """Resets the kernel's peak-RSS counter (VmHWM) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _load_libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def release_free_memory() -> None:
    """Hands free heap memory back to the OS (glibc ``malloc_trim``), so that memory freed by
    earlier calls and still resident does not hide the next call's allocations."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class PeakRSS:
    """Peak RSS growth during a ``with`` block.

    A daemon thread reads ``/proc/self/statm`` every ``interval`` seconds (default 1 ms) and keeps
    the maximum; ``peak`` is that maximum minus the RSS read just before the block. A Python thread
    can only sample while the measured call has released the GIL, so the kernel's own high-water
    mark (``VmHWM``, reset through ``/proc/self/clear_refs`` on entry) is read on exit as well and
    the larger of the two is reported. ``sampled`` and ``hwm`` keep the two readings apart.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.base = 0
        self.sampled = 0
        self.hwm: int | None = None
        self.samples = 0

    def __enter__(self) -> PeakRSS:
        release_free_memory()
        self._stop = threading.Event()
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.base = rss_bytes()
        self._max = self.base
        self._hwm_ok = _reset_hwm()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        fd, stop, interval = self._fd, self._stop, self.interval
        mx, n = self._max, 0
        while not stop.is_set():
            rss = int(os.pread(fd, 128, 0).split()[1]) * _PAGE
            if rss > mx:
                mx = rss
            n += 1
            self._max = mx
            time.sleep(interval)
        self.samples = n

    def __exit__(self, *exc) -> None:
        end = rss_bytes()
        self._stop.set()
        self._thread.join()
        os.close(self._fd)
        self.sampled = max(self._max, end) - self.base
        if self._hwm_ok:
            hwm = _read_hwm()
            self.hwm = None if hwm is None else max(0, hwm - self.base)

    @property
    def peak(self) -> int:
        return max(self.sampled, self.hwm or 0)


# ---------------------------------------------------------------- other load


class CpuLoad:
    """CPU used by *other* processes while a block runs, in cores (0 = the machine was ours).

    Busy time of the whole machine from ``/proc/stat`` minus this process's own CPU time
    (``os.times``), divided by the wall time.
    """

    def __init__(self) -> None:
        self.other_cores: float | None = None
        self.own_cores: float | None = None

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> CpuLoad:
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._machine_busy(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t0
        busy = self._machine_busy()
        own = self._own() - self._own0
        if busy is None or self._busy0 is None or wall <= 0:
            return
        self.own_cores = own / wall
        self.other_cores = max(0.0, (busy - self._busy0 - own) / wall)


def wait_quiet(max_wait: float, window: float = 2.0, threshold: float = 0.1) -> float | None:
    """Waits (at most ``max_wait`` s) for a ``window`` in which other processes use less than
    ``threshold`` cores. Returns the last window's other load (None if it cannot be read)."""
    deadline = time.monotonic() + max_wait
    while True:
        with CpuLoad() as load:
            time.sleep(window)
        if load.other_cores is None or load.other_cores < threshold:
            return load.other_cores
        if time.monotonic() >= deadline:
            return load.other_cores


# ---------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall times (seconds) of repeated runs and the peak RSS growth of one more run."""

    times: list[float] = field(default_factory=list)
    peak: int | None = None
    result: object = None

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def best(self) -> float:
        return float(min(self.times))


def time_call(
    fn: Callable[[], object],
    repeats: int,
    *,
    memory: bool = True,
    slow_after: float = 30.0,
) -> Timing:
    """Runs ``fn`` once under :class:`PeakRSS` (also the warm-up), then ``repeats`` timed runs.

    Timed runs have no sampler thread. If the first run took longer than ``slow_after`` seconds
    it is also counted as a timing and only ``repeats - 1`` more runs follow (at least one).
    """
    t = Timing()
    if memory:
        with PeakRSS() as m:
            t0 = time.perf_counter()
            t.result = fn()
            first = time.perf_counter() - t0
        t.peak = m.peak
    else:
        t0 = time.perf_counter()
        t.result = fn()
        first = time.perf_counter() - t0
    more = repeats
    if first > slow_after:
        t.times.append(first)
        more = max(0, repeats - 1)
    for _ in range(more):
        t0 = time.perf_counter()
        fn()
        t.times.append(time.perf_counter() - t0)
    return t


def latencies_ns(
    fn: Callable[[object], object], args: list, passes: int = 3, max_seconds: float = 20.0
) -> np.ndarray:
    """Per-call latencies (ns, ``perf_counter_ns``) of ``fn(a)`` for every ``a`` in ``args``.

    One untimed warm-up pass, then ``passes`` timed passes (fewer, at least one, when the warm-up
    pass shows they would take longer than ``max_seconds``); all samples are returned.
    """
    t0 = time.perf_counter()
    for a in args:
        fn(a)
    warm = time.perf_counter() - t0
    passes = max(1, min(passes, int(max_seconds / max(warm, 1e-9))))
    out = np.empty(passes * len(args), dtype=np.int64)
    i = 0
    clock = time.perf_counter_ns
    for _ in range(passes):
        for a in args:
            t0 = clock()
            fn(a)
            out[i] = clock() - t0
            i += 1
    return out


def threaded_throughput(
    fn: Callable[[object], object], args: list, n_threads: int, total_calls: int
) -> float:
    """Calls per second of ``fn`` over ``total_calls`` calls split evenly over Python threads.

    Each thread loops over its own share of the calls (cycling through ``args``); the wall time
    is measured from a barrier release until every thread has joined.
    """
    per = total_calls // n_threads
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        n = len(args)
        barrier.wait()
        try:
            for i in range(per):
                fn(args[(offset + i) % n])
        except BaseException as e:  # pragma: no cover - surfaced below
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(t * (len(args) // n_threads),))
        for t in range(n_threads)
    ]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return per * n_threads / wall


# ---------------------------------------------------------------- machine


def _run(cmd: list[str], cwd: str | None = None) -> str:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def lscpu() -> dict:
    out = _run(["lscpu"])
    info: dict[str, str] = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    keys = [
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "Core(s) per socket",
        "Socket(s)",
        "L1d cache",
        "L1i cache",
        "L2 cache",
        "L3 cache",
        "Hypervisor vendor",
    ]
    return {k: info[k] for k in keys if k in info}


def mem_total() -> str:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s+(\d+) kB", f.read())
        if m:
            return f"{int(m.group(1)) / 2**20:.1f} GiB"
    return "?"


def git_state(repo: str) -> str:
    head = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if not head:
        head = "(no commit yet)"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    untracked = _run(["git", "status", "--porcelain"], cwd=repo)
    if dirty:
        head += " + uncommitted changes"
    elif untracked:
        head += " + untracked files"
    return head


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def fmt_time(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_mb(b: int | None) -> str:
    if b is None:
        return "n/a"
    return f"{b / 2**20:.1f}"


def fmt_ratio(r: float | None) -> str:
    if r is None or not np.isfinite(r):
        return "n/a"
    return f"{r:.2f}x"
