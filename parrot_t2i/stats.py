"""Statistics for evaluation reports: per-reward means with Student-t confidence intervals."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats
from torch import Tensor


def mean_ci(values: Tensor | np.ndarray | list[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval for the mean; half-width is nan for one value.

    Images of one prompt are not independent, so over a prompt set this interval is optimistic
    by the intra-prompt correlation; the report states n as images and prompts.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan")
    t = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1))
    return mean, t * float(x.std(ddof=1)) / math.sqrt(len(x))


def seeds_to_resolve(effect: float, spread: float, confidence: float = 0.95, most: int = 100_000) -> int | None:
    """The fewest seeds n ≥ 2 at which a Student-t interval of half-width t(n−1)·spread/√n falls
    below |effect|: how many seeds a difference of this size needs before an interval excludes a
    tie, if later seeds scatter as these did. ``spread``: the standard deviation over seeds of the
    paired differences (the paired interval excludes zero), or the sum of the two rows' own
    standard deviations (their separate intervals stop overlapping, the stricter reading). None
    where it takes more than ``most`` (no effect, or one far below its noise)."""
    if effect == 0 or not math.isfinite(effect) or not math.isfinite(spread):
        return None
    if spread == 0:
        return 2

    # The half-width falls monotonically in n; bisect for the first n below |effect|.
    def resolved(n: int) -> bool:
        return float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * spread / math.sqrt(n) < abs(effect)

    if not resolved(most):
        return None
    low, high = 2, most
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if resolved(middle) else (middle + 1, high)
    return low


def within_group_correlation(scores: np.ndarray, groups: np.ndarray | list) -> np.ndarray:
    """(K, K) correlation of the K rewards after removing each group's mean: whether, among one
    prompt's images, a higher score on one reward comes with a higher or a lower score on another.
    This, not the correlation across prompts, is what per-prompt selection and advantages see: a
    world where every off-diagonal entry is positive offers a weighted sum no trade-off to lose."""
    x = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups)
    centred = x.copy()
    for g in np.unique(groups):
        centred[groups == g] -= x[groups == g].mean(0)
    norms = np.sqrt((centred**2).sum(0))
    return (centred.T @ centred) / np.outer(norms, norms)


BAR_MAX_DROP = 0.01  # issue 15's bar for a default job: the most any reward may fall
BAR_CHECKER_TOLERANCE = 0.03  # ... and the most the checker's colour or background accuracy may fall


def bar_failures(
    change: dict[str, float],
    rewards: list[str],
    max_drop: float = BAR_MAX_DROP,
    checker_tolerance: float = BAR_CHECKER_TOLERANCE,
) -> list[str]:
    """What keeps one run's before → after ``change`` from counting as a win for the default job
    (issue 15): the average and the per-prompt hypervolume must rise, no reward may fall by more
    than ``max_drop``, and the attribute checker's colour and background accuracy must not fall more
    than ``checker_tolerance`` below the base model's (the issue's "within 0.03", read one-sided: a
    rise is prompt following gained, not harm). Empty when the run passes; otherwise one short
    entry per failure, e.g. "mini_preference -0.018", so a table can say why."""
    failures = [f"{key} {change[key]:+.3f}" for key in ("average", "hv_per_prompt") if change[key] <= 0]
    failures += [f"{name} {change[name]:+.3f}" for name in rewards if change[name] < -max_drop]
    failures += [f"{key} {change[key]:+.3f}" for key in ("colour", "background") if change[key] < -checker_tolerance]
    return failures


def summarize(scores: Tensor, names: list[str], confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Per reward column of ``scores`` (B, K): mean, CI half-width and n; plus the per-image average
    over rewards as "average"."""
    table = {}
    for k, name in enumerate(names + ["average"]):
        column = scores[:, k] if k < len(names) else scores.mean(1)
        mean, half = mean_ci(column.detach().cpu().numpy(), confidence)
        table[name] = {"mean": mean, "ci95": half, "n": len(column)}
    return table
