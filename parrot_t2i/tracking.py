"""Experiment tracking through accelerate's trackers: which ones a run uses, what they are told at
the start (the flattened config), and the sample grids, which every tracker takes differently.

TensorBoard is the default and always installed; ``train.report_to`` adds or replaces it with
Weights & Biases or MLflow when the package is installed (``pip install 'parrot-t2i[wandb]'``,
``[mlflow]`` or ``[trackers]`` for both). Each follows its own environment settings (for example
``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI``); the run folder is their logging directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available
from torch import Tensor

from .config import TRACKERS, parse_report_to
from .errors import ParrotError

PROJECT = "parrot"  # the project name trackers see; TensorBoard writes into RUN_DIR/parrot
AVAILABLE = {
    "tensorboard": is_tensorboard_available,
    "wandb": is_wandb_available,
    "mlflow": is_mlflow_available,
}
assert set(AVAILABLE) == set(TRACKERS)


def trackers(value: str) -> list[str]:
    """The trackers a run logs to. ``all``: every installed one; a named one that is not installed is a
    one-line error saying what to install."""
    names = parse_report_to(value)
    if value.strip() == "all":
        return [n for n in names if AVAILABLE[n]()]
    for name in names:
        if not AVAILABLE[name]():
            package = (
                "tensorboard" if name == "tensorboard" else f"'parrot-t2i[{name}]'"
            )  # TensorBoard: a core dependency
            raise ParrotError(f"train.report_to names {name}, which is not installed: pip install {package}")
    return names


def flat_config(config) -> dict[str, bool | int | float | str]:
    """The config as dotted keys with scalar values, the hyperparameters every tracker can store
    (lists and nested entries as their text, None as "null")."""
    out: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, value) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}{f.name}.", getattr(value, f.name))
        elif isinstance(value, bool | int | float | str):
            out[prefix[:-1]] = value
        else:
            out[prefix[:-1]] = "null" if value is None else str(value)

    walk("", config)
    return out


def start(accelerator: Accelerator, config, run_dir: Path) -> None:
    """Start the run's trackers, each told the flattened config."""
    accelerator.init_trackers(
        PROJECT,
        config=flat_config(config),
        init_kwargs={"wandb": {"name": run_dir.name, "dir": str(run_dir)}, "mlflow": {"run_name": run_dir.name}},
    )


def log_grid(accelerator: Accelerator, images: Tensor, grid: np.ndarray, step: int) -> None:
    """The samples of one iteration in every tracker: a batch for TensorBoard, the grid for the others."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": images.float().cpu()}, step=step, dataformats="NCHW")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [grid]}, step=step)
        elif tracker.name == "mlflow":
            import mlflow

            mlflow.log_image(grid, key="samples", step=step)
