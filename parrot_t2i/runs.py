"""Reading run folders written by ``parrot train``: the resolved config and the last checkpoint."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, load_config
from .errors import ParrotError
from .t2i import T2IPolicy


def last_checkpoint(run_dir: Path) -> Path:
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*"))
    if not checkpoints:
        raise ParrotError(f"{run_dir} has no checkpoints yet (expected {run_dir / 'checkpoints' / 'iter_*'})")
    return checkpoints[-1]


def load_policy(run: str | None, model: str) -> tuple[T2IPolicy, str]:
    """The policy of a run folder (base model + its last checkpoint), or of a model; and a label."""
    if run is None:
        return T2IPolicy.from_pretrained(model), model
    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--run {run!r} is not a run folder (no config.yaml in it)")
    config = load_config(run_dir / "config.yaml")
    checkpoint = last_checkpoint(run_dir)
    policy = T2IPolicy.from_pretrained(config.model.pretrained)
    if config.model.trainable == "lora":
        policy.set_trainable("lora", config.model.lora_rank, config.model.lora_alpha)
        policy.load_lora(checkpoint)
    else:
        policy.load_trainable(checkpoint)
    policy.unet.requires_grad_(False).eval()
    return policy, str(checkpoint)
