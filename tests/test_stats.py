"""Confidence intervals for evaluation reports."""

import math

import numpy as np
import pytest
import torch

from parrot_t2i.stats import bar_failures, mean_ci, seeds_to_resolve, summarize, within_group_correlation


def test_mean_ci_by_hand():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # s = sqrt(2.5); t(0.975, 4) = 2.7764451; half = t · s / sqrt(5)
    assert mean == 3.0 and half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0)
    assert math.isnan(mean_ci([7.0])[1]) and mean_ci([7.0])[0] == 7.0
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # non-finite values are left out
    # 90% is narrower than 95%, which is narrower than 99%
    x = np.random.default_rng(0).normal(size=50)
    assert mean_ci(x, 0.90)[1] < mean_ci(x, 0.95)[1] < mean_ci(x, 0.99)[1]


def test_interval_covers_the_true_mean_at_its_rate():
    rng = np.random.default_rng(1)
    covered = sum(abs(m) <= h for m, h in (mean_ci(rng.normal(size=8)) for _ in range(2000)))
    assert 0.93 < covered / 2000 < 0.97  # nominal 0.95 for normal data, even at n = 8


def test_summarize_adds_the_average_column():
    scores = torch.tensor([[1.0, 3.0], [3.0, 5.0]])
    table = summarize(scores, ["a", "b"])
    assert table["a"]["mean"] == 2.0 and table["b"]["mean"] == 4.0 and table["average"]["mean"] == 3.0
    assert table["a"]["n"] == 2 and table["a"]["ci95"] == pytest.approx(
        12.7062047 * math.sqrt(2) / math.sqrt(2), rel=1e-6
    )


def test_seeds_to_resolve_by_hand():
    # effect 2, spread √2: t(1)·√2/√2 = 12.71, t(2)·√2/√3 = 3.51, t(3)·√2/2 = 2.25, t(4)·√2/√5 = 1.76 < 2
    assert seeds_to_resolve(2.0, math.sqrt(2.0)) == 5
    assert seeds_to_resolve(-2.0, math.sqrt(2.0)) == 5  # the sign does not matter
    # one seed-spread's effect: t(n−1)/√n < 1 first at n = 7 (t(5) = 2.571, /√6 = 1.050; t(6) = 2.447, /√7 = 0.925)
    assert seeds_to_resolve(0.01, 0.01) == 7
    assert seeds_to_resolve(1.0, 0.0) == 2  # no scatter: the fewest an interval needs
    assert seeds_to_resolve(0.0, 1.0) is None  # no effect is never resolved
    assert seeds_to_resolve(1e-4, 1.0, most=1000) is None  # (1.96 / 1e-4)² seeds: past the cap
    # a small effect: t → 1.96, so n → (1.96 · spread / effect)² = 384.1; t(n−1) > 1.96 adds three
    assert seeds_to_resolve(0.1, 1.0) == 387


def test_within_group_correlation_by_hand():
    # Group a centres to (−1, −1), (1, 1); group b to (−1, 1), (1, −1): Σxy = 1 + 1 − 1 − 1 = 0.
    scores = [[0.0, 0.0], [2.0, 2.0], [5.0, 1.0], [7.0, -1.0]]
    assert within_group_correlation(scores, ["a", "a", "b", "b"]) == pytest.approx(np.eye(2))
    # The same scores as one group: the groups' levels now count (b: higher x, lower y) and the
    # correlation turns negative: centred x = (−3.5, −1.5, 1.5, 3.5), y = (−0.5, 1.5, 0.5, −1.5),
    # x·y = −5, x·x = 29, y·y = 5.
    assert within_group_correlation(scores, [0, 0, 0, 0])[0, 1] == pytest.approx(-5 / math.sqrt(29 * 5))
    # Within-group rises together: +1, whatever the groups' levels.
    together = within_group_correlation([[0.0, 9.0], [1.0, 10.0], [5.0, -3.0], [6.0, -2.0]], [0, 0, 1, 1])
    assert together[0, 1] == pytest.approx(1.0)


def test_bar_failures_by_hand():
    passing = {"average": 0.019, "hv_per_prompt": 0.0005, "a": -0.006, "b": 0.04, "colour": 0.008, "background": -0.03}
    assert bar_failures(passing, ["a", "b"]) == []  # −0.006 ≥ −0.01 and |−0.03| ≤ 0.03: both on the line's safe side
    failing = {**passing, "average": 0.0, "a": -0.018, "background": -0.031}
    assert bar_failures(failing, ["a", "b"]) == ["average +0.000", "a -0.018", "background -0.031"]
    assert bar_failures(failing, ["a", "b"], max_drop=0.02, checker_tolerance=0.05) == ["average +0.000"]
    assert bar_failures({**passing, "colour": 0.2}, ["a", "b"]) == []  # better prompt following is no harm
