"""The flow-matching policy for Stable Diffusion 3 / 3.5: ``SD3Transformer2DModel`` with the
stochastic flow step of ``flow.py`` (Flow-GRPO's SDE or CPS), behind the ``Policy`` interface.

Prompts are encoded by diffusers' own ``StableDiffusion3Pipeline.encode_prompt`` (two CLIPs'
penultimate states concatenated and padded to the T5 width, T5's states after them, the CLIPs'
pooled projections as ``pooled_projections``), so the conditioning is exactly the pipeline's; T5
is optional (``t5=False``: zeros in its place, as the pipeline does). The deterministic sampler
is the pipeline's Euler chain (tested equal to it on a tiny SD3).

The trainable set is LoRA on the attention projections of every joint block (both streams, as
diffusers' SD3 LoRA training script targets them), saved in the layout
``StableDiffusion3Pipeline.load_lora_weights`` reads, or the full transformer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file, save_file
from torch import Tensor

from .builtin import resolve
from .diffusion import CFG, Conditioning, Guidance, Trajectory
from .errors import ParrotError, missing_weights_error
from .flow import FlowSampler, flow_step_mean_std, flow_velocity, sample_flow_trajectory, step_sigmas

TRAINABLE_FILE = "transformer_trainable.safetensors"
# The attention projections of both streams of every joint block.
LORA = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


@dataclass
class SD3Policy:
    pipe: StableDiffusion3Pipeline  # the components, and diffusers' own prompt encoding
    noise_level: float = 0.7  # a of the flow SDE (Flow-GRPO: 0.7 for SD3.5), set by set_sampler
    sampler: FlowSampler = "sde"
    identifiers: None = None  # learnt identifier embeddings: not supported for SD3 yet
    trainable_file: ClassVar[str] = TRAINABLE_FILE

    @classmethod
    def from_pretrained(cls, name_or_path: str, torch_dtype: torch.dtype = torch.float32, t5: bool = True) -> SD3Policy:
        """An SD3 / SD3.5 folder or hub id; ``t5=False`` loads it without its T5 encoder."""
        source = resolve(name_or_path, "t2i")
        without_t5 = {} if t5 else {"text_encoder_3": None, "tokenizer_3": None}
        try:
            pipe = StableDiffusion3Pipeline.from_pretrained(source, torch_dtype=torch_dtype, **without_t5)
        except OSError as err:
            raise missing_weights_error(source, err) from None
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
            if module is not None:
                module.requires_grad_(False).eval()
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe)

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return self.pipe.scheduler

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def resolution(self) -> int:
        return self.transformer.config.sample_size * self.pipe.vae_scale_factor

    def latent_shape(self) -> tuple[int, int, int]:
        side = self.transformer.config.sample_size
        return (self.transformer.config.in_channels, side, side)

    def fits(self, text: str) -> bool:
        """Whether the CLIP encoders take ``text`` whole (T5 takes longer prompts)."""
        return len(self.pipe.tokenizer(text).input_ids) <= self.pipe.tokenizer.model_max_length

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        with torch.set_grad_enabled(grad):
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompts, prompts, prompts, device=self.device, do_classifier_free_guidance=False
            )
        return Conditioning(embeds, {"pooled_projections": pooled})

    def encode_negative(self) -> Conditioning:
        return self.encode([""])

    def set_sampler(self, num_inference_steps: int, noise_level: float) -> None:
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        self.noise_level = noise_level

    @torch.no_grad()
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
        """The chain from fresh noise (drawn as the pipeline draws it): the flow SDE with
        log-probs, or with ``stochastic=False`` the pipeline's Euler sampler."""
        scheduler = self.scheduler
        if num_inference_steps is not None:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = randn_tensor(
            (len(cond), *self.latent_shape()), generator=generator, device=self.device, dtype=torch.float32
        )
        return sample_flow_trajectory(
            self.transformer,
            scheduler,
            cond,
            uncond,
            latents,
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
        velocity = flow_velocity(self.transformer, sample, timesteps, cond, uncond, guidance)
        sigma_max = float(self.scheduler.sigmas[1])
        return flow_step_mean_std(self.sampler, sample, velocity, sigma, sigma_next, self.noise_level, sigma_max)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents to images (B, 3, H, W) in [0, 1], as the pipeline decodes them."""
        vae = self.pipe.vae
        scaled = latents / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(scaled.to(vae.dtype), return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)

    def train(self, mode: bool = True) -> SD3Policy:
        self.transformer.train(mode)
        return self

    # ------------------------------------------------------------------ devices and memory

    def to(self, device: torch.device | str) -> SD3Policy:
        self.pipe.to(device)
        return self

    def use_channels_last(self) -> SD3Policy:
        """Nothing to do: a transformer has no convolutions to lay out (``model.channels_last``
        concerns the UNet)."""
        return self

    def enable_memory_savings(self, gradient_checkpointing: bool, vae_slicing: bool) -> None:
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        if vae_slicing:
            self.pipe.vae.enable_slicing()

    # ------------------------------------------------------------------ the trainable set

    def set_trainable(self, mode: str, lora_rank: int = 4, lora_alpha: float | None = None) -> list[torch.nn.Parameter]:
        """LoRA on the attention projections (``lora``) or the whole transformer (``full``)."""
        self.transformer.requires_grad_(False)
        if mode == "full":
            self.transformer.requires_grad_(True)
        elif mode == "lora":
            from peft import LoraConfig

            self.transformer.add_adapter(
                LoraConfig(
                    r=lora_rank, lora_alpha=lora_alpha or lora_rank, init_lora_weights="gaussian", target_modules=LORA
                )
            )
        else:
            raise ParrotError(
                f"model.trainable={mode!r} is the UNet's: an SD3 transformer trains 'lora' or 'full' (it has no "
                "separate cross-attention)"
            )
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def learn_identifiers(self, strings: list[str]) -> torch.nn.Parameter:
        raise ParrotError("model.train_identifiers is not supported for SD3 yet (three text encoders)")

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        self.transformer.disable_adapters()
        try:
            yield
        finally:
            self.transformer.enable_adapters()

    def save_trainable(self, directory: str | Path, mode: str) -> None:
        """LoRA in the layout ``StableDiffusion3Pipeline.load_lora_weights`` reads; the full
        transformer's weights as safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if mode == "lora":
            from peft.utils import get_peft_model_state_dict

            StableDiffusion3Pipeline.save_lora_weights(
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

    def load_trainable(self, directory: str | Path) -> None:
        state = load_file(Path(directory) / TRAINABLE_FILE)
        missing = set(state) - {n for n, _ in self.transformer.named_parameters()}
        if missing:
            raise ParrotError(
                f"{directory}: {len(missing)} saved tensors do not fit this transformer (e.g. {min(missing)})"
            )
        self.transformer.load_state_dict(state, strict=False)
