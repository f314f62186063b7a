"""Reward models. Importing this package registers every built-in reward."""

from . import blip, classifier, clip, image_stats, mini  # noqa: F401  (imported to register their rewards)
from .base import (
    REGISTRY,
    CallableReward,
    Reward,
    RewardError,
    build_reward,
    build_rewards,
    check_reward,
    register_reward,
    score_all,
)

__all__ = [
    "REGISTRY",
    "CallableReward",
    "Reward",
    "RewardError",
    "build_reward",
    "build_rewards",
    "check_reward",
    "register_reward",
    "score_all",
]
