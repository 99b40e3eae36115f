"""One-command load test of a real `recsys-serve` process, with a pass/fail latency budget.

    python load_tests/run.py --artifacts DIR [--users 20 --spawn-rate 20 --duration 30s
                                              --budget-ms 100 --out /tmp/load-test.md]

Starts the server on free ports, runs Locust headless (`RecsysUser`, load_tests/locustfile.py)
as a subprocess while measuring the CPU time of both processes and the server's own handling
time, then a short floor run of `HealthUser` (grpc.health.v1 Check only) at the same
concurrency and pacing. Prints a summary, writes a Markdown report (``--out``) and exits 1
when the budget is missed: p99 >= budget for any RPC type, any failed
request, or an RPC type of the mix that was never called. Exit 2: the run itself broke.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
# Task weight name -> the RPC it calls (see locustfile.py).
TASK_RPC = {
    "recommend": "Recommend",
    "cold": "Recommend",
    "anon": "Recommend",
    "similar": "SimilarItems",
    "record": "RecordInteractions",
    "batch": "RecommendBatch",
}
SATURATED = 90.0  # % of one core
DEFAULT_WEIGHTS = "recommend=70,cold=8,anon=7,similar=8,record=5,batch=2 (default)"


@dataclass
class Row:
    name: str
    count: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float
    max: float
    exact: bool  # percentiles from exact latencies (else Locust's rounded ones)


@dataclass
class LocustRun:
    user_class: str
    cmd: list[str]
    rows: list[Row]
    errors: list[tuple[str, str, int]]
    server_cpu_pct: float  # mean over the load window, % of one core
    server_cpu_peak: float  # highest ~1 s sample
    locust_cpu_pct: float
    locust_cpu_peak: float
    server_cpu_s: float  # whole Locust lifetime
    locust_cpu_s: float
    wall_s: float
    returncode: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    server_side: dict[str, ServerSide] = field(default_factory=dict)


@dataclass
class ServerSide:
    """The server's own handling time of one method over a run, from the deltas of its
    `recsys_request_duration_seconds` histogram: the mean is exact, the quantiles are
    interpolated within the buckets (1, 2.5, 5, 10, 25, ... ms) like histogram_quantile."""

    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float


def scrape_durations(url: str | None) -> dict[str, dict[str, float]]:
    """method -> {"sum": s, "count": n, <le>: cumulative count} from the metrics endpoint."""
    out: dict[str, dict[str, float]] = {}
    if not url:
        return out
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for fam in text_string_to_metric_families(text):
        if fam.name != "recsys_request_duration_seconds":
            continue
        for smp in fam.samples:
            d = out.setdefault(smp.labels["method"], {})
            if smp.name.endswith("_bucket"):
                d[smp.labels["le"]] = smp.value
            elif smp.name.endswith("_sum"):
                d["sum"] = smp.value
            elif smp.name.endswith("_count"):
                d["count"] = smp.value
    return out


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over (upper bound, cumulative count) pairs, in ms."""
    total = buckets[-1][1]
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le * 1000  # beyond the last finite bucket: its bound
            return (prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)) * 1000
        prev_le, prev_c = le, c
    return float("nan")


def server_side(before: dict, after: dict) -> dict[str, ServerSide]:
    out = {}
    for method, a in after.items():
        b = before.get(method, {})
        n = a.get("count", 0) - b.get("count", 0)
        if n <= 0:
            continue
        les = sorted((float(k), a[k] - b.get(k, 0.0)) for k in a if k not in ("sum", "count"))
        out[method] = ServerSide(
            int(n),
            (a["sum"] - b.get("sum", 0.0)) / n * 1000,
            bucket_quantile(0.5, les),
            bucket_quantile(0.99, les),
        )
    return out


def parse_duration(text: str) -> float:
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)([hms]?)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 30s, 1m30s)")
    return total


def expected_rpcs(weights: str) -> set[str]:
    w = {k: 1 for k in TASK_RPC}  # every default weight is > 0
    for part in filter(None, (p.strip() for p in weights.split(","))):
        k, _, v = part.partition("=")
        if k.strip() in w and v.strip().isdigit():
            w[k.strip()] = int(v)
    return {TASK_RPC[k] for k, v in w.items() if v > 0}


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def tree_cpu_s(p: psutil.Process, seen: dict[int, float]) -> float:
    """CPU seconds of a process and its descendants (Locust's --processes workers); ``seen``
    keeps each process's last reading, so one that exits still counts."""
    for proc in [p, *p.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            seen[proc.pid] = cpu_s(proc)
    return sum(seen.values())


def read_samples(path: str) -> dict[str, list[float]]:
    """Exact latencies: one JSON file per Locust process (``path.<pid>``), merged."""
    merged: dict[str, list[float]] = {}
    for f in sorted(Path(path).parent.glob(Path(path).name + ".*")):
        for name, values in json.loads(f.read_text()).items():
            merged.setdefault(name, []).extend(values)
    return merged


def start_server(artifacts: str, tmp: str) -> tuple[subprocess.Popen[str], str, str]:
    """A `recsys-serve` on free ports: (process, gRPC address, metrics URL)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recsys_server.app",
            "--artifacts",
            artifacts,
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--store",
            f"sqlite:///{tmp}/events.db",
        ],
        stdout=subprocess.PIPE,
        stderr=open(f"{tmp}/server.log", "w"),  # noqa: SIM115
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    url = re.search(r"metrics (http://\S+/metrics)", line)
    if m is None:
        proc.kill()
        log = Path(f"{tmp}/server.log").read_text()[-2000:]
        raise SystemExit(f"run.py: the server did not start:\n{log}")
    address = m.group(1)
    with grpc.insecure_channel(address) as ch:
        health, deadline = health_pb2_grpc.HealthStub(ch), time.monotonic() + 60
        while True:
            try:
                st = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if st == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("run.py: the server never reported SERVING")
            time.sleep(0.1)
    return proc, address, url.group(1) if url else ""


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (a graceful stop), SIGKILL if it is still running 30 s later."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def read_stats(prefix: str, samples: dict[str, list[float]]) -> list[Row]:
    rows = []
    with open(f"{prefix}_stats.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["Name"] == "Aggregated":
                continue
            exact = samples.get(r["Name"])
            if exact:
                p50, p95, p99 = (float(x) for x in np.percentile(exact, [50, 95, 99]))
                mx = max(exact)
            else:
                p50, p95, p99 = (float(r[c]) for c in ("50%", "95%", "99%"))
                mx = float(r["Max Response Time"])
            rows.append(
                Row(
                    r["Name"],
                    int(r["Request Count"]),
                    int(r["Failure Count"]),
                    float(r["Requests/s"]),
                    p50,
                    p95,
                    p99,
                    mx,
                    bool(exact),
                )
            )
    return rows


def read_errors(prefix: str) -> list[tuple[str, str, int]]:
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [(r["Name"], r["Error"], int(r["Occurrences"])) for r in csv.DictReader(f)]


def run_locust(
    a: argparse.Namespace,
    address: str,
    server: psutil.Process,
    user_class: str,
    duration: float,
    tmp: str,
    metrics_url: str | None = None,
) -> LocustRun:
    prefix = f"{tmp}/{user_class}"
    samples_path = f"{tmp}/{user_class}_samples.json"
    env = dict(
        os.environ,
        RECSYS_ARTIFACTS=a.artifacts,
        RECSYS_LOAD_SAMPLES=samples_path,
        RECSYS_LOAD_RPS_PER_USER=str(a.rps_per_user),
    )
    if a.weights is not None:
        env["RECSYS_LOAD_WEIGHTS"] = a.weights
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(a.users),
        "-r",
        f"{a.spawn_rate:g}",
        "-t",
        f"{duration:g}s",
        "--csv",
        prefix,
        "--host",
        address,
        "--only-summary",
        *(["--processes", str(a.processes)] if getattr(a, "processes", 1) > 1 else []),
        user_class,
    ]
    log = open(f"{prefix}.log", "w")  # noqa: SIM115
    hist0 = scrape_durations(metrics_url)
    t0, s0 = time.monotonic(), cpu_s(server)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    lp = psutil.Process(proc.pid)
    series: list[tuple[float, float, float]] = []  # (t, server cpu s, locust cpu s)
    seen: dict[int, float] = {}
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        with contextlib.suppress(psutil.NoSuchProcess):
            series.append((time.monotonic(), cpu_s(server), tree_cpu_s(lp, seen)))
        time.sleep(0.5)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    # Exact, incl. startup (and the workers the master waited for); else the last sample.
    locust_cpu = max(rusage.ru_utime + rusage.ru_stime, series[-1][2] if series else 0.0)
    server_cpu = cpu_s(server) - s0
    hist1 = scrape_durations(metrics_url)
    # The load window: the last `duration` seconds of Locust's life (before that it imports).
    win = [s for s in series if s[0] >= series[-1][0] - duration] if series else []

    def pct(i: int) -> tuple[float, float]:
        if len(win) < 2:
            return float("nan"), float("nan")
        mean = (win[-1][i] - win[0][i]) / (win[-1][0] - win[0][0]) * 100
        steps = [(b[i] - a_[i]) / (b[0] - a_[0]) * 100 for a_, b in itertools.pairwise(win)]
        return mean, max(steps)

    (sm, sp), (lm, lpk) = pct(1), pct(2)
    if not Path(f"{prefix}_stats.csv").exists():
        out = Path(f"{prefix}.log").read_text()[-3000:]
        raise SystemExit(f"run.py: locust ({user_class}) wrote no stats; its output:\n{out}")
    samples = read_samples(samples_path)
    return LocustRun(
        user_class,
        cmd,
        read_stats(prefix, samples),
        read_errors(prefix),
        sm,
        sp,
        lm,
        lpk,
        server_cpu,
        locust_cpu,
        wall,
        proc.returncode,
        samples,
        server_side(hist0, hist1),
    )


def server_cells(s: ServerSide | None) -> str:
    if s is None:
        return "- | - | -"
    return f"{s.mean_ms:.2f} | {s.p50_ms:.2f} | {s.p99_ms:.2f}"


def side(mean: float, peak: float) -> str:
    return "**saturated**" if mean > SATURATED else ("busy at peak" if peak > SATURATED else "ok")


def report(
    a: argparse.Namespace,
    main: LocustRun,
    floor: LocustRun,
    problems: list[str],
    when: datetime,
    command: str,
) -> str:
    ok = not problems
    lines = [
        "# Load test: recsys-serve under Locust",
        "",
        f"**Result: {'PASS' if ok else 'FAIL'}** — budget p99 < {a.budget_ms:g} ms for every "
        "RPC type and zero failed requests.",
    ]
    lines += [f"- {p}" for p in problems]
    total = sum(r.count for r in main.rows)
    fails = sum(r.failures for r in main.rows)
    lines += [
        "",
        f"Date: {when:%Y-%m-%d %H:%M:%S} UTC. Machine: {platform.node()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}.",
        f"Load: {a.users} users (spawn rate {a.spawn_rate:g}/s) for {a.duration_s:g} s, target "
        f"{a.rps_per_user:g} calls/s per user ("
        + ("unpaced" if a.rps_per_user <= 0 else f"{a.users * a.rps_per_user:g} calls/s total")
        + f"); task weights `{a.weights or DEFAULT_WEIGHTS}`; "
        f"{a.processes} Locust process{'es' if a.processes > 1 else ''}.",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"## Per RPC type ({total} requests, {fails} failed, "
        f"{sum(r.rps for r in main.rows):.1f} req/s)",
        "",
        "| RPC | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms | p99 < budget "
        "| server mean ms | server p50 ms | server p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in main.rows:
        lines.append(
            f"| {r.name} | {r.count} | {r.failures} | {r.rps:.1f} | {r.p50:.2f} | {r.p95:.2f} | "
            f"{r.p99:.2f} | {r.max:.2f} | {'yes' if r.p99 < a.budget_ms else '**no**'} | "
            + server_cells(main.server_side.get(r.name))
            + " |"
        )
    if main.errors:
        lines += ["", "Failures:", ""]
        lines += [f"- {n}: {e} (x{c})" for n, e, c in main.errors]
    fr = floor.rows[0] if floor.rows else None
    lines += [
        "",
        "Latencies are exact (measured around each call in the Locust user) when available,"
        " else Locust's rounded ones. Recommend covers known users (Zipf-drawn, explain),"
        " cold-start users and anonymous sessions. The server columns are its own handling"
        " time over the run (`recsys_request_duration_seconds`: exact mean, quantiles"
        " interpolated within its buckets); the rest of a client-observed latency is the"
        " transport, waiting for the server's event loop, and the Locust client itself.",
        "",
        "## CPU (who saturated)",
        "",
        "Mean over the load window (the last run-time seconds of the Locust process) and the"
        " highest ~0.5 s sample, in % of one core; a side above 90 % of a core is saturated"
        " (both are mostly single-threaded Python: the server's asyncio loop, Locust's gevent"
        " loop).",
        "",
        "| process | mean CPU % | peak CPU % | CPU s (whole run) | verdict |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| server | {main.server_cpu_pct:.0f} | {main.server_cpu_peak:.0f} | "
        f"{main.server_cpu_s:.1f} | {side(main.server_cpu_pct, main.server_cpu_peak)} |",
        f"| Locust | {main.locust_cpu_pct:.0f} | {main.locust_cpu_peak:.0f} | "
        f"{main.locust_cpu_s:.1f} | {side(main.locust_cpu_pct, main.locust_cpu_peak)} |",
        "",
        saturation_sentence(main),
        "",
        "## Floor: grpc.health.v1 Check at the same concurrency",
        "",
        f"`HealthUser`, {a.users} users, same pacing, {a.floor_duration_s:g} s: what the transport,"
        " the server's interceptors and the Locust client (gevent + grpc) cost with no"
        " recommendation work; the client's share is why these latencies exceed a single"
        " synchronous client's (server/bench/latency.py).",
        "",
    ]
    if fr:
        lines += [
            "| RPC | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms "
            "| server CPU % | Locust CPU % |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| health Check | {fr.count} | {fr.failures} | {fr.rps:.1f} | {fr.p50:.2f} | "
            f"{fr.p95:.2f} | {fr.p99:.2f} | {fr.max:.2f} | {floor.server_cpu_pct:.0f} | "
            f"{floor.locust_cpu_pct:.0f} |",
        ]
    else:
        lines.append("(the floor run recorded no requests)")
    lines += [
        "",
        "Locust commands run:",
        "",
        "```bash",
        shlex.join(main.cmd),
        shlex.join(floor.cmd),
        "```",
        "",
    ]
    return "\n".join(lines)


def saturation_sentence(m: LocustRun) -> str:
    s, lo = m.server_cpu_pct > SATURATED, m.locust_cpu_pct > SATURATED
    if s and lo:
        return "Both sides were saturated: the latencies include client-side queueing."
    if lo:
        return (
            "The Locust process saturated a core: latencies include client-side delays;"
            " run fewer users or more Locust workers for server numbers."
        )
    if s:
        return "The server saturated a core: this is its capacity at this mix."
    return "Neither side saturated a core: the offered load was below capacity."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--spawn-rate", type=float, default=20)
    ap.add_argument("--duration", type=parse_duration, default="30s", help="e.g. 30s, 1m")
    ap.add_argument("--floor-duration", type=parse_duration, default="10s")
    ap.add_argument("--budget-ms", type=float, default=100.0)
    ap.add_argument(
        "--rps-per-user",
        type=float,
        default=float(os.environ.get("RECSYS_LOAD_RPS_PER_USER", "10")),
        help="target calls/s per user (0: unpaced)",
    )
    ap.add_argument(
        "--weights",
        default=os.environ.get("RECSYS_LOAD_WEIGHTS"),
        help="task weights, e.g. recommend=70,cold=8,anon=7,similar=8,record=5,batch=2",
    )
    ap.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Locust processes (locust --processes): more than one gevent loop on the client",
    )
    ap.add_argument(
        "--out",
        default="",
        help="Markdown report file (docs/load-test.md is the capacity sweep's, sweep.py)",
    )
    a = ap.parse_args()
    a.duration_s, a.floor_duration_s = a.duration, a.floor_duration
    a.artifacts = str(Path(a.artifacts).resolve())
    command = shlex.join(["python", "load_tests/run.py", *sys.argv[1:]])
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="recsys-load-") as tmp:
        proc, address, metrics_url = start_server(a.artifacts, tmp)
        try:
            server = psutil.Process(proc.pid)
            main_run = run_locust(a, address, server, "RecsysUser", a.duration_s, tmp, metrics_url)
            floor = run_locust(a, address, server, "HealthUser", a.floor_duration_s, tmp)
        finally:
            stop_server(proc)
    problems = []
    seen = {r.name for r in main_run.rows if r.count}
    for name in sorted(expected_rpcs(a.weights or "") - seen):
        problems.append(f"{name}: never called (no measurement)")
    for r in main_run.rows:
        if r.p99 >= a.budget_ms:
            problems.append(f"{r.name}: p99 {r.p99:.3f} ms >= budget {a.budget_ms:g} ms")
        if r.failures:
            problems.append(f"{r.name}: {r.failures} failed requests")
    text = report(a, main_run, floor, problems, when, command)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    for r in main_run.rows:
        print(
            f"{r.name:20s} n={r.count:6d} fail={r.failures} rps={r.rps:7.1f} "
            f"p50={r.p50:7.2f} p99={r.p99:7.2f} ms"
        )
    print(
        f"server CPU {main_run.server_cpu_pct:.0f}% (peak {main_run.server_cpu_peak:.0f}%), "
        f"locust CPU {main_run.locust_cpu_pct:.0f}% (peak {main_run.locust_cpu_peak:.0f}%)"
    )
    if floor.rows:
        f = floor.rows[0]
        print(f"floor health Check  n={f.count:6d} p50={f.p50:7.2f} p99={f.p99:7.2f} ms")
    where = f" (report: {a.out})" if a.out else ""
    print(("PASS" if not problems else "FAIL: " + "; ".join(problems)) + where)
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
