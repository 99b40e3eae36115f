"""SIGKILL one of two replicas under load: the SDK client's failed calls with and without retries.

    python clients/bench/replica_kill.py --artifacts var/artifacts [--kills 5] [--threads 4]

Each kill: two ``recsys-serve`` processes on free loopback ports (same artifacts, a SQLite store
each), one RecsysClient given both addresses, ``--threads`` threads calling Recommend without
pause; once each replica has answered 100 calls (its own metrics), one is SIGKILLed and the load
runs ``--after`` seconds more. Printed per setting: failed calls per kill and calls answered.
The baseline is ``retries=0``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from recsys_client import RecsysClient, RecsysError

LISTENING = re.compile(r"listening on (\S+) .*metrics (http://\S+/metrics)")
ANSWERED = re.compile(
    r'recsys_requests_total\{(?=[^}]*code="OK")(?=[^}]*method="Recommend")[^}]*\} (\S+)'
)


class Replica:
    def __init__(self, artifacts: Path, store: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_server.app", "--port", "0", "--metrics-port", "0",
             "--artifacts", str(artifacts), "--store", f"sqlite:///{store}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = LISTENING.search(line)
            if m:
                self.address, self.metrics = m.group(1), m.group(2)
                return
        raise RuntimeError("recsys-serve did not start")

    def wait_serving(self) -> None:
        """Until health says SERVING (it listens before its models are loaded)."""
        with RecsysClient(self.address, timeout=5) as c:
            while c.health() != "SERVING":
                time.sleep(0.1)

    def answered(self) -> int:
        with urllib.request.urlopen(self.metrics, timeout=10) as r:
            m = ANSWERED.search(r.read().decode())
        return int(float(m.group(1))) if m else 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def one_kill(artifacts: Path, retries: int, threads: int, after: float) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = (Replica(artifacts, Path(tmp) / f"store-{n}.db") for n in range(2))
        a.wait_serving()
        b.wait_serving()
        client = RecsysClient([a.address, b.address], timeout=5, retries=retries)
        failed, ok = 0, 0
        lock, stop = threading.Lock(), threading.Event()

        def load(t: int) -> None:
            nonlocal failed, ok
            n = 0
            while not stop.is_set():
                try:
                    client.recommend(f"bench-{t}-{n % 50}", k=10)
                except RecsysError:
                    with lock:
                        failed += 1
                else:
                    with lock:
                        ok += 1
                n += 1

        workers = [threading.Thread(target=load, args=(t,)) for t in range(threads)]
        try:
            for w in workers:
                w.start()
            while a.answered() < 100 or b.answered() < 100:
                time.sleep(0.02)
            a.kill()
            time.sleep(after)
        finally:
            stop.set()
            for w in workers:
                w.join(30)
            client.close()
            a.kill()
            b.kill()
        return failed, ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--after", type=float, default=2.0, help="seconds of load after the kill")
    args = p.parse_args()
    totals = {}
    for retries in (0, 3):
        runs = [
            one_kill(args.artifacts, retries, args.threads, args.after) for _ in range(args.kills)
        ]
        totals[retries] = sum(f for f, _ in runs)
        label = "retries=0 (baseline)" if retries == 0 else f"retries={retries}"
        print(f"{label}: failed calls per kill {[f for f, _ in runs]}, "
              f"answered {[o for _, o in runs]}", flush=True)  # fmt: skip
    print(f"failed calls over {args.kills} kills: {totals[3]} with retries vs {totals[0]} without")


if __name__ == "__main__":
    main()
