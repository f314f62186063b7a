"""The Policy interface: what the trainer, evaluation and generation need of a text-to-image model.

A policy owns its denoising chain. The rest of the code encodes prompts into a ``Conditioning``,
asks for a ``Trajectory`` (``sample``), recomputes transitions with gradients for the update
(``step_mean_std``), decodes latents and saves the trainable set; it never names a UNet, a
transformer, a scheduler or a noise parameter. Guidance is a value: ``CFG(scale)`` or the paper's
``Eq5(w1, w2)``.

Implementations: ``t2i.T2IPolicy`` (UNet + stochastic DDIM: SD 1.x / 2.x / SDXL and the mini
world) and ``sd3.SD3Policy`` (SD3 / SD3.5 with ``flow.py``'s SDE step); ``load_policy`` picks one
from a model's ``model_index.json``. FLUX is next (issue 17). The suite every policy must pass is
listed in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .builtin import resolve
from .diffusion import CFG, Conditioning, Guidance, Trajectory


@runtime_checkable
class Policy(Protocol):
    resolution: int
    device: torch.device
    trainable_file: str  # the file save_trainable writes a non-LoRA trainable set to
    identifiers: object | None  # learnt identifier embeddings, if the policy has them

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

    def learn_identifiers(self, strings: list[str]) -> torch.nn.Parameter:
        """Learnable input embeddings for the identifier strings (``model.train_identifiers``)."""

    def save_trainable(self, directory: str | Path, mode: str) -> None:
        """The trainable set as safetensors; LoRA in the layout the diffusers pipeline loads."""

    def load_trainable(self, directory: str | Path) -> None: ...

    def load_lora(self, directory: str | Path) -> None: ...

    def to(self, device: torch.device | str) -> Policy: ...

    def use_channels_last(self) -> Policy: ...

    def enable_memory_savings(self, gradient_checkpointing: bool, vae_slicing: bool) -> None: ...


def load_policy(name_or_path: str) -> Policy:
    """The policy for a model, recognised from its ``model_index.json``: SD3 / SD3.5 folders get
    ``SD3Policy`` (T5 loaded when the folder has one), everything else ``T2IPolicy``."""
    source = Path(resolve(name_or_path, "t2i"))
    index = source / "model_index.json"
    if index.is_file() and json.loads(index.read_text()).get("_class_name") == "StableDiffusion3Pipeline":
        from .sd3 import SD3Policy

        return SD3Policy.from_pretrained(str(source), t5=(source / "text_encoder_3").is_dir())
    from .t2i import T2IPolicy

    return T2IPolicy.from_pretrained(name_or_path)
