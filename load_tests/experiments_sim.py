"""Seeded simulation with a known truth for the experiment report's statistics.

    python load_tests/experiments_sim.py [--runs 100] [--aa-runs 200] [--seed 18] [--quick]
        [--heterogeneity 2.0] [--out docs/experiments.md]

No server: it calls the same `recsys_server.experiments.stats` and `.interleave` the report
uses, on users drawn from a latent-factor population:

* Items: latent vectors and a log-normal popularity. Users: latent vectors, a click bias
  (heterogeneous propensity: some users click far more than others) and a log-normal number of
  visits. A shown item is clicked with probability examination(position) x attraction, where
  attraction = 0.9 * logistic(bias + popularity + user . item) (capped at 0.9 so that a +10%
  lift never exceeds 1).
* Rankers: top-10 by popularity + (user + noise) . item; the "good" ranker's noise is smaller
  than the "worse" one's. Each visit shows the ranker's list (A/B) or a fresh team-draft merge
  of both (interleaving); clicks are independent draws.

Measured (each with its target, PASS/MISS):
1. Power: the sample size at which the report's MDE is 10% (from a pilot's standard error),
   then runs at that size with a planted +10% relative CTR: share detected by the always-valid
   interval at the final look (and by the fixed-horizon test).
2. A/A: runs read at 30 equally spaced looks; false-positive share of the sequential test (any
   look's always-valid interval excludes 0) and of the naive fixed-horizon test read the same way.
3. SRM: planted 52/48 split flagged; true 50/50 not flagged.
4. Interleaving vs A/B: users (grid in steps of sqrt(2)) at which each reaches the right decision
   (always-valid interval on the right side of no effect) in >= 80% of runs; the ratio. With
   ``--heterogeneity SD`` (default 2.0) the same once more on a population whose users' click
   bias varies more (information: the advantage grows with the differences between users).

``--out`` rewrites only the marked section of the Markdown file (creating it if absent).
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "server") not in sys.path:
    sys.path.insert(0, str(REPO / "server"))

from recsys_server.experiments import stats as st  # noqa: E402
from recsys_server.experiments.interleave import credit, team_draft  # noqa: E402

K = 10
EXAM = 1.0 / np.log2(np.arange(K) + 2.0)  # examination probability by position
LIFT = 0.10
LOOKS = 30
# The rankers' taste-estimate noise: the good one knows users better. Set by one rule, not by
# the interleaving result: the two rankers' CTRs differ by about the 10% experiments plan for.
NOISE_GOOD, NOISE_WORSE = 0.6, 0.75
BIAS, BIAS_SD = -8.0, 1.0  # users' click bias (logit): mean sets the CTR level (about 0.09)
MARK_START = "<!-- experiments_sim: start -->"
MARK_END = "<!-- experiments_sim: end -->"


@dataclass(frozen=True)
class Population:
    good: np.ndarray  # users x K item ids, the better ranker's list
    worse: np.ndarray
    p_good: np.ndarray  # users x K click probability per position of that list
    p_worse: np.ndarray
    a_good: np.ndarray  # users x K attraction of those items (before examination)
    a_worse: np.ndarray
    visits: np.ndarray  # impressions per user

    @property
    def size(self) -> int:
        return len(self.visits)


def population(n_users: int, seed: int, bias_sd: float = BIAS_SD) -> Population:
    rng = np.random.default_rng([seed, 0])
    # Scales as in the project's generator (trainer/recsys_trainer/synthetic.py): 16 factors,
    # affinity scale 2, log popularity sd 1.6, log activity sd 1.0.
    n_items, d = 500, 16
    items = rng.normal(0.0, 1.0, (n_items, d)) / d**0.25
    pop = rng.normal(0.0, 1.6, n_items)
    users = rng.normal(0.0, 1.0, (n_users, d)) / d**0.25 * 2.0
    bias = rng.normal(BIAS, bias_sd, n_users)
    visits = 1 + rng.poisson(rng.lognormal(0.3, 1.0, n_users))
    good, worse = (np.empty((n_users, K), np.int32) for _ in range(2))
    a_good, a_worse = (np.empty((n_users, K)) for _ in range(2))
    for lo in range(0, n_users, 20_000):
        s = slice(lo, min(lo + 20_000, n_users))
        u = users[s]
        attract = 0.9 / (1.0 + np.exp(-(bias[s, None] + pop + u @ items.T)))
        for noise, lists, att in ((NOISE_GOOD, good, a_good), (NOISE_WORSE, worse, a_worse)):
            est = pop + (u + rng.normal(0.0, noise, u.shape)) @ items.T
            top = np.argpartition(-est, K, axis=1)[:, :K]
            order = np.argsort(-np.take_along_axis(est, top, 1), axis=1)
            lists[s] = np.take_along_axis(top, order, 1)
            att[s] = np.take_along_axis(attract, lists[s], 1)
    return Population(good, worse, a_good * EXAM, a_worse * EXAM, a_good, a_worse, visits)


def ab_arm(
    popn: Population, n: int, rng: np.random.Generator, ranker: str = "good", lift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks and items shown of ``n`` users drawn from the population."""
    idx = rng.integers(0, popn.size, n)
    p = (popn.p_good if ranker == "good" else popn.p_worse)[idx] * (1.0 + lift)
    m = popn.visits[idx]
    return rng.binomial(m[:, None], p).sum(axis=1), K * m


def interleave_users(
    popn: Population, n: int, rng: np.random.Generator, rnd: random.Random
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user impressions won by the good ranker (team A), by the worse (B), and tied with
    clicks, each visit showing a fresh team-draft merge of the two lists."""
    wins = np.zeros((n, 3), np.int64)
    for j, u in enumerate(rng.integers(0, popn.size, n)):
        attraction = dict(zip(popn.worse[u].tolist(), popn.a_worse[u].tolist(), strict=True))
        attraction.update(zip(popn.good[u].tolist(), popn.a_good[u].tolist(), strict=True))
        for _ in range(popn.visits[u]):
            items, teams = team_draft(popn.good[u].tolist(), popn.worse[u].tolist(), K, rnd)
            clicked = [
                pos + 1
                for pos, item in enumerate(items)
                if rnd.random() < EXAM[pos] * attraction[item]
            ]
            if clicked:
                ca, cb = credit(teams, clicked)
                wins[j, 0 if ca > cb else 1 if cb > ca else 2] += 1
    return wins[:, 0], wins[:, 1], wins[:, 2]


def binom_ci(k: int, n: int) -> tuple[float, float]:
    p, h = k / n, 1.96 * math.sqrt(max(k, 1) * max(n - k, 1) / n) / n
    return max(0.0, p - h), min(1.0, p + h)


class Results:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.misses = 0

    def info(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(f"- {text}")

    def check(self, what: str, value: str, target: str, ok: bool, note: str = "") -> None:
        verdict = "PASS" if ok else "MISS"
        self.misses += not ok
        text = f"{what}: {value} (target {target}) {verdict}{' ' + note if note else ''}"
        print(text, flush=True)
        self.lines.append(
            f"- **{verdict}** {what}: {value} (target {target}){' ' + note if note else ''}"
        )


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def planned_n(popn: Population, seed: int, pilot: int) -> tuple[int, int, float]:
    """Users per arm at which the report's MDE is 10% (and the fixed-horizon formula's),
    scaling a pilot's standard error by sqrt(pilot / n)."""
    rng = rng_for(seed, 1)
    c = st.compare_ratio("ctr", *ab_arm(popn, pilot, rng), *ab_arm(popn, pilot, rng, lift=LIFT))
    se1 = (c.ci95.high - c.ci95.low) / (2 * 1.959963984540054) * math.sqrt(pilot)
    lo, hi = 100, 10_000_000
    while hi - lo > 1:  # the MDE falls as n grows
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if st.mde_relative(se1 / math.sqrt(mid), c.control) > LIFT else (lo, mid)
    z = 1.959963984540054 + 0.8416212335729143
    n_fixed = math.ceil((z * se1 / (LIFT * c.control)) ** 2)
    return hi, n_fixed, c.control


def power(popn: Population, n: int, runs: int, seed: int, stream: int) -> tuple[int, int]:
    seq = fixed = 0
    for r in range(runs):
        rng = rng_for(seed, stream, r)
        c = st.compare_ratio("ctr", *ab_arm(popn, n, rng), *ab_arm(popn, n, rng, lift=LIFT))
        seq += c.always_valid.low > 0
        fixed += c.ci95.low > 0
    return seq, fixed


def aa(popn: Population, n: int, runs: int, seed: int) -> tuple[int, int]:
    seq = naive = 0
    looks = [round(n * (j + 1) / LOOKS) for j in range(LOOKS)]
    for r in range(runs):
        rng = rng_for(seed, 3, r)
        (nc, dc), (nt, dt) = ab_arm(popn, n, rng), ab_arm(popn, n, rng)
        any_seq = any_naive = False
        for m in looks:
            c = st.compare_ratio("ctr", nc[:m], dc[:m], nt[:m], dt[:m])
            any_seq |= c.significant
            any_naive |= c.p_value < 0.05
        seq += any_seq
        naive += any_naive
    return seq, naive


def srm(users: int, runs: int, seed: int, share: float) -> int:
    rng = rng_for(seed, 4, int(share * 1000))
    first = rng.binomial(users, share, runs)
    return sum(st.sample_ratio([f, users - f], [1, 1]).mismatch for f in first)


def smallest_n(decide, start: int, runs: int, limit: int) -> tuple[float, list[str]]:
    """Users at which ``decide(n, run)`` is right in 80% of runs, searched on a grid from
    ``start`` in steps of sqrt(2) and interpolated (in log n) between the last grid point below
    80% and the first at or above it (nan when ``limit`` is passed first), with the rate at
    each grid point."""
    step, seen, prev = 0, [], None
    while (n := round(start * 2 ** (step / 2))) <= limit:
        rate = sum(decide(n, r) for r in range(runs)) / runs
        seen.append(f"{n:,}: {rate:.0%}")
        if rate >= 0.8:
            if prev is None or rate <= prev[1]:
                return float(n), seen
            frac = (0.8 - prev[1]) / (rate - prev[1])
            return math.exp(math.log(prev[0]) + frac * math.log(n / prev[0])), seen
        prev = (n, rate)
        step += 1
    return math.nan, seen


def interleaving_vs_ab(
    popn: Population, runs: int, seed: int, res: Results, label: str = ""
) -> tuple[float, float]:
    """Users needed for the right decision (good ranker better) by A/B on CTR (users of both
    arms) and by interleaving, each read once by its always-valid interval."""

    def ab_right(users: int, r: int) -> bool:
        rng = rng_for(seed, 6, users, r)
        half = users // 2
        worse, good = ab_arm(popn, half, rng, "worse"), ab_arm(popn, half, rng, "good")
        return st.compare_ratio("ctr", *worse, *good).always_valid.low > 0

    def il_right(users: int, r: int) -> bool:
        rng = rng_for(seed, 7, users, r)
        rnd = random.Random(int(rng.integers(2**63)))
        return st.preference(*interleave_users(popn, users, rng, rnd)).always_valid.low > 0.5

    n_ab, grid_ab = smallest_n(ab_right, 1_000, runs, 4_096_000)
    n_il, grid_il = smallest_n(il_right, 125, runs, 64_000)
    res.info(
        f"A/B on CTR{label}, users of both arms: right decisions: {'; '.join(grid_ab)} "
        f"-> 80% at {n_ab:,.0f}"
    )
    res.info(
        f"interleaving{label}, users: right decisions: {'; '.join(grid_il)} -> 80% at {n_il:,.0f}"
    )
    return n_ab, n_il


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="power and interleaving runs (>= 50)")
    ap.add_argument("--aa-runs", type=int, default=200, help="A/A runs, each read 30 times")
    ap.add_argument("--srm-runs", type=int, default=2000)
    ap.add_argument("--srm-users", type=int, default=20_000)
    ap.add_argument("--population", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument(
        "--heterogeneity",
        type=float,
        default=2.0,
        help="also measure interleaving vs A/B with this sd of users' click bias (0: skip)",
    )
    ap.add_argument("--quick", action="store_true", help="few runs: checks the machinery only")
    ap.add_argument("--out", type=Path, help="Markdown file whose marked section is rewritten")
    a = ap.parse_args(argv)
    if a.quick:
        a.runs, a.aa_runs, a.srm_runs, a.population, a.heterogeneity = 12, 40, 300, 30_000, 0
    t0 = time.perf_counter()
    res = Results()
    popn = population(a.population, a.seed)
    mean_ctr = lambda p: float((popn.visits[:, None] * p).sum() / (K * popn.visits.sum()))  # noqa: E731
    ctr_good, ctr_worse = mean_ctr(popn.p_good), mean_ctr(popn.p_worse)
    res.info(
        f"population: {popn.size:,} users, mean visits {popn.visits.mean():.2f}, "
        f"CTR good ranker {ctr_good:.4f}, worse ranker {ctr_worse:.4f} "
        f"({ctr_good / ctr_worse - 1:+.1%})"
    )

    # 1. Power at the MDE's sample size.
    n, n_fixed, control = planned_n(popn, a.seed, pilot=50_000 if not a.quick else 10_000)
    res.info(
        f"planned size: MDE = 10% at {n:,} users per arm (control CTR {control:.4f}); "
        f"the fixed-horizon formula (z.975 + z.8) se / control would ask {n_fixed:,}"
    )
    seq, fixed = power(popn, n, a.runs, a.seed, 2)
    lo, hi = binom_ci(seq, a.runs)
    res.check(
        f"power, +10% CTR at {n:,} users/arm, always-valid at the final look",
        f"{seq}/{a.runs} = {seq / a.runs:.0%}",
        ">= 80%",
        seq / a.runs >= 0.8,
        f"(95% binomial interval {lo:.0%}-{hi:.0%}; fixed-horizon test: {fixed / a.runs:.0%})",
    )
    seq_f, fixed_f = power(popn, n_fixed, a.runs, a.seed, 5)
    res.info(
        f"for comparison, at the fixed-horizon size {n_fixed:,} users/arm: fixed-horizon "
        f"test {fixed_f / a.runs:.0%}, always-valid {seq_f / a.runs:.0%}"
    )

    # 2. A/A, 30 looks.
    seq, naive = aa(popn, n, a.aa_runs, a.seed)
    bound = 0.05 + 1.645 * math.sqrt(0.05 * 0.95 / a.aa_runs)
    res.check(
        f"A/A false positives, {a.aa_runs} runs x {LOOKS} looks to {n:,} users/arm, sequential",
        f"{seq}/{a.aa_runs} = {seq / a.aa_runs:.1%}",
        f"<= 5% within binomial error (<= {bound:.1%})",
        seq / a.aa_runs <= bound,
        f"(naive fixed-horizon test read the same way: {naive / a.aa_runs:.1%})",
    )

    # 3. Sample ratio mismatch.
    flagged = srm(a.srm_users, a.srm_runs, a.seed, 0.52)
    clean = a.srm_runs - srm(a.srm_users, a.srm_runs, a.seed, 0.50)
    res.check(
        f"SRM, planted 52/48 of {a.srm_users:,} users flagged",
        f"{flagged / a.srm_runs:.1%} of {a.srm_runs}",
        "flagged (report the rate; >= 80%)",
        flagged / a.srm_runs >= 0.8,
    )
    res.check(
        f"SRM, true 50/50 of {a.srm_users:,} users not flagged",
        f"{clean / a.srm_runs:.1%} of {a.srm_runs}",
        ">= 99%",
        clean / a.srm_runs >= 0.99,
    )

    # 4. Interleaving vs A/B on the same population: good ranker vs worse ranker.
    n_ab, n_il = interleaving_vs_ab(popn, a.runs, a.seed, res)
    res.check(
        "interleaving vs A/B, users to the right decision in 80% of runs",
        f"A/B {n_ab:,.0f}, interleaving {n_il:,.0f}: {n_ab / n_il:.1f}x fewer",
        ">= 10x",
        n_ab / n_il >= 10,  # False when either search ran out (nan)
        "(interpolated between grid points sqrt(2) apart)",
    )
    if a.heterogeneity:
        # The advantage is a property of the population: A/B pays for differences between
        # users, interleaving compares both rankers within each user's visits.
        more = population(a.population, a.seed, bias_sd=a.heterogeneity)
        n_ab, n_il = interleaving_vs_ab(
            more, a.runs, a.seed, res, f" (click bias sd {a.heterogeneity})"
        )
        res.info(
            f"sensitivity, users' click bias sd {a.heterogeneity} instead of {BIAS_SD}: "
            f"A/B {n_ab:,.0f}, interleaving {n_il:,.0f}: {n_ab / n_il:.1f}x fewer "
            "(information, no target)"
        )

    elapsed = time.perf_counter() - t0
    cmd = ".venv/bin/python load_tests/experiments_sim.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    res.info(f"{res.misses} miss(es); {elapsed:.0f} s")
    if a.out:
        write_section(a.out, cmd.strip(), res.lines)
    return 0


def write_section(path: Path, cmd: str, lines: list[str]) -> None:
    body = "\n".join(
        [MARK_START, "", "Command:", "", "```bash", cmd, "```", "", *lines, "", MARK_END]
    )
    text = path.read_text() if path.exists() else ""
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + body + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + body + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
