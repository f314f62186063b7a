"""The Policy interface: what the trainer, evaluation and generation need of a text-to-image model.

A policy owns its denoising chain. The rest of the code encodes prompts into a ``Conditioning``,
asks for a ``Trajectory`` (``sample``), recomputes transitions with gradients for the update
(``step_mean_std``), decodes latents and saves the trainable set; it never names a UNet, a
transformer, a scheduler or a noise parameter. Guidance is a value: ``CFG(scale)`` or the paper's
``Eq5(w1, w2)``.

Implementations: ``t2i.T2IPolicy`` (UNet + stochastic DDIM: SD 1.x / 2.x / SDXL and the mini
world). Flow-matching transformers (SD3, FLUX: ``flow.py``'s SDE step) are the next (issue 17).
The suite every policy must pass is listed in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .diffusion import CFG, Conditioning, Guidance, Trajectory


@runtime_checkable
class Policy(Protocol):
    resolution: int
    device: torch.device

    def latent_shape(self) -> tuple[int, ...]: ...

    def fits(self, text: str) -> bool:
        """Whether the text encoder takes ``text`` whole."""

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning: ...

    def encode_negative(self) -> Conditioning:
        """The empty negative prompt, a batch of one."""

    def set_sampler(self, num_inference_steps: int, noise_level: float) -> None:
        """The training sampler: its number of steps and its noise (DDIM η, the flow SDE's a)."""

    def sample(
        self,
        cond: Conditioning,
        uncond: Conditioning,
        guidance: Guidance,
        *,
        generator: torch.Generator | None = None,
        stochastic: bool = True,
        num_inference_steps: int | None = None,
        noise_level: float | None = None,
        original: Conditioning | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> Trajectory:
        """A batch from fresh noise: every state and each step's log-prob (0 when deterministic)."""

    def step_mean_std(
        self, sample: Tensor, timesteps: Tensor, cond: Conditioning, uncond: Conditioning, guidance: CFG
    ) -> tuple[Tensor, Tensor]:
        """The training sampler's Gaussian transition at per-sample timesteps, with gradients."""

    def decode(self, latents: Tensor) -> Tensor:
        """Latents to images (B, 3, H, W) in [0, 1]."""

    def train(self, mode: bool = True) -> Policy: ...

    def adapters_disabled(self) -> AbstractContextManager[None]:
        """The model without its LoRA adapters: the pre-RL reference of a LoRA run."""

    def set_trainable(self, mode: str, lora_rank: int = 4, lora_alpha: float | None = None) -> list[torch.nn.Parameter]:
        """Freeze everything but the trainable set (cross-attention, LoRA or full); its parameters."""

    def save_trainable(self, directory: str | Path, mode: str) -> None: ...

    def load_trainable(self, directory: str | Path) -> None: ...
