"""Objectives: a reward matrix (B, K) becomes one policy-gradient weight per sample.

The T2I loss of every objective is ``-Σ_i weight_i Σ_t log p_θ(x_{t-1}^i | x_t^i, c^i)``, so an
objective is fully described by its weights:

- ``parrot`` (paper Eq. 4): weight_i = r_{k_i}(x_i) / |P| for i in the non-dominated set P, else 0,
  where k_i is the reward whose identifier conditioned sample i.
- ``weighted_sum`` (DPOK-style baseline): weight_i = Σ_k λ_k r_k(x_i) / B.
- ``single`` ("HP only" baseline): weight_i = r_k(x_i) / B for one fixed k.

Optional reward normalisation (off in the faithful preset) rescales the reward *values* that enter
the weights; Pareto selection always runs on the raw rewards (dominance is scale-free anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ObjectiveConfig
from .pareto import non_dominated

_EPS = 1e-6


def parrot_weights(values: Tensor, reward_index: Tensor, selected: Tensor) -> Tensor:
    """Paper Eq. 4. values (B, K); reward_index (B,) long; selected (B,) bool -> (B,)."""
    own = values.gather(1, reward_index[:, None]).squeeze(1)  # r_{k_i}(x_i)
    return torch.where(selected, own, torch.zeros_like(own)) / selected.sum().clamp(min=1)


def weighted_sum_weights(values: Tensor, lambdas: Tensor, valid: Tensor) -> Tensor:
    """DPOK-style scalarisation averaged over the valid samples. values (B, K); lambdas (K,)."""
    total = torch.where(valid[:, None], values, torch.zeros_like(values)) @ lambdas.to(values)
    return total / valid.sum().clamp(min=1)


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


@dataclass
class Selection:
    """What an objective decided for one batch."""

    weights: Tensor  # (B,) policy-gradient weight per sample; 0 means no backward pass
    selected: Tensor  # (B,) bool, the samples that enter the update (Parrot: the Pareto set P)
    valid: Tensor  # (B,) bool, samples whose every reward was finite


class Objective:
    """Binds an :class:`ObjectiveConfig` to the reward order of a run."""

    def __init__(self, config: ObjectiveConfig, reward_names: list[str]):
        self.config = config
        self.num_rewards = len(reward_names)
        self.lambdas = torch.tensor(config.weights or [1.0 / len(reward_names)] * len(reward_names))
        if len(self.lambdas) != self.num_rewards:
            raise ValueError(
                f"objective.weights has {len(self.lambdas)} entries but {self.num_rewards} rewards are configured"
            )
        self.single_index = reward_names.index(config.reward) if config.name == "single" else 0

    def __call__(self, rewards: Tensor, groups: Tensor, reward_index: Tensor) -> Selection:
        """rewards (B, K) raw scores; groups (B,) prompt ids; reward_index (B,) identifier of each sample."""
        cfg = self.config
        valid = torch.isfinite(rewards).all(1)
        if cfg.name == "parrot":
            selected = non_dominated(rewards, groups if cfg.selection == "group" else None)
        else:
            selected = valid
        if cfg.reward_normalization == "none":
            values = torch.where(valid[:, None], rewards, torch.zeros_like(rewards))
        else:
            values = normalize_rewards(rewards, valid, groups if cfg.reward_normalization == "group" else None)
        if cfg.name == "parrot":
            weights = parrot_weights(values, reward_index, selected)
        elif cfg.name == "weighted_sum":
            weights = weighted_sum_weights(values, self.lambdas, valid)
        else:
            one_hot = torch.zeros(self.num_rewards)
            one_hot[self.single_index] = 1.0
            weights = weighted_sum_weights(values, one_hot, valid)
        return Selection(weights=weights, selected=selected, valid=valid)


def policy_gradient_loss(log_prob: Tensor, old_log_prob: Tensor, weights: Tensor, clip_range: float | None = None) -> Tensor:
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
