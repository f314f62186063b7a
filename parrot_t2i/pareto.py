"""Batch-wise Pareto selection (Parrot §3.2, the "NDSet" of Algorithm 1) and hypervolume.

Every reward is *higher is better*. Image a dominates image b iff r(a) >= r(b) in every reward and
r(a) > r(b) in at least one. Parrot updates only on the first non-dominated front of each selection
scope. The deeper geometry (front ranks of non-dominated sorting, crowding distance, dominance
counts, exclusive hypervolume contributions) feeds the Pareto advantage estimators of
``objectives.py``. Everything here is a pure function of a reward matrix, tested against brute force.
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
    finite, beats = _scoped_dominance(rewards, groups)
    return finite & ~beats.any(0)


def _scoped_dominance(rewards: Tensor, groups: Tensor | None) -> tuple[Tensor, Tensor]:
    """(finite (B,), beats (B, B)): dominance among finite rows, within a group when given."""
    finite = torch.isfinite(rewards).all(-1)
    beats = dominates(torch.where(finite[:, None], rewards, torch.zeros_like(rewards)))
    beats &= finite[:, None] & finite[None, :]
    if groups is not None:
        beats &= groups[:, None] == groups[None, :]
    return finite, beats


def front_ranks(rewards: Tensor, groups: Tensor | None = None) -> Tensor:
    """Non-dominated sorting (Deb et al. 2002): 0 for the first front, 1 for the front that is
    non-dominated once the first is removed, and so on, within each group. Non-finite rows get -1.

    rewards: (B, K); groups: optional (B,). Returns (B,) long. At most B peeling rounds, each one
    vectorised over the (B, B) dominance matrix.
    """
    finite, beats = _scoped_dominance(rewards, groups)
    ranks = torch.full((len(rewards),), -1, dtype=torch.long, device=rewards.device)
    remaining, rank = finite.clone(), 0
    while remaining.any():
        front = remaining & ~(beats & remaining[:, None]).any(0)
        ranks[front] = rank
        remaining &= ~front
        rank += 1
    return ranks


def crowding_distance(rewards: Tensor, ranks: Tensor, groups: Tensor | None = None) -> Tensor:
    """NSGA-II crowding distance of every row within its (group, front): per reward, the gap between
    its two neighbours over the front's range, summed over rewards; a front's extreme rows (and
    fronts of one or two rows) get +inf. Rows with rank -1 get 0. Returns (B,) float."""
    out = torch.zeros(len(rewards), dtype=torch.float64, device=rewards.device)
    group_ids = groups if groups is not None else torch.zeros_like(ranks)
    for g, r in torch.stack([group_ids, ranks], 1).unique(dim=0).tolist():
        if r < 0:
            continue
        rows = ((group_ids == g) & (ranks == r)).nonzero().squeeze(1)
        values = rewards[rows].double()
        for k in range(values.shape[1]):
            order = values[:, k].argsort(stable=True)
            column = values[order, k]
            span = column[-1] - column[0]
            gap = torch.full_like(column, float("inf"))
            if len(rows) > 2:
                gap[1:-1] = (column[2:] - column[:-2]) / span if span > 0 else 0.0
            out[rows[order]] += gap
    return out


def dominance_counts(rewards: Tensor, groups: Tensor | None = None) -> Tensor:
    """(rows each row dominates) − (rows that dominate it), within each group: (B,) long; 0 for
    non-finite rows."""
    finite, beats = _scoped_dominance(rewards, groups)
    return torch.where(finite, beats.sum(1) - beats.sum(0), torch.zeros_like(finite, dtype=torch.long))


def hypervolume_contributions(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Exclusive hypervolume contribution of each point (N, K): HV(all) − HV(all but that point).

    Dominated points, duplicates of another point and points not above the reference contribute 0.
    Only first-front points are recomputed, so the cost is |front| hypervolume calls.
    """
    pts = np.asarray(points, dtype=np.float64)
    out = np.zeros(len(pts))
    above = np.isfinite(pts).all(1) & (pts > reference).all(1)
    if not above.any():
        return out
    front = np.flatnonzero(above)[non_dominated(torch.from_numpy(pts[above])).numpy()]
    total = hypervolume(pts[front], reference)
    for i in front:
        out[i] = total - hypervolume(pts[front[front != i]], reference) if len(front) > 1 else total
    return out


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


def per_prompt_hypervolume(scores: Tensor | np.ndarray, prompts: list[str], reference: Tensor | np.ndarray) -> float:
    """Mean over prompts of the hypervolume of each prompt's images (rows of ``scores`` (B, K))
    above ``reference``: how much of the reward space a model covers *for one request*, which a
    hypervolume of all images pooled across prompts hides (different prompts fill different corners)."""
    values = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    keys = np.asarray(prompts)
    return float(np.mean([hypervolume(values[keys == p], reference) for p in dict.fromkeys(prompts)]))


def lower_quantile_reference(scores: Tensor | np.ndarray, quantile: float = 0.1) -> np.ndarray:
    """A hypervolume reference point: each reward's ``quantile`` over ``scores`` (B, K), e.g. a base
    model's images. Below-reference images add nothing, so the origin (which every image clears)
    stops dominating the measure."""
    values = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    return np.quantile(values[np.isfinite(values).all(1)], quantile, axis=0)


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
