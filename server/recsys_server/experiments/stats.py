"""The statistics of an experiment report, all at the user level (a user is the unit assigned).

- Ratio metrics (CTR = clicks / items shown): the ratio of sums per variant, its variance by the
  delta method over per-user numerators and denominators (clicks of one user are correlated, so
  an item-level binomial variance would be far too small).
- Per-user means (conversions, value per user): Welch's t (scipy).
- Always-valid intervals: the normal-mixture mSPRT confidence sequence (Johari, Pekelis and
  Walsh 2017; Howard et al. 2021), valid however often and whenever the report is read.
- Sample ratio: chi-square (scipy) of users per variant against the configured shares.
- Interleaving preference: wins of a among decided impressions, a ratio of per-user sums.

Degenerate inputs (no users, fewer than two per variant, zero variance, a zero control) give
nan for what cannot be estimated and ``significant=False``, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# The mixture's scale tau (the effect size the always-valid test is tuned to), fixed before any
# data are seen. For a difference of metrics: tau = TAU_RELATIVE * |control|, a 10% relative
# effect, the size these experiments are planned for; the mixture's interval is then near its
# tightest (within 2%) at the sample size where a 10% effect becomes detectable. For interleaving:
# a preference of 0.5 + TAU_PREFERENCE (55/45).
TAU_RELATIVE = 0.10
TAU_PREFERENCE = 0.05
POWER = 0.80
NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


NAN_INTERVAL = Interval(NAN, NAN)


@dataclass(frozen=True)
class Comparison:
    metric: str  # "ctr" | "conversions_per_user" | "value_per_user"
    control: float  # the control's value of the metric
    variant: float
    difference: float  # variant - control
    relative: float  # difference / control (nan when control == 0)
    ci95: Interval  # fixed horizon, on the difference
    always_valid: Interval  # always-valid (mSPRT normal mixture) on the difference
    p_value: float  # fixed horizon, two-sided
    significant: bool  # always_valid excludes 0
    mde_relative: float  # relative effect detectable with 80% power at alpha .05 at this n


@dataclass(frozen=True)
class SampleRatio:
    observed: tuple[int, ...]
    expected_shares: tuple[float, ...]  # normalised to sum 1
    chi_square: float
    p_value: float
    mismatch: bool  # p_value < threshold


@dataclass(frozen=True)
class Preference:
    wins_a: int
    wins_b: int
    ties: int
    preference_a: float  # share of a's wins among decided comparisons, user level; 0.5 = none
    ci95: Interval
    always_valid: Interval
    p_value: float


def always_valid_half_width(se: float, tau: float, alpha: float = 0.05) -> float:
    """Half-width of the normal-mixture confidence sequence for an estimate with standard error
    ``se`` and mixture scale ``tau``: the mSPRT with a N(0, tau^2) mixture rejects a zero effect
    exactly when the estimate lies outside it. nan when se or tau is not positive."""
    if not (se > 0 and tau > 0 and math.isfinite(se) and math.isfinite(tau)):
        return NAN
    v, t = se * se, tau * tau
    return math.sqrt(v * (v + t) / t * (2.0 * math.log(1.0 / alpha) + math.log((v + t) / v)))


def mde_relative(se: float, control: float, alpha: float = 0.05) -> float:
    """Relative effect the report's decision (the always-valid interval excluding 0) detects with
    80% power when the difference's standard error is ``se``.

    The fixed-horizon formula (z_{1-alpha/2} + z_{0.8}) * se / control with the always-valid
    critical value half_width / se in place of z_{1-alpha/2}; the fixed-horizon test alone would
    detect (1.96 + 0.84) / (half_width / se + 0.84) of this (about 0.72x at the planned n)."""
    tau = TAU_RELATIVE * abs(control)
    half = always_valid_half_width(se, tau, alpha)
    if not (math.isfinite(half) and control != 0):
        return NAN
    return float((half / se + sps.norm.ppf(POWER)) * se / abs(control))


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def _interval(centre: float, half: float) -> Interval:
    if not (_finite(centre) and _finite(half)):
        return NAN_INTERVAL
    return Interval(float(centre - half), float(centre + half))


def _excludes(iv: Interval, value: float) -> bool:
    return _finite(iv.low) and _finite(iv.high) and (iv.low > value or iv.high < value)


def _ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """Ratio of sums and its delta-method variance over users: for means x, y of n users,
    var(x/y) ~ (s_x^2 - 2 r s_xy + r^2 s_y^2) / (n y^2)."""
    n = len(num)
    total = float(den.sum())
    if n == 0 or total == 0:
        return NAN, NAN
    r = float(num.sum()) / total
    if n < 2:
        return r, NAN
    resid = num - r * den  # the linearised ratio: var(resid) = s_x^2 - 2 r s_xy + r^2 s_y^2
    mean_den = total / n
    return r, float(resid.var(ddof=1)) / (n * mean_den * mean_den)


def _arrays(*xs) -> list[np.ndarray]:
    return [np.asarray(x, dtype=np.float64).ravel() for x in xs]


def _comparison(
    metric: str,
    control: float,
    variant: float,
    se: float,
    ci95: Interval,
    p_value: float,
    alpha: float,
) -> Comparison:
    diff = variant - control
    relative = diff / control if _finite(control) and control != 0 else NAN
    if not (_finite(se) and se > 0):
        # No variance (or no users): no inference, only the point values.
        ci95, p_value = NAN_INTERVAL, NAN
    half = always_valid_half_width(se, TAU_RELATIVE * abs(control), alpha)
    if _finite(ci95.low):
        # With very few users Welch's t interval can be wider than the (normal) mixture's.
        half = max(half, (ci95.high - ci95.low) / 2)
    always = _interval(diff, half) if _finite(control) else NAN_INTERVAL
    return Comparison(
        metric=metric,
        control=control,
        variant=variant,
        difference=diff,
        relative=relative,
        ci95=ci95,
        always_valid=always,
        p_value=p_value,
        significant=_excludes(always, 0.0),
        mde_relative=mde_relative(se, control, alpha) if _finite(control) else NAN,
    )


def compare_ratio(metric: str, num_c, den_c, num_t, den_t, alpha: float = 0.05) -> Comparison:
    """Ratio-of-sums metric per variant (e.g. clicks and items shown per user), the difference
    treatment - control with a normal interval from the delta-method variances."""
    num_c, den_c, num_t, den_t = _arrays(num_c, den_c, num_t, den_t)
    if len(num_c) != len(den_c) or len(num_t) != len(den_t):
        raise ValueError("numerator and denominator arrays of a variant differ in length")
    rc, vc = _ratio(num_c, den_c)
    rt, vt = _ratio(num_t, den_t)
    se = math.sqrt(vc + vt) if _finite(vc) and _finite(vt) else NAN
    diff = rt - rc
    z = sps.norm.ppf(1 - alpha / 2)
    p = float(2 * sps.norm.sf(abs(diff) / se)) if _finite(se) and se > 0 else NAN
    return _comparison(metric, rc, rt, se, _interval(diff, z * se), p, alpha)


def compare_mean(metric: str, x_c, x_t, alpha: float = 0.05) -> Comparison:
    """Per-user values (e.g. conversions per user): Welch's t interval and p-value on the
    difference of means treatment - control."""
    x_c, x_t = _arrays(x_c, x_t)
    mc = float(x_c.mean()) if len(x_c) else NAN
    mt = float(x_t.mean()) if len(x_t) else NAN
    if len(x_c) < 2 or len(x_t) < 2:
        return _comparison(metric, mc, mt, NAN, NAN_INTERVAL, NAN, alpha)
    se = math.sqrt(x_c.var(ddof=1) / len(x_c) + x_t.var(ddof=1) / len(x_t))
    if se == 0:
        return _comparison(metric, mc, mt, 0.0, NAN_INTERVAL, NAN, alpha)
    test = sps.ttest_ind(x_t, x_c, equal_var=False)
    ci = test.confidence_interval(confidence_level=1 - alpha)
    return _comparison(
        metric, mc, mt, se, Interval(float(ci.low), float(ci.high)), float(test.pvalue), alpha
    )


def sample_ratio(observed, shares, threshold: float = 0.001) -> SampleRatio:
    """Users per variant against the configured shares (any positive scale; normalised here)."""
    obs = tuple(int(o) for o in observed)
    raw = [float(s) for s in shares]
    if len(obs) != len(raw):
        raise ValueError(f"observed has {len(obs)} variants, shares {len(raw)}")
    if any(o < 0 for o in obs) or any(not (s >= 0 and math.isfinite(s)) for s in raw):
        raise ValueError("observed and shares must be non-negative")
    total_share = sum(raw)
    expected = tuple(s / total_share for s in raw) if total_share > 0 else tuple(NAN for _ in raw)
    n = sum(obs)
    # A variant configured to get nobody that has users: certainly a mismatch.
    if any(e == 0 and o > 0 for o, e in zip(obs, expected, strict=True)):
        return SampleRatio(obs, expected, math.inf, 0.0, True)
    kept = [(o, e) for o, e in zip(obs, expected, strict=True) if e > 0]
    if n == 0 or len(kept) < 2:
        return SampleRatio(obs, expected, NAN, NAN, False)
    f_obs = np.array([o for o, _ in kept], dtype=np.float64)
    f_exp = np.array([e for _, e in kept]) * n
    chi, p = sps.chisquare(f_obs, f_exp)
    return SampleRatio(obs, expected, float(chi), float(p), bool(p < threshold))


def preference(wins_a, wins_b, ties) -> Preference:
    """Per-user counts of impressions where a's credited clicks beat b's, b's beat a's, and
    equal ones (with at least one click). preference_a = sum(wins_a) / sum(wins_a + wins_b),
    its interval by the delta method over the users with a decided impression, p-value of a
    normal test against 0.5."""
    wa, wb, ti = _arrays(wins_a, wins_b, ties)
    if not len(wa) == len(wb) == len(ti):
        raise ValueError("wins_a, wins_b and ties differ in length")
    decided = wa + wb
    keep = decided > 0
    pref, var = _ratio(wa[keep], decided[keep])
    se = math.sqrt(var) if _finite(var) else NAN
    totals = int(wa.sum()), int(wb.sum()), int(ti.sum())
    if not (_finite(se) and se > 0):
        return Preference(*totals, pref, NAN_INTERVAL, NAN_INTERVAL, NAN)
    z = sps.norm.ppf(0.975)
    return Preference(
        *totals,
        preference_a=pref,
        ci95=_interval(pref, z * se),
        always_valid=_interval(pref, always_valid_half_width(se, TAU_PREFERENCE)),
        p_value=float(2 * sps.norm.sf(abs(pref - 0.5) / se)),
    )
