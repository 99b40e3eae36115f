"""1. Reload storm: a new version every 2 s under ~200 requests/s."""

from __future__ import annotations

import threading
import time

from fsupport import LONG, ServerProcess, calls, loadgen, report, republish, rss_mb, summary

DURATION = 600.0 if LONG else 40.0
MEMORY_REF = 60.0 if LONG else 20.0  # "after the first minute"; short form: half-way
RATE = 200.0
EVERY = 2.0


def test_reload_storm(artifacts_root, tmp_path):
    srv = ServerProcess(
        "--artifacts",
        str(artifacts_root),
        "--log-dir",
        str(tmp_path / "ev"),
        "--poll-seconds",
        "0.2",
    ).start()
    try:
        srv.wait_serving()
        pid = srv.proc.pid
        published: list[tuple[float, str]] = []  # (wall time, version) in order
        from recsys_trainer import artifacts

        published.append((0.0, artifacts.latest_version(artifacts_root)))
        stop = threading.Event()

        def publisher() -> None:
            # On a fixed schedule (one every EVERY seconds from the start), so the time each
            # publish takes does not stretch the interval.
            first = time.monotonic()
            n = 1
            while not stop.wait(max(0.0, first + n * EVERY - time.monotonic())):
                started = time.time()  # it cannot be served before this
                path = republish(artifacts_root, keep=4)
                published.append((started, path.name))
                n += 1

        out = tmp_path / "calls.json"
        gen = loadgen(srv.address, out, rate=RATE, duration=DURATION, timeout=5)
        t0 = time.time()
        pub = threading.Thread(target=publisher, daemon=True)
        pub.start()
        time.sleep(MEMORY_REF)
        rss_ref = rss_mb(pid)
        gen.wait(DURATION + 120)
        stop.set()
        pub.join(30)
        rss_end = rss_mb(pid)
        cs = [c for c in calls(out) if c[0] >= t0 - 1]
        s = summary(cs)
        # A response's version must be the newest published when it was answered, or the one
        # before it (the newest may still be loading).
        order = {v: i for i, (_, v) in enumerate(published)}
        stale = 0
        for wall, secs, code, version, *_ in cs:
            if code != "OK":
                continue
            done = wall + secs
            newest = max(i for i, (t, _) in enumerate(published) if t <= done)
            if order.get(version, -99) not in (newest, newest - 1):
                stale += 1
        figures = {
            **s,
            "seconds": DURATION,
            "versions_published": len(published) - 1,
            "stale_versions": stale,
            "rss_ref_mb": round(rss_ref, 1),
            "rss_end_mb": round(rss_end, 1),
            "rss_ratio": round(rss_end / rss_ref, 3),
        }
        report("reload_storm", figures)
        assert s["codes"] == {"OK": len(cs)}, figures
        assert s["ok_p99_ms"] < 100, figures
        assert stale == 0, figures
        assert rss_end <= 1.10 * rss_ref, figures
        assert len(published) - 1 >= DURATION / EVERY - 3
    finally:
        srv.kill()
