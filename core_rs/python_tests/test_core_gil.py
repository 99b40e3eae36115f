"""Every heavy call releases the GIL: another Python thread makes progress during the call.

No timing is measured. The switch interval is raised to 1000 s for the test, so the interpreter
never forces the main thread to hand over the GIL: a pure-Python counting thread can then only
run during a native call if that call released the GIL. The counting thread blocks briefly after
each burst, so the main thread gets the GIL back as soon as the native call returns.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import threading

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import core


@contextlib.contextmanager
def _counting_thread():
    counter = [0]
    stop = threading.Event()
    started = threading.Event()
    pause = threading.Event()  # never set: waiting on it just blocks (releasing the GIL)

    def spin():
        started.set()
        while not stop.is_set():
            for _ in range(200):
                counter[0] += 1
            pause.wait(0.0002)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    thread = threading.Thread(target=spin, daemon=True)
    try:
        thread.start()
        started.wait()
        yield counter
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)


def _progress_during(call, attempts=10) -> int:
    """In how many of `attempts` calls the counting thread advanced while `call` ran."""
    progressed = 0
    with _counting_thread() as counter:
        for _ in range(attempts):
            before = counter[0]
            call()
            after = counter[0]
            progressed += after > before
    return progressed


def _single_thread_kw(fn):
    # One worker thread leaves a core free for the counting thread (the machine may have 2).
    return {"num_threads": 1} if "num_threads" in inspect.signature(fn).parameters else {}


@pytest.fixture(scope="module")
def rc():
    return core()


@pytest.fixture(scope="module")
def big_factors():
    return np.random.default_rng(0).random((400_000, 64), dtype=np.float32)


def test_control_pure_python_call_does_not_let_the_thread_run():
    """The setup itself: a call that holds the GIL shows no progress."""

    def busy():
        total = 0
        for i in range(200_000):
            total += i
        return total

    assert _progress_during(busy, attempts=3) == 0


def test_dense_recommend_releases_gil(rc, big_factors):
    scorer = rc.DenseScorer(big_factors)
    user = np.ones(64, dtype=np.float32)
    kw = _single_thread_kw(scorer.recommend)
    assert _progress_during(lambda: scorer.recommend(user, 10, **kw)) > 0


def test_dense_recommend_batch_releases_gil(rc, big_factors):
    scorer = rc.DenseScorer(big_factors[:100_000])
    users = np.ones((16, 64), dtype=np.float32)
    assert _progress_during(lambda: scorer.recommend_batch(users, 10, num_threads=1)) > 0


def test_stream_read_releases_gil(rc, big_factors):
    assert _progress_during(lambda: rc.stream_read(big_factors, num_threads=1)) > 0


@pytest.fixture(scope="module")
def big_sparse():
    return sp.random(
        3000,
        3000,
        density=0.02,
        format="csr",
        dtype=np.float32,
        random_state=np.random.default_rng(1),
    )


def test_similarity_releases_gil(rc, big_sparse):
    x = big_sparse
    assert _progress_during(lambda: rc.similarity_topk(x, 20, num_threads=1), attempts=3) > 0


def test_sparse_recommend_batch_releases_gil(rc, big_sparse):
    scorer = rc.SparseScorer(big_sparse)
    hist = big_sparse[:2000]
    assert _progress_during(lambda: scorer.recommend_batch(hist, 10, num_threads=1)) > 0


def test_concurrent_calls_from_python_threads_agree_with_sequential(rc):
    """The scorers keep per-thread scratch space: many Python threads calling the same scorer
    at once (the GIL is released) get exactly the sequential results."""
    rng = np.random.default_rng(4)
    n = 3000
    nb = sp.random(n, n, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    sparse = rc.SparseScorer(nb)
    other = rc.SparseScorer(nb[:500, :700])  # a smaller model sharing the thread's scratch
    dense = rc.DenseScorer(rng.standard_normal((20_000, 32)).astype(np.float32))
    hists = [rng.integers(0, n, size=rng.integers(0, 30)) for _ in range(64)]
    users = rng.standard_normal((64, 32)).astype(np.float32)

    def run(u):
        a = sparse.recommend(hists[u], None, 20, explain=2)
        b = other.recommend(hists[u] % 500, None, 5, exclude_history=False)
        c = dense.recommend(users[u], 20)
        return [*a[:2], *a.explanations, *b[:2], *c[:2]]

    expected = [run(u) for u in range(64)]
    results = [None] * 64

    def worker(offset):
        for u in range(offset, 64, 4):
            results[u] = run(u)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for u in range(64):
        for x, y in zip(results[u], expected[u], strict=True):
            np.testing.assert_array_equal(x, y)
