"""Batch-wise Pareto selection (Parrot §3.2, the "NDSet" of Algorithm 1) and hypervolume.

Every reward is *higher is better*. Image a dominates image b iff r(a) >= r(b) in every reward and
r(a) > r(b) in at least one. Parrot updates only on the first non-dominated front of each selection
scope; everything here is a pure function of a reward matrix so it is tested against brute force.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def dominates(rewards: Tensor) -> Tensor:
    """Pairwise dominance matrix: ``out[a, b]`` is True iff sample a dominates sample b.

    rewards: (B, K). Returns a (B, B) bool tensor; memory is O(B²K), fine for the few hundred
    images of one iteration.
    """
    left, right = rewards[:, None, :], rewards[None, :, :]  # (B, 1, K), (1, B, K)
    return (left >= right).all(-1) & (left > right).any(-1)


def non_dominated(rewards: Tensor, groups: Tensor | None = None) -> Tensor:
    """First-front mask of a reward matrix.

    rewards: (B, K), higher is better in every column.
    groups: optional (B,) integer ids; dominance is then only checked within a group (the paper
        selects among the N images of one prompt). ``None`` selects over the whole batch.
    Returns a (B,) bool mask. A row with any non-finite reward is never selected and dominates
    nothing, so one broken reward evaluation cannot silence the rest of its group.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (B, K), got shape {tuple(rewards.shape)}")
    finite = torch.isfinite(rewards).all(-1)  # (B,)
    beats = dominates(torch.where(finite[:, None], rewards, torch.zeros_like(rewards)))
    beats &= finite[:, None] & finite[None, :]
    if groups is not None:
        beats &= groups[:, None] == groups[None, :]
    return finite & ~beats.any(0)


def hypervolume(points: Tensor | np.ndarray, reference: Tensor | np.ndarray) -> float:
    """Exact hypervolume (maximisation) of ``points`` (N, K) above ``reference`` (K,).

    The volume of the union of the boxes [reference, p] over the points that strictly exceed the
    reference in every coordinate. Computed by slicing along the last objective (HSO), with a
    vectorised 2-D staircase at the bottom: O(N^(K-1) log N) after reducing to the first front,
    which is fast for the K <= 4 rewards of the paper and a few hundred points.
    """
    pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
    ref = np.asarray(reference.detach().cpu() if isinstance(reference, Tensor) else reference, dtype=np.float64)
    if pts.ndim != 2 or ref.shape != (pts.shape[1],):
        raise ValueError(f"points must be (N, K) and reference (K,), got {pts.shape} and {ref.shape}")
    pts = pts[np.isfinite(pts).all(1) & (pts > ref).all(1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[non_dominated(torch.from_numpy(pts)).numpy()]
    return float(_hso(pts, ref))


def _hso(pts: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume by slicing; ``pts`` all strictly above ``ref``."""
    if pts.shape[1] == 1:
        return pts[:, 0].max() - ref[0]
    if pts.shape[1] == 2:
        order = np.argsort(-pts[:, 0], kind="stable")
        x, y = pts[order, 0], np.maximum.accumulate(pts[order, 1])
        widths = x - np.append(x[1:], ref[0])  # slab between consecutive x levels
        return float((widths * (y - ref[1])).sum())
    order = np.argsort(-pts[:, -1], kind="stable")
    pts = pts[order]
    levels = np.append(pts[:, -1], ref[-1])
    volume = 0.0
    for i in range(len(pts)):
        depth = levels[i] - levels[i + 1]
        if depth > 0:
            volume += depth * _hso(pts[: i + 1, :-1], ref[:-1])
    return volume
