"""The report's statistics (`recsys_server.experiments.stats`) against hand computations, scipy
and a bootstrap; degenerate inputs give nan, not exceptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from recsys_server.experiments import stats as st

Z = sps.norm.ppf(0.975)
Z80 = sps.norm.ppf(0.8)


def delta_var(num, den) -> float:
    """The textbook form: (s_x^2 - 2 r s_xy + r^2 s_y^2) / (n * mean(y)^2)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    r = num.sum() / den.sum()
    c = np.cov(num, den, ddof=1)
    return (c[0, 0] - 2 * r * c[0, 1] + r * r * c[1, 1]) / (len(num) * den.mean() ** 2)


def test_half_width_by_hand_and_as_the_msprt_boundary() -> None:
    # se = tau = 1: sqrt(1 * 2 / 1 * (2 ln 20 + ln 2)).
    assert st.always_valid_half_width(1.0, 1.0) == pytest.approx(
        math.sqrt(2 * (2 * math.log(20) + math.log(2)))
    )
    assert st.always_valid_half_width(1.0, 1.0) == pytest.approx(3.65639, abs=1e-5)
    # At the boundary the mixture likelihood ratio sqrt(V/(V+T)) exp(T x^2 / (2V(V+T))) is 1/alpha.
    for se, tau, alpha in [(0.01, 0.05, 0.05), (0.3, 0.1, 0.01), (2.0, 2.0, 0.1)]:
        x = st.always_valid_half_width(se, tau, alpha)
        v, t = se * se, tau * tau
        lr = math.sqrt(v / (v + t)) * math.exp(t * x * x / (2 * v * (v + t)))
        assert lr == pytest.approx(1 / alpha)
        assert x > sps.norm.ppf(1 - alpha / 2) * se  # wider than the one-look interval
    assert math.isnan(st.always_valid_half_width(0.0, 1.0))
    assert math.isnan(st.always_valid_half_width(1.0, 0.0))


def test_ratio_by_hand() -> None:
    # Control: clicks 1, 2, 3 of 2, 2, 4 shown: r = 6/8; linearised 1-1.5, 2-1.5, 3-3 -> s^2 = 0.25;
    # var = 0.25 / (3 * (8/3)^2) = 0.01171875.
    num_c, den_c = [1, 2, 3], [2, 2, 4]
    num_t, den_t = [2, 3, 3, 4], [2, 4, 4, 4]
    assert delta_var(num_c, den_c) == pytest.approx(0.01171875)
    c = st.compare_ratio("ctr", num_c, den_c, num_t, den_t)
    rt = 12 / 14
    se = math.sqrt(0.01171875 + delta_var(num_t, den_t))
    assert c.metric == "ctr"
    assert c.control == pytest.approx(0.75)
    assert c.variant == pytest.approx(rt)
    assert c.difference == pytest.approx(rt - 0.75)
    assert c.relative == pytest.approx((rt - 0.75) / 0.75)
    assert c.ci95.low == pytest.approx(rt - 0.75 - Z * se)
    assert c.ci95.high == pytest.approx(rt - 0.75 + Z * se)
    assert c.p_value == pytest.approx(2 * sps.norm.sf((rt - 0.75) / se))
    half = st.always_valid_half_width(se, 0.1 * 0.75)
    assert c.always_valid == st.Interval(
        pytest.approx(rt - 0.75 - half), pytest.approx(rt - 0.75 + half)
    )
    assert c.significant is False
    assert c.mde_relative == pytest.approx((half / se + Z80) * se / 0.75)


def test_delta_method_matches_a_user_level_bootstrap() -> None:
    rng = np.random.default_rng(18)
    n = 3000

    def arm(rate: float) -> tuple[np.ndarray, np.ndarray]:
        shown = rng.poisson(20, n) + 1
        propensity = rng.beta(2, 2 / rate - 2, n)  # heterogeneous users, mean `rate`
        return rng.binomial(shown, propensity), shown

    (nc, dc), (nt, dt) = arm(0.05), arm(0.055)
    c = st.compare_ratio("ctr", nc, dc, nt, dt)
    boots = []
    for _ in range(2000):
        i, j = rng.integers(0, n, n), rng.integers(0, n, n)
        boots.append(nt[j].sum() / dt[j].sum() - nc[i].sum() / dc[i].sum())
    se = (c.ci95.high - c.ci95.low) / (2 * Z)
    assert se == pytest.approx(np.std(boots, ddof=1), rel=0.08)
    # The item-level binomial se ignores that a user's clicks go together: much smaller here.
    p = nc.sum() / dc.sum()
    assert math.sqrt(2 * p * (1 - p) / dc.sum()) < 0.8 * se


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    xc = rng.poisson(0.3, 400).astype(float)
    xt = rng.poisson(0.4, 250).astype(float) * 1.5
    c = st.compare_mean("conversions_per_user", xc, xt)
    ref = sps.ttest_ind(xt, xc, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c.ci95.low == pytest.approx(ci.low)
    assert c.ci95.high == pytest.approx(ci.high)
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.control == pytest.approx(xc.mean())
    assert c.difference == pytest.approx(xt.mean() - xc.mean())
    se = math.sqrt(xc.var(ddof=1) / 400 + xt.var(ddof=1) / 250)
    half = st.always_valid_half_width(se, 0.1 * xc.mean())
    assert c.always_valid.high - c.difference == pytest.approx(half)
    assert c.significant == (c.always_valid.low > 0)


@pytest.mark.parametrize("seed", range(10))
def test_always_valid_contains_the_fixed_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 5000))
    shown_c, shown_t = rng.poisson(10, n) + 1, rng.poisson(10, n) + 1
    c = st.compare_ratio(
        "ctr", rng.binomial(shown_c, 0.1), shown_c, rng.binomial(shown_t, 0.11), shown_t
    )
    m = st.compare_mean("value_per_user", rng.exponential(1, n), rng.exponential(1.1, n))
    for comp in (c, m):
        assert comp.always_valid.low < comp.ci95.low < comp.ci95.high < comp.always_valid.high
        if comp.significant:
            assert comp.p_value < 0.05


def test_clear_effects_are_significant() -> None:
    rng = np.random.default_rng(1)
    shown = np.full(20000, 10)
    c = st.compare_ratio("ctr", rng.binomial(shown, 0.10), shown, rng.binomial(shown, 0.12), shown)
    assert c.significant and c.always_valid.low > 0 and c.p_value < 1e-6
    assert c.relative == pytest.approx(0.2, abs=0.03)
    # A tenth of the users: the MDE grows (a little more than sqrt(10): the mixture is tuned to n).
    c_small = st.compare_ratio(
        "ctr",
        rng.binomial(shown[:2000], 0.1),
        shown[:2000],
        rng.binomial(shown[:2000], 0.1),
        shown[:2000],
    )
    assert c_small.mde_relative > 2.5 * c.mde_relative


def test_always_valid_never_narrower_than_welch_with_few_users() -> None:
    # Two users per arm, se 0.707, tau 10: the mixture's normal half-width is 3.37 se but
    # t(df 2) at 97.5% is 4.30; the always-valid interval takes the wider.
    c = st.compare_mean("value_per_user", [100.0, 101.0], [102.0, 103.0])
    se = math.sqrt(0.5 / 2 + 0.5 / 2)
    assert st.always_valid_half_width(se, 10.0) == pytest.approx(3.37 * se, rel=0.01)
    assert c.ci95.high - c.difference == pytest.approx(sps.t.ppf(0.975, 2) * se)
    assert c.always_valid == c.ci95


def test_mde_by_hand() -> None:
    se, control = 0.002, 0.05
    half = st.always_valid_half_width(se, 0.005)
    assert st.mde_relative(se, control) == pytest.approx((half / se + Z80) * se / control)
    # The fixed-horizon MDE (z_.975 + z_.8) se / control is smaller: one look needs less.
    assert (Z + Z80) * se / control < st.mde_relative(se, control)
    assert math.isnan(st.mde_relative(se, 0.0))


def test_degenerate_comparisons_are_nan_not_errors() -> None:
    empty = st.compare_ratio("ctr", [], [], [], [])
    assert math.isnan(empty.control) and math.isnan(empty.difference)
    assert math.isnan(empty.ci95.low) and math.isnan(empty.always_valid.high)
    assert not empty.significant and math.isnan(empty.mde_relative)
    # One user per arm: values, no interval.
    one = st.compare_ratio("ctr", [1], [10], [2], [10])
    assert one.control == pytest.approx(0.1) and one.difference == pytest.approx(0.1)
    assert math.isnan(one.p_value) and not one.significant
    # Control 0 (no clicks at all in control): relative and MDE undefined.
    zero = st.compare_ratio("ctr", [0, 0, 0], [5, 5, 5], [1, 0, 2], [5, 5, 5])
    assert zero.control == 0 and math.isnan(zero.relative) and math.isnan(zero.mde_relative)
    assert not zero.significant
    # Zero variance in both arms.
    flat = st.compare_mean("value_per_user", [2.0, 2.0, 2.0], [3.0, 3.0])
    assert flat.difference == pytest.approx(1.0)
    assert math.isnan(flat.p_value) and math.isnan(flat.ci95.low) and not flat.significant
    assert math.isnan(st.compare_mean("value_per_user", [], [1.0, 2.0]).control)
    # No items shown in one arm.
    assert math.isnan(st.compare_ratio("ctr", [0, 0], [0, 0], [1, 2], [3, 3]).control)
    with pytest.raises(ValueError):
        st.compare_ratio("ctr", [1, 2], [3], [1], [1])


def test_sample_ratio() -> None:
    # 52/48 of 100 against 1:1: chi^2 = (2^2 + 2^2) / 50 = 0.16.
    s = st.sample_ratio([52, 48], [1, 1])
    assert s.observed == (52, 48) and s.expected_shares == (0.5, 0.5)
    assert s.chi_square == pytest.approx(0.16)
    assert s.p_value == pytest.approx(sps.chi2.sf(0.16, 1))
    assert not s.mismatch
    # The same proportions at 20,000 users are an alarm.
    big = st.sample_ratio([10400, 9600], [50, 50])
    assert big.chi_square == pytest.approx(32.0) and big.mismatch
    # Shares on any scale, three variants, against scipy.
    s3 = st.sample_ratio([700, 200, 100], [70, 20, 10])
    assert s3.expected_shares == pytest.approx((0.7, 0.2, 0.1))
    assert s3.chi_square == pytest.approx(0.0) and s3.p_value == pytest.approx(1.0)
    obs = [730, 180, 90]
    ref = sps.chisquare(obs, [700, 200, 100])
    assert st.sample_ratio(obs, [0.7, 0.2, 0.1]).p_value == pytest.approx(ref.pvalue)
    assert st.sample_ratio(obs, [0.7, 0.2, 0.1], threshold=0.5).mismatch == (ref.pvalue < 0.5)
    # Users in a variant configured for none: a mismatch; nobody yet: no verdict.
    assert st.sample_ratio([10, 1], [1, 0]).mismatch
    none = st.sample_ratio([0, 0], [1, 1])
    assert math.isnan(none.p_value) and not none.mismatch
    with pytest.raises(ValueError):
        st.sample_ratio([1, 2], [1])


def test_preference_by_hand() -> None:
    # Users' decided impressions: wins_a / (wins_a + wins_b) summed: (2+1+0+3) / (3+1+2+4) = 0.6.
    wa, wb, ties = [2, 1, 0, 3, 0], [1, 0, 2, 1, 0], [0, 1, 0, 0, 4]
    p = st.preference(wa, wb, ties)
    assert (p.wins_a, p.wins_b, p.ties) == (6, 4, 5)
    assert p.preference_a == pytest.approx(0.6)
    keep = [0, 1, 2, 3]  # the user with only ties has no decided comparison
    se = math.sqrt(delta_var(np.array(wa)[keep], (np.array(wa) + np.array(wb))[keep]))
    assert p.ci95.low == pytest.approx(0.6 - Z * se)
    assert p.p_value == pytest.approx(2 * sps.norm.sf(0.1 / se))
    half = st.always_valid_half_width(se, st.TAU_PREFERENCE)
    assert p.always_valid.high == pytest.approx(0.6 + half)
    assert p.always_valid.low < p.ci95.low
    nobody = st.preference([0, 0], [0, 0], [1, 0])
    assert nobody.ties == 1 and math.isnan(nobody.preference_a) and math.isnan(nobody.p_value)
    assert math.isnan(st.preference([], [], []).ci95.low)


def test_preference_detects_a_strong_preference() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    decided = rng.poisson(2, n)
    wa = rng.binomial(decided, 0.6)
    p = st.preference(wa, decided - wa, rng.poisson(1, n))
    assert p.preference_a == pytest.approx(0.6, abs=0.03)
    assert p.always_valid.low > 0.5 and p.p_value < 1e-6
