"""What every flow-matching transformer policy shares (SD3 / SD3.5 in ``sd3.py``, FLUX.1 in
``flux.py``): the stochastic flow chain of ``flow.py`` (Flow-GRPO's SDE or CPS) over the
transformer's velocity, its per-sample recomputation for the update, LoRA on the attention
projections saved in the layout the diffusers pipeline's ``load_lora_weights`` reads, the
reference model of the KL (adapters disabled), and devices and memory.

A backbone subclass supplies only what differs between the models: how prompts are encoded
(``encode``), how the transformer is called (``denoise``, a ``diffusion.Denoiser``), the latent
layout and how the pipeline draws and decodes it (``latent_shape``, ``initial_latents``,
``decode``), the noise schedule (``set_timesteps``), and the pipeline class and LoRA targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..builtin import resolve
from ..diffusion import CFG, Conditioning, Guidance, Trajectory, guided
from ..errors import ParrotError, missing_weights_error
from ..flow import FlowSampler, flow_step_mean_std, sample_flow_trajectory, step_sigmas
from ..learned_identifiers import LearnedIdentifiers

TRAINABLE_FILE = "transformer_trainable.safetensors"


@dataclass
class FlowTransformerPolicy:
    pipe: DiffusionPipeline  # the components, and diffusers' own prompt encoding
    resolution: int  # image side in pixels
    noise_level: float = 0.7  # a of the flow SDE (Flow-GRPO: 0.7 on SD3.5, 0.9 on FLUX), set by set_sampler
    sampler: FlowSampler = "sde"  # model.flow_sampler
    identifiers: LearnedIdentifiers | None = None  # learnt identifier embeddings (model.train_identifiers)
    trainable_file: ClassVar[str] = TRAINABLE_FILE
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    # Module-name suffixes LoRA adapts: the attention projections of both streams of every joint
    # block (diffusers' SD3 / FLUX LoRA scripts and Flow-GRPO target these; FLUX's single blocks
    # match q/k/v too).
    lora_targets: ClassVar[list[str]] = [
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
    ]

    @classmethod
    def load_pipeline(cls, name_or_path: str, torch_dtype: torch.dtype, **components) -> DiffusionPipeline:
        """The backbone's pipeline from a folder or hub id, frozen, in eval mode, without progress bars."""
        source = resolve(name_or_path, "t2i")
        try:
            pipe = cls.pipeline_class.from_pretrained(source, dtype=torch_dtype, **components)
        except OSError as err:
            raise missing_weights_error(source, err) from None
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False).eval()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # ------------------------------------------------------------------ what a backbone supplies

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        raise NotImplementedError

    def denoise(self, sample: Tensor, timesteps: Tensor, cond: Conditioning) -> Tensor:
        """The transformer's velocity in float32 (a ``diffusion.Denoiser``); timesteps in the
        scheduler's units (σ · 1000)."""
        raise NotImplementedError

    def latent_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def initial_latents(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Pure noise for ``n`` samples, drawn as the pipeline draws it (same generator, same latents)."""
        raise NotImplementedError

    def set_timesteps(self, scheduler: FlowMatchEulerDiscreteScheduler, num_inference_steps: int) -> None:
        """The pipeline's schedule of ``num_inference_steps`` on ``scheduler``."""
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        """Latents to images (B, 3, H, W) in [0, 1], as the pipeline decodes them."""
        raise NotImplementedError

    def fits(self, text: str) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------ the chain

    @property
    def last_step_deterministic(self) -> bool:
        """CPS lands on σ' = 0 without noise (its std is σ'·sin(aπ/2)); Flow-GRPO's SDE keeps noise there."""
        return self.sampler == "cps"

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def encode_negative(self) -> Conditioning:
        return self.encode([""])

    def set_sampler(self, num_inference_steps: int, noise_level: float) -> None:
        self.set_timesteps(self.scheduler, num_inference_steps)
        self.noise_level = noise_level

    @torch.no_grad()
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
        """The chain from fresh noise: the flow SDE (or CPS) with log-probs, or with
        ``stochastic=False`` the pipeline's Euler sampler. ``num_inference_steps`` samples on a copy
        of the scheduler (the training sampler's schedule stays)."""
        scheduler = self.scheduler
        if num_inference_steps is not None:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
            self.set_timesteps(scheduler, num_inference_steps)
        return sample_flow_trajectory(
            self.denoise,
            scheduler,
            cond,
            uncond,
            self.initial_latents(len(cond), generator),
            guidance,
            generator,
            self.sampler,
            self.noise_level if noise_level is None else noise_level,
            stochastic,
            original,
            on_step,
        )

    def step_mean_std(
        self, sample: Tensor, timesteps: Tensor, cond: Conditioning, uncond: Conditioning, guidance: CFG
    ) -> tuple[Tensor, Tensor]:
        """The training sampler's transition at per-sample ``timesteps``, with gradients."""
        sigma, sigma_next = step_sigmas(self.scheduler, timesteps)
        velocity = guided(self.denoise, sample, timesteps, cond, uncond, guidance).float()
        sigma_max = float(self.scheduler.sigmas[1])
        return flow_step_mean_std(self.sampler, sample, velocity, sigma, sigma_next, self.noise_level, sigma_max)

    def train(self, mode: bool = True) -> FlowTransformerPolicy:
        self.transformer.train(mode)
        return self

    # ------------------------------------------------------------------ devices and memory

    def to(self, device: torch.device | str) -> FlowTransformerPolicy:
        self.pipe.to(device)
        return self

    def use_channels_last(self) -> FlowTransformerPolicy:
        """Nothing to do: a transformer has no convolutions to lay out (``model.channels_last``
        concerns the UNet)."""
        return self

    def enable_memory_savings(self, gradient_checkpointing: bool, vae_slicing: bool) -> None:
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        if vae_slicing and self.pipe.vae is not None:
            self.pipe.vae.enable_slicing()

    # ------------------------------------------------------------------ the trainable set

    def set_trainable(self, mode: str, lora_rank: int = 4, lora_alpha: float | None = None) -> list[torch.nn.Parameter]:
        """LoRA on the attention projections (``lora``) or the whole transformer (``full``)."""
        self.transformer.requires_grad_(False)
        if mode == "full":
            self.transformer.requires_grad_(True)
        elif mode == "lora":
            from diffusers.training_utils import cast_training_params
            from peft import LoraConfig

            self.transformer.add_adapter(
                LoraConfig(
                    r=lora_rank,
                    lora_alpha=lora_alpha or lora_rank,
                    init_lora_weights="gaussian",
                    target_modules=self.lora_targets,
                )
            )
            cast_training_params(self.transformer, torch.float32)  # float32 adapters on bf16 / fp16 weights
        else:
            raise ParrotError(
                f"model.trainable={mode!r} is the UNet's: a flow transformer trains 'lora' or 'full' (it has no "
                "separate cross-attention)"
            )
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def learn_identifiers(self, strings: list[str]) -> list[torch.nn.Parameter]:
        """One learnable vector per identifier in each of the pipeline's text encoders (SD3: two CLIPs
        and T5 when loaded; FLUX: CLIP and T5), see ``learned_identifiers``."""
        encoders = [
            (getattr(self.pipe, f"text_encoder{suffix}"), getattr(self.pipe, f"tokenizer{suffix}"))
            for suffix in ("", "_2", "_3")
            if getattr(self.pipe, f"text_encoder{suffix}", None) is not None
        ]
        self.identifiers = LearnedIdentifiers.attach(encoders, strings)
        return list(self.identifiers.embeddings)

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        self.transformer.disable_adapters()
        try:
            yield
        finally:
            self.transformer.enable_adapters()

    def save_trainable(self, directory: str | Path, mode: str) -> None:
        """LoRA in the layout the pipeline's ``load_lora_weights`` reads; the full transformer's
        weights as safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.identifiers is not None:
            self.identifiers.save(directory)
        if mode == "lora":
            from peft.utils import get_peft_model_state_dict

            self.pipeline_class.save_lora_weights(
                directory, transformer_lora_layers=get_peft_model_state_dict(self.transformer)
            )
            return
        state = {n: p.detach().cpu().contiguous() for n, p in self.transformer.named_parameters() if p.requires_grad}
        save_file(state, directory / TRAINABLE_FILE)

    def load_lora(self, directory: str | Path) -> None:
        """LoRA weights written by :meth:`save_trainable`, into adapters made by ``set_trainable("lora")``."""
        from peft.utils import set_peft_model_state_dict

        state = load_file(Path(directory) / "pytorch_lora_weights.safetensors")
        result = set_peft_model_state_dict(
            self.transformer, {k.removeprefix("transformer."): v for k, v in state.items()}
        )
        if result.unexpected_keys:
            raise ParrotError(
                f"{directory}: LoRA weights do not fit this transformer (e.g. {result.unexpected_keys[0]})"
            )
        if self.identifiers is not None:
            self.identifiers.load(directory)

    def load_trainable(self, directory: str | Path) -> None:
        state = load_file(Path(directory) / TRAINABLE_FILE)
        missing = set(state) - {n for n, _ in self.transformer.named_parameters()}
        if missing:
            raise ParrotError(
                f"{directory}: {len(missing)} saved tensors do not fit this transformer (e.g. {min(missing)})"
            )
        self.transformer.load_state_dict(state, strict=False)
        if self.identifiers is not None:
            self.identifiers.load(directory)
