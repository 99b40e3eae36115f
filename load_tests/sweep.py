"""Capacity sweep of a real `recsys-serve` under Locust: the offered load goes up step by step
until a p99 reaches the budget or a call fails; writes the Markdown report.

    python load_tests/sweep.py --artifacts DIR [--start 100 --step 100 --max-rate 2000
        --step-duration 20s --budget-ms 100 --target-ms 10 --target-rate 500
        --out docs/load-test.md]

One server serves the whole sweep (run.py's `start_server`). Each step runs `RecsysUser` (the
default mix) at ``rate`` calls/s: ``rate / rps-per-user`` users, each paced to its share. A
step holds the budget when every RPC type's p99 is under ``--budget-ms``, no call failed and
at least 90 % of the offered rate was achieved. The sweep stops after the first step that
does not (but not before the target rate). The target rate is always a step; there the sweep
also runs the target's own load (``--target-weights``: Recommend with explanations only) and
the health-Check floor, both at the same rate, for the target: Recommend p99 <= target-ms and
its p50 within 2x of the floor's.

Reports: the highest rate holding the budget, the first rate at which Recommend's p99 (in the
mix) passes ``--target-ms``, and the target verdict. Exit 0 when some step held the budget, 1
when none did.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # load_tests/run.py

KEPT = ("\n## Per-call cost", "\n## Replicas", "\n## Local cluster")
MIN_ACHIEVED = 0.9  # share of the offered rate a step must reach to count


@dataclass
class Step:
    rate: float
    users: int
    run: harness.LocustRun
    budget_ms: float
    floor: harness.LocustRun | None = None
    target_run: harness.LocustRun | None = None
    """At the target rate: the target's own load (--target-weights, Recommend only)."""

    @property
    def achieved(self) -> float:
        return sum(r.rps for r in self.run.rows)

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.run.rows)

    def row(self, name: str) -> harness.Row | None:
        return next((r for r in self.run.rows if r.name == name), None)

    @property
    def worst(self) -> harness.Row | None:
        return max(self.run.rows, key=lambda r: r.p99, default=None)

    def problems(self) -> list[str]:
        out = [f"{r.name} p99 {r.p99:.1f} ms" for r in self.run.rows if r.p99 >= self.budget_ms]
        if self.failures:
            out.append(f"{self.failures} failed calls")
        if self.achieved < MIN_ACHIEVED * self.rate:
            out.append(f"only {self.achieved:.0f} of {self.rate:g} calls/s achieved")
        if not self.run.rows:
            out.append("no calls recorded")
        return out


def step_args(a: argparse.Namespace, rate: float) -> tuple[argparse.Namespace, int]:
    users = max(1, math.ceil(rate / a.rps_per_user))
    ns = argparse.Namespace(**vars(a))
    # All users within a quarter second (their random phases spread the calls), so a short
    # step is not mostly ramp-up.
    ns.users, ns.spawn_rate, ns.rps_per_user = users, users * 4, rate / users
    return ns, users


def rates(a: argparse.Namespace) -> list[float]:
    out, r = [], a.start
    while r <= a.max_rate + 1e-9:
        out.append(round(r, 6))
        r += a.step
    if a.target_rate and a.target_rate not in out:
        out.append(a.target_rate)
    return sorted(out)


def sweep(a: argparse.Namespace) -> list[Step]:
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="recsys-sweep-") as tmp:
        proc, address, metrics_url = harness.start_server(a.artifacts, tmp)
        try:
            server = psutil.Process(proc.pid)
            for n, rate in enumerate(rates(a)):
                ns, users = step_args(a, rate)
                d = Path(tmp) / f"step{n}"
                d.mkdir()
                run = harness.run_locust(
                    ns, address, server, "RecsysUser", a.duration, str(d), metrics_url
                )
                step = Step(rate, users, run, a.budget_ms)
                if rate == a.target_rate:
                    if a.target_weights:
                        tw = argparse.Namespace(**{**vars(ns), "weights": a.target_weights})
                        (d / "target").mkdir()
                        step.target_run = harness.run_locust(
                            tw, address, server, "RecsysUser", a.duration, str(d / "target"),
                            metrics_url,
                        )  # fmt: skip
                    step.floor = harness.run_locust(
                        ns, address, server, "HealthUser", a.floor_duration, str(d)
                    )
                steps.append(step)
                rec = step.row("Recommend")
                print(
                    f"{rate:7g}/s users={users:4d} achieved={step.achieved:7.1f}/s "
                    + (f"Recommend p50={rec.p50:7.2f} p99={rec.p99:7.2f} ms " if rec else "")
                    + f"fail={step.failures} server CPU {run.server_cpu_pct:3.0f}% "
                    f"locust CPU {run.locust_cpu_pct:3.0f}% "
                    + ("ok" if not step.problems() else "OVER: " + "; ".join(step.problems())),
                    flush=True,
                )
                if step.problems() and rate >= a.target_rate:
                    break  # past the budget (and the target step is measured)
        finally:
            harness.stop_server(proc)
    return steps


@dataclass
class Verdict:
    highest: Step | None
    first_over_target: Step | None
    target: Step | None
    target_ok: bool
    target_text: str


def judge(a: argparse.Namespace, steps: list[Step]) -> Verdict:
    highest = None
    for s in steps:  # the highest rate with every step up to it holding the budget
        if s.problems():
            break
        highest = s
    first_over = next(
        (s for s in steps if (r := s.row("Recommend")) is not None and r.p99 > a.target_ms),
        None,
    )
    target = next((s for s in steps if s.rate == a.target_rate), None)
    ok, text = False, f"not measured (no {a.target_rate:g} calls/s step)"
    if target is not None:
        run = target.target_run or target.run
        rec = next((r for r in run.rows if r.name == "Recommend"), None)
        floor = target.floor.rows[0] if target.floor and target.floor.rows else None
        if rec is None or floor is None:
            text = "not measured (no Recommend or floor calls)"
        else:
            p99_ok = rec.p99 <= a.target_ms and not rec.failures
            p50_ok = rec.p50 <= 2 * floor.p50
            ok = p99_ok and p50_ok
            what = (
                f"Recommend-only load (`{a.target_weights}`)"
                if target.target_run
                else "the default mix"
            )
            text = (
                f"{what}: Recommend p99 {rec.p99:.2f} ms (target <= {a.target_ms:g} ms: "
                f"{'ok' if p99_ok else '**missed**'}); p50 {rec.p50:.2f} ms = "
                f"{rec.p50 / floor.p50:.2f}x the health-Check floor's {floor.p50:.2f} ms "
                f"(target <= 2x: {'ok' if p50_ok else '**missed**'})"
            )
    return Verdict(highest, first_over, target, ok, text)


def fmt(x: float) -> str:
    return f"{x:.2f}"


def report(a: argparse.Namespace, steps: list[Step], v: Verdict, when: datetime, cmd: str) -> str:
    hi = v.highest
    lines = [
        "# Load test: capacity sweep of recsys-serve under Locust",
        "",
        (
            f"**Highest rate holding the budget: {hi.rate:g} calls/s** offered "
            f"({hi.achieved:.0f} achieved) — p99 < {a.budget_ms:g} ms for every RPC type and "
            "zero failed calls at every step up to it."
            if hi
            else f"**No step held the budget** (p99 < {a.budget_ms:g} ms, zero failures)."
        ),
        "",
        (
            f"**Recommend p99 first passes {a.target_ms:g} ms at {v.first_over_target.rate:g} "
            f"calls/s** ({v.first_over_target.row('Recommend').p99:.2f} ms)."  # type: ignore[union-attr]
            if v.first_over_target
            else f"**Recommend p99 stayed at or under {a.target_ms:g} ms at every step.**"
        ),
        "",
        f"**Target at {a.target_rate:g} calls/s: {'PASS' if v.target_ok else 'FAIL'}** — "
        + v.target_text
        + ".",
        "",
        f"Date: {when:%Y-%m-%d %H:%M:%S} UTC. Machine: {platform.node()}, {os.cpu_count()} "
        f"logical CPUs, Python {platform.python_version()}; Locust on the same machine "
        f"({a.processes} process{'es' if a.processes > 1 else ''}).",
        f"Each step: {a.duration:g} s of `RecsysUser` (task weights "
        f"`{a.weights or harness.DEFAULT_WEIGHTS}`), {a.rps_per_user:g} calls/s per user "
        "(users = rate / that, each paced to its share, random start phases); a step holds the "
        f"budget with every p99 < {a.budget_ms:g} ms, no failed call and at least "
        f"{MIN_ACHIEVED:.0%} of the offered rate achieved.",
        "",
        "Command:",
        "",
        "```bash",
        cmd,
        "```",
        "",
        "## Sweep",
        "",
        "| offered calls/s | users | achieved calls/s | Recommend p50 ms | Recommend p95 ms "
        "| Recommend p99 ms | server Recommend mean / p99 ms | worst p99 ms (RPC) | failed "
        "| server CPU % | Locust CPU % | budget |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        rec, worst = s.row("Recommend"), s.worst
        srv = s.run.server_side.get("Recommend")
        lines.append(
            f"| {s.rate:g} | {s.users} | {s.achieved:.1f} | "
            + (f"{fmt(rec.p50)} | {fmt(rec.p95)} | {fmt(rec.p99)} | " if rec else "- | - | - | ")
            + (f"{fmt(srv.mean_ms)} / {fmt(srv.p99_ms)} | " if srv else "- | ")
            + (f"{fmt(worst.p99)} ({worst.name}) | " if worst else "- | ")
            + f"{s.failures} | {s.run.server_cpu_pct:.0f} | {s.run.locust_cpu_pct:.0f} | "
            + ("ok" if not s.problems() else "**over**: " + "; ".join(s.problems()))
            + " |"
        )
    lines += [
        "",
        "Server Recommend: the server's own handling time over the step, from its "
        "`recsys_request_duration_seconds` histogram (exact mean; p99 interpolated within the "
        "buckets 1, 2.5, 5, 10, 25 ms...). The rest of a client-observed latency is the "
        "transport, waiting for the server's event loop and the Locust client. CPU: mean over "
        "the step's load window in % of one core (the server's asyncio loop is one thread plus "
        "grpc's; Locust's gevent loop is one thread per process). The machine has "
        f"{os.cpu_count()} cores for both.",
    ]
    for s in steps:
        if s.run.errors:
            lines += ["", f"Failed calls at {s.rate:g} calls/s:", ""]
            lines += [f"- {n}: {' '.join(e.split())[:300]} (x{c})" for n, e, c in s.run.errors]
    if v.target is not None:
        t = v.target
        lines += ["", f"## Target step: {t.rate:g} calls/s", ""]
        if t.target_run is not None:
            lines += [
                f"The target is about Recommend with explanations, so at {t.rate:g} calls/s the "
                f"sweep also runs a Recommend-only load (`{a.target_weights}`: known users, "
                f"Zipf-drawn, k=10, explain) for {a.duration:g} s; the verdict is on that run. "
                "The default mix at the same rate (the sweep's step) follows it.",
                "",
                "Recommend-only:",
                "",
            ]
            lines += table(t.target_run.rows, a.budget_ms, t.target_run.server_side)
            lines += [
                "",
                f"Server CPU {t.target_run.server_cpu_pct:.0f} %, Locust CPU "
                f"{t.target_run.locust_cpu_pct:.0f} %.",
                "",
                "Default mix:",
                "",
            ]
        lines += table(t.run.rows, a.budget_ms, t.run.server_side)
        if t.floor and t.floor.rows:
            f = t.floor.rows[0]
            lines += [
                "",
                f"Floor (grpc.health.v1 Check, `HealthUser`, same {t.users} users and pacing, "
                f"{a.floor_duration:g} s): p50 {f.p50:.2f} ms, p95 {f.p95:.2f} ms, p99 "
                f"{f.p99:.2f} ms, {f.rps:.0f} calls/s; server CPU {t.floor.server_cpu_pct:.0f} "
                f"%, Locust CPU {t.floor.locust_cpu_pct:.0f} %.",
            ]
        elif t.floor:
            lines += ["", f"Floor: no health Check completed in {a.floor_duration:g} s."]
        lines += ["", "Target: " + v.target_text + "."]
    if hi is not None and hi is not v.target:
        lines += ["", f"## Highest step holding the budget: {hi.rate:g} calls/s", ""]
        lines += table(hi.run.rows, a.budget_ms, hi.run.server_side)
    lines += [
        "",
        "Latencies are client-observed and exact (measured around each call in the Locust "
        "user). Recommend covers known users (Zipf-drawn, with explanations), cold-start "
        "users and anonymous sessions.",
        "",
        "Locust commands of the last step:",
        "",
        "```bash",
        shlex.join(steps[-1].run.cmd) if steps else "",
        "```",
        "",
    ]
    return "\n".join(lines)


def table(
    rows: list[harness.Row], budget_ms: float, server: dict[str, harness.ServerSide]
) -> list[str]:
    out = [
        "| RPC | calls | failed | calls/s | p50 ms | p95 ms | p99 ms | max ms | p99 < budget "
        "| server mean ms | server p50 ms | server p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r.name} | {r.count} | {r.failures} | {r.rps:.1f} | {fmt(r.p50)} | "
            f"{fmt(r.p95)} | {fmt(r.p99)} | {fmt(r.max)} | "
            f"{'yes' if r.p99 < budget_ms else '**no**'} | "
            + harness.server_cells(server.get(r.name))
            + " |"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--start", type=float, default=100, help="first offered rate, calls/s")
    ap.add_argument("--step", type=float, default=100, help="rate increment, calls/s")
    ap.add_argument("--max-rate", type=float, default=2000)
    ap.add_argument("--step-duration", dest="duration", type=harness.parse_duration, default="20s")
    ap.add_argument("--floor-duration", type=harness.parse_duration, default="10s")
    ap.add_argument("--rps-per-user", type=float, default=10.0)
    ap.add_argument("--budget-ms", type=float, default=100.0)
    ap.add_argument("--target-ms", type=float, default=10.0)
    ap.add_argument("--target-rate", type=float, default=500.0)
    ap.add_argument("--weights", default=os.environ.get("RECSYS_LOAD_WEIGHTS"))
    ap.add_argument(
        "--target-weights",
        default="recommend=1,cold=0,anon=0,similar=0,record=0,batch=0",
        help="the load the target is judged on at --target-rate ('' = the mix step)",
    )
    ap.add_argument("--processes", type=int, default=1, help="Locust processes")
    ap.add_argument("--out", default="docs/load-test.md")
    a = ap.parse_args()
    if a.rps_per_user <= 0 or a.step <= 0 or a.start <= 0:
        ap.error("--start, --step and --rps-per-user must be > 0")
    a.artifacts = str(Path(a.artifacts).resolve())
    a.duration_s, a.floor_duration_s = a.duration, a.floor_duration
    cmd = shlex.join(["python", "load_tests/sweep.py", *sys.argv[1:]])
    when = datetime.now(UTC)
    steps = sweep(a)
    v = judge(a, steps)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = report(a, steps, v, when, cmd)
    # The sections written by hand (KEPT[0], the per-call profile) or by other scripts
    # (replica_visibility.py's, then cluster_sweep.py's, the last) are not this sweep's to
    # rewrite: everything from the first of them is kept.
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    kept = [old.find(h) for h in KEPT if h in old]
    out.write_text(text + (old[min(kept) :] if kept else ""), encoding="utf-8")
    print(
        (f"highest rate holding the budget: {v.highest.rate:g} calls/s" if v.highest else "none")
        + "; Recommend p99 first over "
        + f"{a.target_ms:g} ms at "
        + (f"{v.first_over_target.rate:g} calls/s" if v.first_over_target else "no step")
        + f"; target {'PASS' if v.target_ok else 'FAIL'}: {v.target_text} (report: {out})"
    )
    return 0 if v.highest else 1


if __name__ == "__main__":
    raise SystemExit(main())
