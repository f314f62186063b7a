"""A training run's live state: the networks, optimisers, rewards, objective, prompts and
generators one run holds between iterations (``Run``, built by ``setup_run``), and the helpers that
set its trained weights aside and back (``snapshot``, ``restore``, ``holding``).

What the run writes to its folder is in ``run_folder.py``; reading a finished run back is
``runs.py``; the RL iteration itself is ``trainer.py``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor

from .config import Config, ConfigError
from .diffusion import Conditioning
from .identifiers import identifier_strings
from .objectives import Objective
from .pen import PromptExpander
from .policies import Policy, load_policy
from .prompts import read_prompt_file
from .rewards import Reward, build_rewards
from .tracking import trackers

logger = logging.getLogger(__name__)


def snapshot(params: list[torch.nn.Parameter]) -> list[Tensor]:
    return [p.detach().clone() for p in params]


def restore(params: list[torch.nn.Parameter], values: list[Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


@contextmanager
def holding(params: list[torch.nn.Parameter], values: list[Tensor] | None) -> Iterator[None]:
    """Temporarily give ``params`` other ``values`` (nothing to do for None)."""
    if values is None:
        yield
        return
    current = snapshot(params)
    restore(params, values)
    try:
        yield
    finally:
        restore(params, current)


def load_prompts(config: Config) -> list[str]:
    """The training prompts: inline ``prompts.prompts`` if given, else ``prompts.file``."""
    inline = [p.strip() for p in config.prompts.prompts if p.strip()]
    if inline:
        return inline
    if not config.prompts.file:
        raise ConfigError("no training prompts: set prompts.prompts or prompts.file")
    return read_prompt_file(config.prompts.file, "prompts.file")


@dataclass
class Run:
    """Everything one training run holds between iterations."""

    config: Config
    accelerator: Accelerator
    policy: Policy  # the T2I model (t2i.T2IPolicy, sd3.SD3Policy)
    params: list[torch.nn.Parameter]  # the T2I parameters RL trains (empty when train.t2i is false)
    reference_params: list[torch.nn.Parameter]  # what the KL reference swaps back: all of params, or the non-LoRA ones
    reference: list[Tensor] | None  # train.kl_coef > 0: those parameters' values before RL
    optimizer: torch.optim.Optimizer | None
    expander: PromptExpander | None  # the PEN; None without prompt expansion
    pen_params: list[torch.nn.Parameter]  # the PEN parameters RL trains (empty when train.pen is false)
    pen_optimizer: torch.optim.Optimizer | None
    identifiers: list[str] | None  # the K identifier strings; None when training uses none
    rewards: list[Reward]
    objective: Objective
    prompts: list[str]
    uncond: Conditioning  # (1, L, D) embedding of the empty negative prompt, encoded once
    generator: torch.Generator  # same seed on every process: the global batch's prompts
    noise_generator: torch.Generator  # per process: the sampler's noise, PEN sampling, timestep subsets
    run_dir: Path

    @property
    def reward_names(self) -> list[str]:
        """Names as configured: the order of the reward columns everywhere."""
        return [spec.name for spec in self.config.rewards]


def setup_run(config: Config, run_dir: Path | None = None) -> Run:
    accelerator = Accelerator(
        mixed_precision=config.train.mixed_precision,
        log_with=trackers(config.train.report_to),
        project_dir=str(run_dir) if run_dir else None,
    )
    names = [spec.name for spec in config.rewards]
    objective = Objective(config.objective, names, seed=config.train.seed)
    prompts = load_prompts(config)
    t, pen = config.train, config.pen
    with accelerator.main_process_first():  # one process fills the model caches, the others then read them
        rewards = build_rewards(config.rewards, accelerator.device)
        policy = load_policy(config.model.pretrained, config.model)
        expander = PromptExpander.from_pretrained(pen.pretrained, pen.template) if pen.pretrained else None
    policy.to(accelerator.device)
    policy.set_sampler(config.sample.num_inference_steps, config.sample.eta)
    policy.enable_memory_savings(config.model.gradient_checkpointing, config.model.vae_slicing)
    if config.model.channels_last:
        policy.use_channels_last()
    if expander is not None:
        expander.model.to(accelerator.device)
    # Seeded after loading: building a missing built-in model draws random numbers, and a cold or
    # warm model cache must not change the LoRA initialisation or anything after it.
    set_seed(t.seed)
    identifiers = (
        identifier_strings(len(names), config.prompts.identifier_template, config.prompts.identifier_strings)
        if config.prompts.identifiers
        else None
    )
    model_params = (
        policy.set_trainable(config.model.trainable, config.model.lora_rank, config.model.lora_alpha) if t.t2i else []
    )
    identifier_params = policy.learn_identifiers(identifiers) if config.model.train_identifiers else []
    params = model_params + identifier_params
    # Only the optimisers are prepared: the networks are not DDP-wrapped, distributed.sum_gradients
    # sums their gradients (a process with nothing selected would leave DDP's hooks waiting).
    optimizer = accelerator.prepare(_adamw(params, t.learning_rate, t)) if params else None
    # The KL reference: LoRA adapters switched off, and every other trained tensor at its pre-RL value.
    reference_params = identifier_params if config.model.trainable == "lora" else params
    reference = snapshot(reference_params) if params and t.kl_coef > 0 else None
    pen_params = (
        expander.set_trainable(pen.trainable, pen.lora_rank, pen.lora_alpha) if expander is not None and t.pen else []
    )
    pen_optimizer = accelerator.prepare(_adamw(pen_params, pen.learning_rate, t)) if pen_params else None
    noise_generator = torch.Generator(accelerator.device).manual_seed(t.seed * 1009 + accelerator.process_index)
    logger.info(
        "rewards: %s; trainable parameters: T2I %d, PEN %d",
        names,
        sum(p.numel() for p in params),
        sum(p.numel() for p in pen_params),
    )
    return Run(
        config=config,
        accelerator=accelerator,
        policy=policy,
        params=params,
        reference_params=reference_params,
        reference=reference,
        optimizer=optimizer,
        expander=expander,
        pen_params=pen_params,
        pen_optimizer=pen_optimizer,
        identifiers=identifiers,
        rewards=rewards,
        objective=objective,
        prompts=prompts,
        uncond=policy.encode_negative(),
        generator=torch.Generator().manual_seed(t.seed),
        noise_generator=noise_generator,
        run_dir=run_dir or Path(tempfile.mkdtemp(prefix="parrot-")),
    )


def _adamw(params: list[torch.nn.Parameter], lr: float, t) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params, lr=lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.adam_weight_decay, eps=t.adam_epsilon
    )
