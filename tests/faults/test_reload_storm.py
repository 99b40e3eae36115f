"""1. Reload storm: a new version every 2 s under ~200 requests/s."""

from __future__ import annotations

import threading
import time

from fsupport import (
    LONG,
    ServerProcess,
    calls,
    loadgen,
    metric,
    report,
    republish,
    rss_mb,
    scrape,
    summary,
)
from srv_support import wait_until

DURATION = 600.0 if LONG else 40.0
MEMORY_REF = 60.0 if LONG else 20.0  # "after the first minute"; short form: half-way
RATE = 200.0
EVERY = 2.0


def never_backwards(ok: list[tuple[float, float, int]]) -> int:
    """Calls (start, end, version's index in publishing order) that got an older version than
    some call that had ended before they started: the server went back to an older version."""
    by_end = sorted(ok, key=lambda c: c[1])
    j, newest_ended, backwards = 0, -1, 0
    for start, _, version in sorted(ok):
        # 1 ms: calls closer than that are not clearly one after the other.
        while j < len(by_end) and by_end[j][1] + 0.001 < start:
            newest_ended = max(newest_ended, by_end[j][2])
            j += 1
        backwards += version < newest_ended
    return backwards


def test_reload_storm(artifacts_root, tmp_path):
    """Judged on what was counted, not on how quickly each version was picked up (a busy
    machine loads later; how far behind is reported as ``lagging``): every call OK, every answer
    from a published version, the version never going back between calls one after the other,
    the server ending on the last version published, and resident memory."""
    srv = ServerProcess(
        "--artifacts",
        str(artifacts_root),
        "--store",
        f"sqlite:///{tmp_path}/ev.db",
        "--poll-seconds",
        "0.2",
    ).start()
    try:
        srv.wait_serving()
        pid = srv.proc.pid
        published: list[tuple[float, str]] = []  # (wall time, version) in order
        from recsys_core import artifacts

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
        time.sleep(MEMORY_REF)  # when to take the reference: not a condition
        rss_ref = rss_mb(pid)
        gen.wait(DURATION + 120)
        stop.set()
        pub.join(60)
        last = published[-1][1]
        # The server ends on the last version published (the limit only bounds a hang).
        wait_until(
            lambda: metric(scrape(srv.metrics_url), "recsys_model_info", version=last) == 1,
            f"the server serving the last version {last}",
            every=0.1,
        )
        rss_end = rss_mb(pid)
        cs = [c for c in calls(out) if c[0] >= t0 - 1]
        s = summary(cs)
        order = {v: i for i, (_, v) in enumerate(published)}
        ok = [(w, w + secs, order.get(v, -1)) for w, secs, code, v, *_ in cs if code == "OK"]
        # Reported only: answers from a version older than the one before the newest published
        # when they ended (the server had not yet loaded two newer versions).
        lagging = 0
        for _, end, version in ok:
            newest = max(i for i, (t, _) in enumerate(published) if t <= end)
            lagging += version < newest - 1
        figures = {
            **s,
            "seconds": DURATION,
            "versions_published": len(published) - 1,
            "versions_served": len({c[2] for c in ok}),
            "unpublished_versions": sum(c[2] < 0 for c in ok),
            "backwards": never_backwards(ok),
            "lagging": lagging,
            "rss_ref_mb": round(rss_ref, 1),
            "rss_end_mb": round(rss_end, 1),
            "rss_ratio": round(rss_end / rss_ref, 3),
        }
        report("reload_storm", figures)
        assert s["codes"] == {"OK": len(cs)}, figures
        assert figures["unpublished_versions"] == 0, figures
        assert figures["backwards"] == 0, figures
        # The storm happened under the load: answers came from more than one version.
        assert figures["versions_served"] >= 2, figures
        assert rss_end <= 1.10 * rss_ref, figures
    finally:
        srv.kill()
