"""Bjøntegaard deltas with the `bjontegaard` package (piecewise cubic Hermite, "pchip").

BD-rate is the average rate difference in percent of the test codec against the anchor at equal quality
(negative = the test saves bits); BD-quality the average quality difference at equal rate. For metrics
where lower is better (LPIPS) the quality axis is negated first, so the sign convention stays the same.
Curves need at least two points with distinct rates and a quality strictly monotonic in rate; otherwise the
result is NaN with the reason, so one broken curve does not end a whole report.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Sequence

import numpy as np

LOWER_IS_BETTER = frozenset({"lpips", "lpips_alex", "lpips_vgg", "dists"})


@dataclasses.dataclass(frozen=True)
class BDResult:
    value: float  # percent for BD-rate, metric units for BD-quality; NaN when undefined
    overlap: float  # fraction of the anchor's quality range the test curve covers (0..1)
    reason: str = ""


def _prepare(rates: Sequence[float], quality: Sequence[float], lower_is_better: bool):
    r = np.asarray(rates, np.float64)
    q = np.asarray(quality, np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"rates {r.shape} and quality {q.shape} must be equal-length 1-D")
    if lower_is_better:
        q = -q
    order = np.argsort(r)
    return r[order], q[order]


def _check(r, q, label):
    if r.size < 2:
        return f"{label} has {r.size} point(s); at least 2 needed"
    if np.any(~np.isfinite(r)) or np.any(~np.isfinite(q)) or np.any(r <= 0):
        return f"{label} has non-finite values or non-positive rates"
    if np.any(np.diff(r) <= 0):
        return f"{label} has repeated rates"
    if not (np.all(np.diff(q) > 0)):
        return f"{label} quality is not strictly increasing with rate"
    return ""


def _overlap(qa, qt):
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    span = qa.max() - qa.min()
    return float(max(0.0, hi - lo) / span) if span > 0 else 0.0


def bd_rate(anchor_rates, anchor_quality, test_rates, test_quality, *, lower_is_better: bool = False) -> BDResult:
    """BD-rate (%) of the test curve against the anchor curve."""
    return _bd("rate", anchor_rates, anchor_quality, test_rates, test_quality, lower_is_better)


def bd_quality(anchor_rates, anchor_quality, test_rates, test_quality, *, lower_is_better: bool = False) -> BDResult:
    """BD-quality (e.g. BD-PSNR in dB): mean test-minus-anchor quality at equal rate, in the metric's units."""
    return _bd("quality", anchor_rates, anchor_quality, test_rates, test_quality, lower_is_better)


def _bd(kind, ra, qa, rt, qt, lower_is_better):
    import bjontegaard  # pulls in SciPy; only the BD-rate needs it

    ra, qa = _prepare(ra, qa, lower_is_better)
    rt, qt = _prepare(rt, qt, lower_is_better)
    reason = _check(ra, qa, "anchor curve") or _check(rt, qt, "test curve")
    if reason:
        return BDResult(math.nan, 0.0, reason)
    overlap = _overlap(qa, qt) if kind == "rate" else _overlap(np.log(ra), np.log(rt))
    if overlap <= 0:
        return BDResult(math.nan, 0.0, "the curves do not overlap")
    fn = bjontegaard.bd_rate if kind == "rate" else bjontegaard.bd_psnr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the overlap is returned instead of warned about
        value = float(fn(ra, qa, rt, qt, method="pchip", require_matching_points=False, min_overlap=0))
    if kind == "quality" and lower_is_better:
        value = -value  # back to the metric's own units: negative LPIPS delta = better
    return BDResult(value, overlap)
