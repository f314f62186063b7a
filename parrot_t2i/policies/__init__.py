"""The Policy interface: what the trainer, evaluation and generation need of a text-to-image model.

A policy owns its denoising chain. The rest of the code encodes prompts into a ``Conditioning``,
asks for a ``Trajectory`` (``sample``), recomputes transitions with gradients for the update
(``step_mean_std``), decodes latents and saves the trainable set; it never names a UNet, a
transformer, a scheduler or a noise parameter. Guidance is a value: ``CFG(scale)`` or the paper's
``Eq5(w1, w2)``.

Implementations, one file each: ``unet.T2IPolicy`` (UNet + stochastic DDIM: SD 1.x / 2.x / SDXL
and the mini world), and on ``flow_transformer.FlowTransformerPolicy`` (``flow.py``'s SDE / CPS
step) ``sd3.SD3Policy`` (SD3 / SD3.5), ``flux.FluxPolicy`` (FLUX.1) and ``pixel_flow.PixelFlowPolicy``
(the mini world's flow model); ``load_policy`` picks one from a model's ``model_index.json``. How to
add a backbone, and the suite every policy must pass (tests/test_policies.py): docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..builtin import resolve
from ..config import ModelConfig
from ..diffusion import CFG, Conditioning, Guidance, Trajectory


@runtime_checkable
class Policy(Protocol):
    resolution: int
    device: torch.device
    trainable_file: str  # the file save_trainable writes a non-LoRA trainable set to
    identifiers: object | None  # learnt identifier embeddings, if the policy has them
    last_step_deterministic: bool  # the stochastic sampler's last step has no noise (CPS): never trained

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
        stochastic: bool | range = True,
        num_inference_steps: int | None = None,
        noise_level: float | None = None,
        original: Conditioning | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> Trajectory:
        """A batch from fresh noise: every state and each step's log-prob (0 when deterministic).
        ``stochastic``: every step, none, or a range of steps (the others deterministic)."""

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

    def learn_identifiers(self, strings: list[str]) -> list[torch.nn.Parameter]:
        """Learnable input embeddings for the identifier strings (``model.train_identifiers``), one
        (K, D) table per text encoder; saved and loaded with the trainable set."""

    def save_trainable(self, directory: str | Path, mode: str) -> None:
        """The trainable set as safetensors; LoRA in the layout the diffusers pipeline loads."""

    def load_trainable(self, directory: str | Path) -> None: ...

    def load_lora(self, directory: str | Path) -> None: ...

    def to(self, device: torch.device | str) -> Policy: ...

    def use_channels_last(self) -> Policy: ...

    def enable_memory_savings(self, gradient_checkpointing: bool, vae_slicing: bool) -> None: ...


def load_policy(name_or_path: str, model: ModelConfig | None = None) -> Policy:
    """The policy for a model (folder, hub id or ``builtin:`` name), recognised from the pipeline
    class its ``model_index.json`` names: ``SD3Policy`` for SD3 / SD3.5 (T5 loaded when the model
    has one), ``FluxPolicy`` for FLUX.1, ``PixelFlowPolicy`` for the mini flow model, else
    ``T2IPolicy``. ``model``: the weights' dtype and the options a flow model takes
    (``model.resolution``, ``model.flow_sampler``, ``model.distilled_guidance``)."""
    model = model or ModelConfig()
    source, dtype = resolve(name_or_path, "t2i"), getattr(torch, model.dtype)
    index = _model_index(source)
    pipeline = index.get("_class_name")
    if pipeline == "StableDiffusion3Pipeline":
        from .sd3 import SD3Policy

        t5 = index.get("text_encoder_3", [None])[0] is not None  # saved without T5: listed as null
        return SD3Policy.from_pretrained(source, dtype, t5=t5, resolution=model.resolution, sampler=model.flow_sampler)
    if pipeline == "FluxPipeline":
        from .flux import FluxPolicy

        return FluxPolicy.from_pretrained(
            source,
            dtype,
            resolution=model.resolution,
            sampler=model.flow_sampler,
            distilled_guidance=model.distilled_guidance,
        )
    if pipeline == "ParrotPixelFlowPipeline":  # the mini world's flow model: no VAE
        from .pixel_flow import PixelFlowPolicy

        return PixelFlowPolicy.from_pretrained(source, dtype, sampler=model.flow_sampler)
    from .unet import T2IPolicy

    return T2IPolicy.from_pretrained(name_or_path, dtype)


def _model_index(source: str) -> dict:
    """A folder's or (cached) hub model's ``model_index.json``; empty where there is none."""
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.load_config(source)
    except (OSError, ValueError):  # no index (a bare UNet folder), or a hub id not downloaded: T2IPolicy says so
        return {}
