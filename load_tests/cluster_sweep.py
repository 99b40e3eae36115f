"""Capacity through the balancer: one run sweeps the local cluster (deploy/local/cluster.sh)
with 1 replica, then with 2, under Locust through nginx, then SIGKILLs a replica under load.

    python load_tests/cluster_sweep.py [--artifacts DIR | --data FILE] [--replicas 1,2]
        [--start 200 --step 100 --max-rate 3000 --step-duration 15s --budget-ms 100]
        [--kill-rate R --kill-duration 30s --kill-at 10s] [--out FILE]

Each replica count gets its own `cluster.sh up` on one state directory (the artifacts and the
PostgreSQL data are kept between them; the refresh loop is off so no training competes with
the load). A sweep raises the offered rate (`RecsysUser`, the default mix, as sweep.py) until a
step misses the budget: every p99 < ``--budget-ms``, no failed call, at least 90 % of the rate
achieved. A step that misses is run again (``--confirm`` times, default once) before the
sweep stops: the machine is shared, and one noisy step should not end a sweep. The highest rate
with every rate up to it held is the capacity; the report gives each count's and their ratio
against ``--target-ratio`` (1.3). After each up, ``--warmup`` (10 s) of load is not measured.

Then, with the last replica count still up, a load at ``--kill-rate`` (default: the 1-replica
capacity) runs for ``--kill-duration`` with Locust's users retrying UNAVAILABLE as the SDK
does (RECSYS_LOAD_RETRIES=3), and replica 1 gets SIGKILL at ``--kill-at``: the report gives
the calls that failed after retries, how many calls were retried (what a client without
retries would have seen fail) and the survivor's throughput after the kill.

Everything runs on this machine: Locust, nginx, the replicas and PostgreSQL share its cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # load_tests/run.py
import sweep as single  # load_tests/sweep.py

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "local" / "cluster.sh"


class Procs:
    """CPU time of several processes as one (`harness.run_locust` measures a "server"); a
    process that died keeps its last reading."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.last: dict[int, tuple[float, float]] = {}

    def cpu_times(self) -> SimpleNamespace:
        for p in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                for q in [p, *p.children(recursive=True)]:
                    t = q.cpu_times()
                    self.last[q.pid] = (t.user, t.system)
        return SimpleNamespace(
            user=sum(u for u, _ in self.last.values()),
            system=sum(s for _, s in self.last.values()),
        )


@dataclass
class Up:
    """A running cluster: addresses from DIR/ports, pids from DIR/run."""

    dir: Path
    nginx: str
    replicas: list[str]
    metrics: list[str]
    pids: dict[str, int]

    @classmethod
    def read(cls, state: Path) -> Up:
        ports = (state / "ports").read_text().split()
        n = (len(ports) - 2) // 2
        pids = {
            f.stem: int(f.read_text().split()[0]) for f in (state / "run").glob("*.pid")
        }  # fmt: skip
        return cls(
            state,
            f"127.0.0.1:{ports[0]}",
            [f"127.0.0.1:{ports[2 * i]}" for i in range(1, n + 1)],
            [f"http://127.0.0.1:{ports[2 * i + 1]}/metrics" for i in range(1, n + 1)],
            pids,
        )


@dataclass
class Sweep:
    replicas: int
    steps: list[single.Step] = field(default_factory=list)
    nginx_cpu: list[float] = field(default_factory=list)  # % of one core per step

    @property
    def highest(self) -> single.Step | None:
        """The highest rate with every rate up to it held (a rate counts as held when one of
        its attempts held: a missed step is repeated ``--confirm`` times)."""
        held: dict[float, single.Step] = {}
        for s in self.steps:
            if not s.problems():
                held.setdefault(s.rate, s)
        best = None
        for rate in dict.fromkeys(s.rate for s in self.steps):
            if rate not in held:
                break
            best = held[rate]
        return best


@dataclass
class Kill:
    rate: float
    duration: float
    at: float
    run: harness.LocustRun
    survivor_rate: float  # OK calls/s the survivor answered after the kill
    survivor_window: float


def cluster(*args: str) -> str:
    env = {**os.environ, "RECSYS_PYTHON": sys.executable}
    out = subprocess.run(["bash", str(CLUSTER), *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cluster.sh {args[0]} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def ok_calls(url: str) -> float:
    """Every call the replica answered OK (recsys_requests_total, all methods)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("recsys_requests_total{") and 'code="OK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(a, state: Path, up: Up, replicas: Procs, nginx: Procs, n: int, rate: float, tag: str):
    """One step: Locust through nginx at ``rate``; (the step, nginx's CPU %)."""
    ns, users = single.step_args(a, rate)
    d = state / "sweep" / f"r{n}-step{tag}"
    d.mkdir(parents=True)
    t0, c0 = time.monotonic(), harness.cpu_s(nginx)  # type: ignore[arg-type]
    run = harness.run_locust(ns, up.nginx, replicas, "RecsysUser", a.duration, str(d))  # type: ignore[arg-type]
    ngx = (harness.cpu_s(nginx) - c0) / (time.monotonic() - t0) * 100  # type: ignore[arg-type]
    step = single.Step(rate, users, run, a.budget_ms)
    rec = step.row("Recommend")
    print(
        f"  {n} replica(s) {rate:6g}/s achieved={step.achieved:7.1f}/s "
        + (f"Recommend p50={rec.p50:6.2f} p99={rec.p99:7.2f} ms " if rec else "")
        + f"fail={step.failures} replicas CPU {run.server_cpu_pct:3.0f}% "
        f"nginx CPU {ngx:3.0f}% locust CPU {run.locust_cpu_pct:3.0f}% "
        + ("ok" if not step.problems() else "OVER: " + "; ".join(step.problems())),
        flush=True,
    )
    return step, ngx


def run_sweep(a: argparse.Namespace, state: Path, n: int) -> Sweep:
    up_args = ["up", "--dir", str(state), "--replicas", str(n), "--port-base", "0"]
    up_args += ["--refresh-every", "off", "--max-inflight", str(a.max_inflight)]
    if a.data:
        up_args += ["--data", a.data]
    print(f"[cluster-sweep] {n} replica(s): cluster.sh up", flush=True)
    cluster(*up_args)
    up = Up.read(state)
    result = Sweep(n)
    replicas = Procs([up.pids[f"replica{i}"] for i in range(1, n + 1)])
    nginx = Procs([up.pids["nginx"]])
    try:
        if a.warmup > 0:  # first calls after a start are slower (cold caches): not measured
            ns, _ = single.step_args(a, a.start)
            (state / "sweep" / f"r{n}-warmup").mkdir(parents=True)
            harness.run_locust(
                ns,
                up.nginx,
                replicas,
                "RecsysUser",
                a.warmup,
                str(state / "sweep" / f"r{n}-warmup"),  # type: ignore[arg-type]
            )
        for k, rate in enumerate(single.rates(a)):
            for attempt in range(1 + a.confirm):
                step, ngx = measure(a, state, up, replicas, nginx, n, rate, f"{k}-{attempt}")
                result.steps.append(step)
                result.nginx_cpu.append(ngx)
                if not step.problems():
                    break
            if step.problems():
                break
    except BaseException:
        cluster("down", "--dir", str(state))
        raise
    return result


def run_kill(a: argparse.Namespace, state: Path, rate: float) -> Kill:
    """With the cluster still up: a retrying load through nginx, replica 1 SIGKILLed."""
    up = Up.read(state)
    ns, _ = single.step_args(a, rate)
    d = state / "sweep" / "kill"
    d.mkdir(parents=True)
    survivor = up.metrics[1]
    replicas = Procs([up.pids[f"replica{i}"] for i in range(1, len(up.replicas) + 1)])
    box: dict[str, harness.LocustRun] = {}
    os.environ["RECSYS_LOAD_RETRIES"] = "3"
    try:
        worker = threading.Thread(
            target=lambda: box.setdefault(
                "run",
                harness.run_locust(ns, up.nginx, replicas, "RecsysUser", a.kill_duration, str(d)),  # type: ignore[arg-type]
            )
        )
        worker.start()
        # Locust takes a few seconds to import before the load starts (run.py's window).
        time.sleep(a.kill_at + 3)
        os.kill(up.pids["replica1"], signal.SIGKILL)
        print(f"[cluster-sweep] SIGKILL replica1 (pid {up.pids['replica1']})", flush=True)
        time.sleep(1)
        t0, c0 = time.monotonic(), ok_calls(survivor)
        worker.join(timeout=a.kill_duration + 120)
        t1, c1 = time.monotonic(), ok_calls(survivor)
    finally:
        os.environ.pop("RECSYS_LOAD_RETRIES", None)
    # The survivor's window ends when Locust does; Locust's own stop is within a second of it.
    window = min(t1 - t0, a.kill_duration - a.kill_at - 1)
    return Kill(rate, a.kill_duration, a.kill_at, box["run"], (c1 - c0) / max(window, 1e-9), window)


def fmt(x: float) -> str:
    return f"{x:.2f}"


def report(a: argparse.Namespace, sweeps: list[Sweep], kill: Kill | None, when, cmd) -> str:
    his = {s.replicas: s.highest for s in sweeps}
    one, two = his.get(1), his.get(max(his))
    ratio = two.rate / one.rate if one and two and max(his) > 1 else None
    lines = ["## Local cluster: capacity through nginx", ""]
    for s in sweeps:
        hi = s.highest
        lines.append(
            f"- **{s.replicas} replica{'s' if s.replicas > 1 else ''}: "
            + (f"{hi.rate:g} calls/s**" if hi else "no step held the budget**")
            + f" (highest offered rate with p99 < {a.budget_ms:g} ms and zero failures)."
        )
    if ratio is not None:
        lines.append(
            f"- **Ratio {max(his)} : 1 replica = {ratio:.2f}x** (target >= {a.target_ratio:g}x: "
            f"{'met' if ratio >= a.target_ratio else '**missed**'})."
        )
    lines += [
        "",
        f"Date: {when:%Y-%m-%d %H:%M:%S} UTC. Machine: {platform.node()}, {os.cpu_count()} "
        f"logical CPUs, Python {platform.python_version()}. Locust (1 process), nginx (1 "
        "worker), the replicas and PostgreSQL all share these cores. Each step: "
        f"{a.duration:g} s of `RecsysUser` (the default mix) through nginx at "
        f"{a.rps_per_user:g} calls/s per user. Load average (1 min) at the start "
        f"{a.load_before:.1f}, at the end {os.getloadavg()[0]:.1f}: other work on the machine "
        "takes cores from the run too.",
        "",
        "```bash",
        cmd,
        "```",
        "",
        "| replicas | offered calls/s | achieved calls/s | Recommend p50 ms | Recommend p99 ms "
        "| worst p99 ms (RPC) | failed | replicas CPU % | nginx CPU % | Locust CPU % | budget |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in sweeps:
        for st, ngx in zip(s.steps, s.nginx_cpu, strict=True):
            rec, worst = st.row("Recommend"), st.worst
            lines.append(
                f"| {s.replicas} | {st.rate:g} | {st.achieved:.1f} | "
                + (f"{fmt(rec.p50)} | {fmt(rec.p99)} | " if rec else "- | - | ")
                + (f"{fmt(worst.p99)} ({worst.name}) | " if worst else "- | ")
                + f"{st.failures} | {st.run.server_cpu_pct:.0f} | {ngx:.0f} | "
                f"{st.run.locust_cpu_pct:.0f} | "
                + ("ok" if not st.problems() else "**over**: " + "; ".join(st.problems()))
                + " |"
            )
    lines += [
        "",
        "CPU in % of one core over the step's load window (replicas: all of them together). "
        "A rate listed twice was run again after missing the budget (`--confirm`).",
    ]
    if kill is not None:
        rows = {r.name: r for r in kill.run.rows}
        calls = [r for n, r in rows.items() if not n.startswith("retry ")]
        retried = sum(r.count for n, r in rows.items() if n.startswith("retry "))
        failed = sum(r.failures for r in calls)
        total = sum(r.count for r in calls)
        rec = rows.get("Recommend")
        lines += [
            "",
            f"### SIGKILL of one replica under {kill.rate:g} calls/s",
            "",
            f"{kill.duration:g} s of the same mix through nginx with {sweeps[-1].replicas} "
            f"replicas; replica 1 got SIGKILL about {kill.at:g} s into the load. Locust's users "
            "retry UNAVAILABLE like the SDK (3 retries, its backoff; every call of the mix is "
            "idempotent).",
            "",
            f"- **Failed calls after retries: {failed}** of {total}.",
            f"- Calls retried (what a client without retries would have seen fail): {retried}.",
            f"- Survivor: {kill.survivor_rate:.0f} OK calls/s over the {kill.survivor_window:.0f}"
            f" s after the kill; offered {kill.rate:g}, achieved by Locust over the whole run "
            f"{sum(r.rps for r in calls):.0f} calls/s.",
            (
                f"- Recommend over the whole run: p50 {fmt(rec.p50)} ms, p99 {fmt(rec.p99)} ms, "
                f"max {fmt(rec.max)} ms."
                if rec
                else "- no Recommend calls recorded"
            ),
        ]
        if kill.run.errors:
            lines += [
                f"- error: {n}: {' '.join(e.split())[:200]} (x{c})" for n, e, c in kill.run.errors
            ]
    lines += [
        "",
        "What these numbers say, with the CPU arithmetic and the earlier runs: docs/replicas.md,"
        ' "Capacity through the balancer".',
    ]
    return "\n".join(lines) + "\n"


SECTION = "## Local cluster"


def write_section(path: Path, text: str) -> None:
    """Writes the report as the last section of ``path`` (docs/load-test.md: sweep.py's report
    above it is kept, an earlier local-cluster section is replaced)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    head = old.split("\n" + SECTION, 1)[0].rstrip("\n")
    path.write_text((head + "\n\n" if head else "") + text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--artifacts", help="a trained artifacts dir to copy (its latest version)")
    src.add_argument("--data", help="interactions to train on (cluster.sh --data)")
    ap.add_argument("--replicas", default="1,2", help="replica counts, in order")
    ap.add_argument("--start", type=float, default=200)
    ap.add_argument("--step", type=float, default=100)
    ap.add_argument("--max-rate", type=float, default=3000)
    ap.add_argument("--step-duration", dest="duration", type=harness.parse_duration, default="15s")
    ap.add_argument("--rps-per-user", type=float, default=10.0)
    ap.add_argument(
        "--warmup", type=harness.parse_duration, default="10s",
        help="unmeasured load at --start after each up",
    )  # fmt: skip
    ap.add_argument(
        "--confirm", type=int, default=1,
        help="times a step that misses the budget is run again before the sweep stops",
    )  # fmt: skip
    ap.add_argument("--budget-ms", type=float, default=100.0)
    ap.add_argument("--target-ratio", type=float, default=1.3)
    ap.add_argument("--max-inflight", type=int, default=256, help="nginx's admission limit")
    ap.add_argument("--kill-rate", type=float, help="default: the 1-replica capacity")
    ap.add_argument("--kill-duration", type=harness.parse_duration, default="30s")
    ap.add_argument("--kill-at", type=harness.parse_duration, default="10s")
    ap.add_argument("--no-kill", action="store_true")
    ap.add_argument("--weights", default=os.environ.get("RECSYS_LOAD_WEIGHTS"))
    ap.add_argument("--processes", type=int, default=1, help="Locust processes")
    ap.add_argument(
        "--out", default="",
        help="Markdown file whose last section (from '## Local cluster') this run replaces, "
        "e.g. docs/load-test.md",
    )  # fmt: skip
    a = ap.parse_args()
    counts = [int(x) for x in a.replicas.split(",")]
    a.target_rate = 0  # sweep.rates: no extra target step
    cmd = shlex.join(["python", "load_tests/cluster_sweep.py", *sys.argv[1:]])
    when = datetime.now(UTC)
    a.load_before = os.getloadavg()[0]
    sweeps: list[Sweep] = []
    kill = None
    with tempfile.TemporaryDirectory(prefix="recsys-cluster-sweep-") as tmp:
        state = Path(tmp) / "cluster"
        if a.artifacts:
            src_root = Path(a.artifacts).resolve()
            from recsys_core.artifacts import latest_version

            version = latest_version(src_root)
            if version is None:
                raise SystemExit(f"--artifacts {src_root}: no version")
            (state / "artifacts").mkdir(parents=True)
            shutil.copytree(src_root / version, state / "artifacts" / version)
            (state / "artifacts" / "latest").write_text(version + "\n")
        a.artifacts = str(state / "artifacts")  # the locustfile draws its ids from here
        try:
            for i, n in enumerate(counts):
                sweeps.append(run_sweep(a, state, n))
                last = i == len(counts) - 1
                if last and not a.no_kill and n > 1:
                    one = next((s.highest for s in sweeps if s.replicas == 1), None)
                    rate = a.kill_rate or (one.rate if one else a.start)
                    kill = run_kill(a, state, rate)
                cluster("down", "--dir", str(state))
        finally:
            cluster("down", "--dir", str(state), "--purge")
    text = report(a, sweeps, kill, when, cmd)
    print(text)
    if a.out:
        write_section(Path(a.out), text)
    return 0 if all(s.highest for s in sweeps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
