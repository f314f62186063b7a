"""parrot-t2i: Parrot (Lee et al., ECCV 2024) — Pareto-optimal multi-reward RL for text-to-image models."""

from .config import Config, ConfigError, load_config
from .errors import ParrotError
from .objectives import Objective
from .pareto import hypervolume, non_dominated
from .policies.unet import T2IPolicy
from .trainer import train, train_iteration

__all__ = [
    "Config",
    "ConfigError",
    "Objective",
    "ParrotError",
    "T2IPolicy",
    "hypervolume",
    "load_config",
    "non_dominated",
    "train",
    "train_iteration",
]
__version__ = "0.1.0"
