"""Objectives: a reward matrix (B, K) becomes one policy-gradient weight per sample.

The T2I loss of every objective is ``-Σ_i weight_i Σ_t log p_θ(x_{t-1}^i | x_t^i, c^i)``, so an
objective is fully described by its weights. A weight is two separate decisions:

- **selection**, which samples reach a backward pass: the Pareto filter (the first non-dominated
  front of each scope, paper §3.2) or every valid sample;
- **credit**, the signed value each selected sample carries, divided by the number selected.

Credits (``objective.name``):

- ``parrot`` (paper Eq. 4): r_{k_i}(x_i), the reward whose identifier conditioned sample i.
- ``weighted_sum`` (DPOK with raw rewards; Flow-GRPO's group-z sum with group normalisation):
  Σ_k λ_k r_k(x_i). With the Pareto filter and normalised rewards this is the "Pareto filter +
  per-reward-normalised advantage from all K rewards" estimator.
- ``single`` ("HP only" baseline): r_k(x_i) for one fixed k.
- ``normalize_then_sum`` (GDPO; MixGRPO's ``advantage_aggr``): each reward standardised within its
  group, summed, and the sum standardised over the batch.
- ``front_rank``: −(non-dominated-sorting rank) + a crowding-distance tie-break inside a front,
  standardised within the scope: every front above the scope's average pulls, every one below pushes.
- ``dominance_count``: (samples it dominates) − (samples dominating it), standardised in the scope.
- ``hv_contribution``: the exclusive hypervolume contribution in the scope (rewards min-max scaled
  in the scope, reference 0.1 below the minimum), standardised; dominated samples contribute 0.
- ``random``: zero-mean random weights, the drift control (what any update costs on its own).

``reward_normalization`` rescales the reward values that ``parrot``, ``weighted_sum`` and ``single``
credit; the rank-based credits and Pareto selection read the raw rewards (dominance is scale-free).
The scope of selection and of the rank-based credits is ``objective.selection``: each prompt's group
(the paper) or the whole global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import ObjectiveConfig
from .pareto import crowding_distance, dominance_counts, front_ranks, hypervolume_contributions, non_dominated

_EPS = 1e-6
# Credits whose default selection is the Pareto filter; the others train on every valid sample.
FILTERED_BY_DEFAULT = {"parrot"}


def selected_mean(credit: Tensor, selected: Tensor) -> Tensor:
    """Every objective's last step: credit (B,) on the selected samples, 0 elsewhere, over |selected|."""
    return torch.where(selected, credit, torch.zeros_like(credit)) / selected.sum().clamp(min=1)


def parrot_weights(values: Tensor, reward_index: Tensor, selected: Tensor) -> Tensor:
    """Paper Eq. 4: r_{k_i}(x_i) / |P| on the Pareto set P. values (B, K); reward_index (B,) long;
    selected (B,) bool -> (B,)."""
    return selected_mean(values.gather(1, reward_index[:, None]).squeeze(1), selected)


def weighted_sum_weights(values: Tensor, lambdas: Tensor, selected: Tensor) -> Tensor:
    """Σ_k λ_k values_k averaged over the selected samples (DPOK: every valid one). values (B, K)."""
    return selected_mean(values @ lambdas.to(values), selected)


def normalize_rewards(rewards: Tensor, valid: Tensor, groups: Tensor | None = None) -> Tensor:
    """Standardise every reward column over the valid samples of the batch, or of each group.

    Per group this is the group-relative advantage of GRPO; over the batch it is DDPO's per-reward
    normalisation. A group of one sample (or a constant column) maps to 0.
    """
    if groups is None:
        groups = torch.zeros(len(rewards), dtype=torch.long, device=rewards.device)
    member = (groups[:, None] == groups.unique()[None, :]) & valid[:, None]  # (B, G)
    member_f = member.to(rewards.dtype)
    filled = torch.where(valid[:, None], rewards, torch.zeros_like(rewards))
    count = member_f.sum(0).clamp(min=1)[:, None]  # (G, 1)
    mean = member_f.T @ filled / count  # (G, K)
    var = member_f.T @ filled.square() / count - mean.square()
    std = var.clamp(min=0).sqrt()
    row_group = member_f.argmax(1)  # each valid row's group column
    out = (filled - mean[row_group]) / (std[row_group] + _EPS)
    return torch.where(valid[:, None], out, torch.zeros_like(out))


def standardize(scores: Tensor, valid: Tensor, groups: Tensor | None = None) -> Tensor:
    """One score per sample (B,) standardised within each group (or the batch): an advantage."""
    return normalize_rewards(scores.to(torch.float32)[:, None], valid, groups)[:, 0]


def normalize_then_sum(rewards: Tensor, valid: Tensor, groups: Tensor | None) -> Tensor:
    """GDPO's advantage: Σ_k (group-z of r_k), then standardised over the batch. (B, K) -> (B,).

    Summing z-scores first lets a low-variance reward count as much as a high-variance one; the
    second standardisation keeps the advantage's scale independent of K.
    """
    return standardize(normalize_rewards(rewards, valid, groups).sum(1), valid)


def front_rank_scores(rewards: Tensor, groups: Tensor | None) -> Tensor:
    """−rank + 0.5·c/(1+c) with c the crowding distance (∞ → 0.5): the tie-break inside a front
    prefers isolated points and never lifts a row above the front ahead of it. (B,) float."""
    ranks = front_ranks(rewards, groups)
    crowd = crowding_distance(rewards, ranks, groups)
    bonus = torch.where(torch.isinf(crowd), torch.ones_like(crowd), crowd / (1 + crowd))
    return (-ranks.double() + 0.5 * bonus).float()


def hv_contribution_scores(rewards: Tensor, valid: Tensor, groups: Tensor | None) -> Tensor:
    """Exclusive hypervolume contribution of each valid row within its scope, with every reward
    min-max scaled to [0, 1] in the scope and the reference at −0.1 (so the extremes count). (B,)."""
    out = torch.zeros(len(rewards))
    scope = groups if groups is not None else torch.zeros(len(rewards), dtype=torch.long)
    for g in scope[valid].unique().tolist():
        rows = ((scope == g) & valid).nonzero().squeeze(1)
        values = rewards[rows].double().cpu().numpy()
        low, span = values.min(0), np.ptp(values, 0)
        scaled = (values - low) / np.where(span > 0, span, 1.0)
        out[rows] = torch.from_numpy(hypervolume_contributions(scaled, np.full(values.shape[1], -0.1))).float()
    return out


@dataclass
class Selection:
    """What an objective decided for one batch."""

    weights: Tensor  # (B,) policy-gradient weight per sample; 0 means no backward pass
    selected: Tensor  # (B,) bool, the samples that enter the update (Parrot: the Pareto set P)
    valid: Tensor  # (B,) bool, samples whose every reward was finite


class Objective:
    """Binds an :class:`ObjectiveConfig` to the reward order of a run.

    ``seed`` seeds the ``random`` control's weights (the same on every process).
    """

    def __init__(self, config: ObjectiveConfig, reward_names: list[str], seed: int = 0):
        self.config = config
        self.num_rewards = len(reward_names)
        self.lambdas = torch.tensor(config.weights or [1.0 / len(reward_names)] * len(reward_names))
        if len(self.lambdas) != self.num_rewards:
            raise ValueError(
                f"objective.weights has {len(self.lambdas)} entries but {self.num_rewards} rewards are configured"
            )
        if config.name == "single":
            self.lambdas = torch.zeros(self.num_rewards)
            self.lambdas[reward_names.index(config.reward)] = 1.0
        self.pareto_filter = (
            config.name in FILTERED_BY_DEFAULT if config.pareto_filter is None else config.pareto_filter
        )
        self.generator = torch.Generator().manual_seed(seed * 7919 + 17)

    def __call__(self, rewards: Tensor, groups: Tensor, reward_index: Tensor) -> Selection:
        """rewards (B, K) raw scores; groups (B,) prompt ids; reward_index (B,) identifier of each sample."""
        cfg = self.config
        valid = torch.isfinite(rewards).all(1)
        scope = groups if cfg.selection == "group" else None
        selected = non_dominated(rewards, scope) if self.pareto_filter else valid
        if cfg.name in ("parrot", "weighted_sum", "single"):
            if cfg.reward_normalization == "none":
                values = torch.where(valid[:, None], rewards, torch.zeros_like(rewards))
            else:
                values = normalize_rewards(rewards, valid, groups if cfg.reward_normalization == "group" else None)
            if cfg.name == "parrot":
                weights = parrot_weights(values, reward_index, selected)
            else:
                weights = weighted_sum_weights(values, self.lambdas, selected)
        else:
            weights = selected_mean(self.advantage(rewards, valid, groups, scope), selected)
        return Selection(weights=weights, selected=selected, valid=valid)

    def advantage(self, rewards: Tensor, valid: Tensor, groups: Tensor, scope: Tensor | None) -> Tensor:
        """The (B,) advantage of the estimators that are not a weighted reward."""
        name = self.config.name
        if name == "normalize_then_sum":
            return normalize_then_sum(rewards, valid, groups)
        if name == "random":
            scores = torch.randn(len(rewards), generator=self.generator)
        elif name == "front_rank":
            scores = front_rank_scores(rewards, scope)
        elif name == "dominance_count":
            scores = dominance_counts(rewards, scope).float()
        else:  # hv_contribution
            scores = hv_contribution_scores(rewards, valid, scope)
        return standardize(scores.to(rewards.device), valid, scope)


def policy_gradient_loss(
    log_prob: Tensor, old_log_prob: Tensor, weights: Tensor, clip_range: float | None = None
) -> Tensor:
    """Loss whose gradient ascends Σ_i weight_i · log p_θ(x_{t-1}^i | x_t^i) over one chunk.

    log_prob, old_log_prob, weights: (b,), one row per (sample, timestep) pair of the chunk.
    Without ``clip_range`` this is the paper's REINFORCE term ``-Σ w·log p``. With it, DDPO's PPO
    surrogate ``Σ max(-w·ρ, -w·clip(ρ, 1±ε))`` with ρ = exp(log p − log p_old); both have the
    same gradient at ρ = 1 (the first update).
    """
    if clip_range is None:
        return -(weights * log_prob).sum()
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -weights * ratio
    clipped = -weights * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped).sum()


def pen_policy_gradient_loss(token_log_probs: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """PEN REINFORCE loss (paper Algorithm 1, PEN step): −Σ_i w_i · log p_φ(ĉ_i | c_i).

    token_log_probs, mask: (B, L), the expansion tokens' log-probs and which are real;
    weights: (B,), the same per-sample weights as the T2I update (0 outside the Pareto set).
    The sequence log-prob is the sum over its tokens. Leaves out any KL term to the SFT model.
    """
    return -(weights * (token_log_probs * mask).sum(1)).sum()
