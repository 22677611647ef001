"""BD-rate / BD-quality on curves whose answer is known in closed form."""

import math

import numpy as np
import pytest

from m3cvc_jax.eval.bdrate import bd_quality, bd_rate

RATES = np.array([0.005, 0.01, 0.02, 0.04, 0.08])


def psnr_curve(r):
    return 28.0 + 2.0 * np.log2(r / 0.005)  # 2 dB per doubling of the rate


@pytest.mark.parametrize("factor", [0.8, 0.5, 1.25])
def test_constant_rate_factor_gives_that_percentage(factor):
    res = bd_rate(RATES, psnr_curve(RATES), RATES * factor, psnr_curve(RATES))
    assert res.value == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert res.overlap == pytest.approx(1.0)


def test_quality_shift_on_log_linear_curve():
    # +1 dB at 2 dB per doubling = the same quality at 2^-0.5 of the rate: -29.29 %.
    shifted = psnr_curve(RATES) + 1.0
    res = bd_rate(RATES, psnr_curve(RATES), RATES, shifted)
    assert res.value == pytest.approx((2**-0.5 - 1) * 100, abs=1e-6)
    assert res.overlap == pytest.approx(0.875)
    assert bd_quality(RATES, psnr_curve(RATES), RATES, shifted).value == pytest.approx(1.0, abs=1e-9)


def test_lower_is_better_metric_keeps_the_sign_convention():
    lp = lambda r: 0.6 - 0.05 * np.log2(r / 0.005)
    res = bd_rate(RATES, lp(RATES), RATES * 0.5, lp(RATES), lower_is_better=True)
    assert res.value == pytest.approx(-50.0, abs=1e-9)
    q = bd_quality(RATES, lp(RATES), RATES * 0.5, lp(RATES), lower_is_better=True)
    assert q.value == pytest.approx(-0.05, abs=1e-9)  # LPIPS 0.05 lower at equal rate


def test_unequal_point_counts_and_unsorted_input():
    test_rates = np.array([0.03, 0.006, 0.012])
    res = bd_rate(RATES, psnr_curve(RATES), test_rates * 0.9, psnr_curve(test_rates))
    assert res.value == pytest.approx(-10.0, abs=1e-9)


def test_undefined_curves_give_nan_with_reason():
    bad = psnr_curve(RATES).copy()
    bad[2] = bad[1] - 1
    res = bd_rate(RATES, psnr_curve(RATES), RATES, bad)
    assert math.isnan(res.value) and "not strictly increasing" in res.reason
    res = bd_rate(RATES, psnr_curve(RATES), RATES[:1], psnr_curve(RATES[:1]))
    assert math.isnan(res.value) and "at least 2" in res.reason
    far = bd_rate(RATES, psnr_curve(RATES), RATES, psnr_curve(RATES) + 100)
    assert math.isnan(far.value) and "overlap" in far.reason
