"""Reading run folders written by ``parrot train``: the resolved config and the last checkpoint."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import intact_checkpoints
from .config import Config, ConfigError, load_config, lookup
from .errors import ParrotError
from .identifiers import identifier_strings
from .learned_identifiers import FILE as IDENTIFIER_FILE
from .pen import PromptExpander
from .policies import Policy, load_policy


def last_checkpoint(run_dir: Path) -> Path:
    """The newest intact checkpoint (a damaged one is skipped with a warning)."""
    for checkpoint in intact_checkpoints(run_dir, needs_state=False):
        return checkpoint
    raise ParrotError(f"{run_dir} has no intact checkpoint (expected {run_dir / 'checkpoints' / 'iter_*'})")


def run_config(run: str | Path, flag: str = "--run", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A run folder's resolved config (plus ``overrides``); a one-line error naming ``flag`` if
    ``run`` is not a run folder."""
    if not (Path(run) / "config.yaml").is_file():
        raise ConfigError(f"{flag} {str(run)!r} is not a run folder (no config.yaml in it)")
    return load_config(Path(run) / "config.yaml", overrides)


def open_run(run: str | Path) -> tuple[Config, Path]:
    """A run folder's resolved config and its last checkpoint."""
    return run_config(run), last_checkpoint(Path(run))


def run_policy(config: Config, checkpoint: Path) -> Policy:
    """The run's base T2I model with the checkpoint's trained weights (if it trained the T2I model)."""
    policy = load_policy(config.model.pretrained, config.model)
    if (checkpoint / IDENTIFIER_FILE).is_file():  # trained with model.train_identifiers
        policy.learn_identifiers(
            identifier_strings(
                len(config.rewards), config.prompts.identifier_template, config.prompts.identifier_strings
            )
        )
    if config.model.trainable == "lora" and (checkpoint / "pytorch_lora_weights.safetensors").is_file():
        policy.set_trainable("lora", config.model.lora_rank, config.model.lora_alpha)
        policy.load_lora(checkpoint)
    elif (checkpoint / policy.trainable_file).is_file():
        policy.load_trainable(checkpoint)
    policy.train(False)
    return policy.use_channels_last() if config.model.channels_last else policy


def run_expander(config: Config, checkpoint: Path) -> PromptExpander | None:
    """The run's PEN with the checkpoint's trained weights (if it trained the PEN); None without one."""
    if not config.pen.pretrained:
        return None
    expander = PromptExpander.from_pretrained(config.pen.pretrained, config.pen.template)
    if (checkpoint / "pen").is_dir():
        expander.load_trainable(checkpoint / "pen", config.pen.trainable)
    return expander


SHARED = (  # what a T2I-only run and a PEN-only run must agree on to be combined
    "model.pretrained",
    "pen.pretrained",
    "pen.template",
    "prompts.identifiers",
    "prompts.identifier_template",
    "prompts.identifier_strings",
)


def open_combined(t2i_run: str | Path, pen_run: str | Path) -> tuple[Config, Policy, PromptExpander | None]:
    """The paper's decoupled ablation, combined at load time: the T2I model trained by one run
    (``train.pen=false``, sampling with the SFT PEN) with the PEN trained by another
    (``train.t2i=false``, against the base T2I model). Both start from the same base models; the
    T2I run's config gives the inference settings. Returns (config, policy, expander)."""
    (config, checkpoint), (pen_config, pen_checkpoint) = open_run(t2i_run), open_run(pen_run)
    differ = [key for key in SHARED if lookup(config, key) != lookup(pen_config, key)]
    names = [[r.name for r in c.rewards] for c in (config, pen_config)]
    if names[0] != names[1]:
        differ.append("rewards")
    if differ:
        raise ConfigError(
            f"cannot combine the T2I model of {str(t2i_run)!r} with the PEN of {str(pen_run)!r}: they differ in "
            + ", ".join(differ)
        )
    return config, run_policy(config, checkpoint), run_expander(pen_config, pen_checkpoint)
