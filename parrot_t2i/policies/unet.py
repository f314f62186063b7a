"""The text-to-image policy p_θ: a Stable-Diffusion-style diffusers model and its trainable part.

Components are loaded one by one through their own ``from_pretrained`` (so a folder without a
VAE, like the pixel-space mini world, loads through the same path as SD 1.5), and the scheduler is
always DDIM, built from the model's own scheduler config (Parrot samples with stochastic DDIM).
Only the UNet is trained; the paper trains its cross-attention layers.

SDXL folders (a second, projecting text encoder) are recognised: prompts are encoded as SDXL does
(penultimate hidden states of both encoders concatenated, the second encoder's pooled projection,
and the six size/crop "time ids" as added conditioning), and the empty negative prompt becomes
zeros when the pipeline says so (``force_zeros_for_empty_prompt``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

from ..builtin import resolve
from ..diffusion import (
    CFG,
    Conditioning,
    Guidance,
    Trajectory,
    ddim_step_log_prob,
    guided,
    step_mean_std,
    unet_denoiser,
)
from ..errors import ParrotError, missing_weights_error
from ..learned_identifiers import LearnedIdentifiers

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "unet_trainable.safetensors"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class T2IPolicy:
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: AutoTokenizer
    scheduler: DDIMScheduler
    vae: AutoencoderKL | None = None
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL
    tokenizer_2: AutoTokenizer | None = None
    zero_negative: bool = False  # SDXL's force_zeros_for_empty_prompt
    identifiers: LearnedIdentifiers | None = None  # learnt identifier embeddings (model.train_identifiers)
    noise_level: float = 1.0  # the stochastic sampler's DDIM η (sample.eta), set by set_sampler
    trainable_file: ClassVar[str] = TRAINABLE_FILE  # where save_trainable puts a non-LoRA trainable set

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @classmethod
    def from_pretrained(cls, name_or_path: str, torch_dtype: torch.dtype = torch.float32) -> T2IPolicy:
        source = resolve(name_or_path, "t2i")
        try:
            index = DiffusionPipeline.load_config(source)
            unet = UNet2DConditionModel.from_pretrained(
                source, subfolder="unet", torch_dtype=torch_dtype, use_safetensors=True
            )
            text_encoder = CLIPTextModel.from_pretrained(
                source, subfolder="text_encoder", torch_dtype=torch_dtype, use_safetensors=True
            )
            tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
            scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
            vae = (
                AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=torch_dtype, use_safetensors=True)
                if "vae" in index
                else None
            )
            sdxl = "text_encoder_2" in index
            text_encoder_2 = (
                CLIPTextModelWithProjection.from_pretrained(
                    source, subfolder="text_encoder_2", torch_dtype=torch_dtype, use_safetensors=True
                )
                if sdxl
                else None
            )
            tokenizer_2 = AutoTokenizer.from_pretrained(source, subfolder="tokenizer_2") if sdxl else None
        except OSError as err:
            raise missing_weights_error(name_or_path, err) from None
        for module in (unet, text_encoder, vae, text_encoder_2):
            if module is not None:
                module.requires_grad_(False).eval()
        zero_negative = sdxl and bool(index.get("force_zeros_for_empty_prompt", True))  # the SDXL pipeline's default
        return cls(unet, text_encoder, tokenizer, scheduler, vae, text_encoder_2, tokenizer_2, zero_negative)

    # ------------------------------------------------------------------ geometry

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def resolution(self) -> int:
        """Native image side: UNet sample size times the VAE's downsampling."""
        return self.unet.config.sample_size * self.vae_scale_factor

    def latent_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        side = (resolution or self.resolution) // self.vae_scale_factor
        return (self.unet.config.in_channels, side, side)

    def to(self, device: torch.device | str) -> T2IPolicy:
        for module in (self.unet, self.text_encoder, self.vae, self.text_encoder_2):
            if module is not None:
                module.to(device)
        return self

    def use_channels_last(self) -> T2IPolicy:
        """Convolution weights in channels-last layout; the UNet call converts its input to match
        (see ``diffusion._unet``), so every convolution runs NHWC end to end."""
        for module in (self.unet, self.vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        return self

    # ------------------------------------------------------------------ the Policy interface

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def last_step_deterministic(self) -> bool:
        """DDIM's last step has σ = 0 when the scheduler sets the final ᾱ to one (``set_alpha_to_one``);
        SD 1.x / 2.x / XL and the mini model keep ᾱ_0 < 1, and so a little noise there."""
        return bool(self.scheduler.config.get("set_alpha_to_one", False))

    def set_sampler(self, num_inference_steps: int, noise_level: float) -> None:
        """The training sampler: ``num_inference_steps`` DDIM steps with η = ``noise_level``."""
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
        stochastic: bool | range = True,
        num_inference_steps: int | None = None,
        noise_level: float | None = None,
        original: Conditioning | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> Trajectory:
        """Run the DDIM chain for a batch from fresh noise, recording x_T … x_0 and every step's
        log-prob: the stochastic policy (η = ``noise_level``, by default the training sampler's),
        or with ``stochastic=False`` deterministic DDIM through the scheduler's own ``step``
        (log-probs 0); ``stochastic`` a range: those steps stochastic, deterministic elsewhere.
        ``num_inference_steps`` samples on a copy of the scheduler (the training sampler's timesteps
        stay); ``original`` is Eq. 5's original-prompt conditioning."""
        scheduler = self.scheduler
        if num_inference_steps is not None:
            scheduler = DDIMScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(num_inference_steps, device=self.device)
        eta = self.noise_level if noise_level is None else noise_level
        device = cond.embeds.device
        x = randn_tensor((len(cond), *self.latent_shape()), generator=generator, device=device, dtype=torch.float32)
        x = x * scheduler.init_noise_sigma
        latents, log_probs = [x], []
        timesteps = scheduler.timesteps.to(device)
        denoise = unet_denoiser(self.unet)
        for i, t in enumerate(timesteps):
            eps = guided(denoise, scheduler.scale_model_input(x, t), t.reshape(1), cond, uncond, guidance, original)
            if stochastic is True or (stochastic is not False and i in stochastic):
                x, log_prob = ddim_step_log_prob(scheduler, eps, t, x, eta, generator=generator)
            else:
                x, log_prob = scheduler.step(eps, t, x, eta=0.0).prev_sample, torch.zeros(len(x), device=device)
            latents.append(x)
            log_probs.append(log_prob)
            if on_step is not None:
                on_step()
        return Trajectory(torch.stack(latents, 1), timesteps, torch.stack(log_probs, 1))

    def step_mean_std(
        self, sample: Tensor, timesteps: Tensor, cond: Conditioning, uncond: Conditioning, guidance: CFG
    ) -> tuple[Tensor, Tensor]:
        """The training sampler's transition p_θ(· | sample) at per-sample ``timesteps``, with
        gradients: (mean, std). With unchanged weights it reproduces ``sample``'s log-probs."""
        return step_mean_std(
            self.unet, self.scheduler, sample, timesteps, cond, uncond, guidance.scale, self.noise_level
        )

    def train(self, mode: bool = True) -> T2IPolicy:
        """Training (dropout on) or evaluation mode of the trained network."""
        self.unet.train(mode)
        return self

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The model without its LoRA adapters (the pre-RL reference of a LoRA run)."""
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()

    def enable_memory_savings(self, gradient_checkpointing: bool, vae_slicing: bool) -> None:
        """Trade compute for memory: recompute the UNet's activations in the backward pass, and
        decode the VAE one image at a time."""
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if vae_slicing and self.vae is not None:
            self.vae.enable_slicing()

    # ------------------------------------------------------------------ text and pixels

    def fits(self, text: str) -> bool:
        """Whether the text encoder takes ``text`` whole (special tokens included)."""
        return len(self.tokenizer(text, verbose=False).input_ids) <= self.tokenizer.model_max_length

    def encode(self, prompts: list[str], grad: bool = False) -> Conditioning:
        """CLIP text embeddings (last hidden state), truncated to the encoder's limit with a warning.

        ``grad``: keep the graph, for learnt identifier embeddings (the encoder itself stays frozen).
        """
        with torch.set_grad_enabled(grad):
            return self._encode(prompts)

    def _encode(self, prompts: list[str]) -> Conditioning:
        limit = self.tokenizer.model_max_length
        tokens = self.tokenizer(prompts, padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
        too_long = sum(len(ids) > limit for ids in self.tokenizer(prompts, verbose=False).input_ids)
        if too_long:
            logger.warning("%d prompt(s) exceed the text encoder's %d tokens and were truncated", too_long, limit)
        ids = tokens.input_ids.to(self.text_encoder.device)
        if not self.is_sdxl:
            return Conditioning(self.text_encoder(ids, return_dict=False)[0])
        ids_2 = self.tokenizer_2(
            prompts,
            padding="max_length",
            max_length=self.tokenizer_2.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        first = self.text_encoder(ids, output_hidden_states=True)
        second = self.text_encoder_2(ids_2.to(self.text_encoder_2.device), output_hidden_states=True)
        embeds = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return Conditioning(
            embeds, {"text_embeds": second.text_embeds, "time_ids": self.time_ids(len(prompts)).to(embeds)}
        )

    def time_ids(self, batch: int) -> Tensor:
        """SDXL's micro-conditioning (original size, crop top-left, target size) for full, uncropped images."""
        side = self.resolution
        return torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32).expand(batch, 6)

    @torch.no_grad()
    def encode_negative(self) -> Conditioning:
        """(1, L, D) conditioning of the empty negative prompt: zeros where SDXL forces them (its
        pooled embedding too, the time ids kept), else the encoded empty string."""
        empty = self.encode([""])
        if not self.zero_negative:
            return empty
        return Conditioning(
            torch.zeros_like(empty.embeds),
            {"text_embeds": torch.zeros_like(empty.added["text_embeds"]), "time_ids": empty.added["time_ids"]},
        )

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Final latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1], float32.

        Outside any autocast: SDXL's VAE overflows in float16 (diffusers upcasts it for the same reason).
        """
        with torch.autocast(latents.device.type, enabled=False):
            return self._decode(latents)

    def _decode(self, latents: Tensor) -> Tensor:
        if self.vae is not None:
            latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
            latents = self.vae.decode(latents, return_dict=False)[0]
        return (latents.float() / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ trainable parameters

    def set_trainable(self, mode: str, lora_rank: int = 4, lora_alpha: float | None = None) -> list[torch.nn.Parameter]:
        """Unfreeze the parameters Parrot trains and return them.

        cross_attention: every parameter of the UNet's ``attn2`` blocks (the paper's choice);
        lora: peft LoRA adapters on all attention projections; full: the whole UNet.
        """
        self.unet.requires_grad_(False)
        if mode == "full":
            self.unet.requires_grad_(True)
        elif mode == "cross_attention":
            for name, param in self.unet.named_parameters():
                if ".attn2." in name:
                    param.requires_grad_(True)
        elif mode == "lora":
            from peft import LoraConfig

            self.unet.add_adapter(
                LoraConfig(
                    r=lora_rank,
                    lora_alpha=lora_alpha or lora_rank,
                    init_lora_weights="gaussian",
                    target_modules=LORA_TARGETS,
                )
            )
            from diffusers.training_utils import cast_training_params

            cast_training_params(self.unet, torch.float32)  # float32 adapters on bf16 / fp16 weights (model.dtype)
        else:
            raise ValueError(f"unknown trainable set {mode!r}")
        params = [p for p in self.unet.parameters() if p.requires_grad]
        if not params:
            raise ParrotError(f"model.trainable={mode!r} selects no parameters in this UNet")
        return params

    def learn_identifiers(self, strings: list[str]) -> list[torch.nn.Parameter]:
        """Give every identifier string a learnable input embedding in each text encoder (see
        ``learned_identifiers``); returns the (K, D) parameters to train, one per encoder."""
        encoders = [(self.text_encoder, self.tokenizer)]
        if self.is_sdxl:
            encoders.append((self.text_encoder_2, self.tokenizer_2))
        self.identifiers = LearnedIdentifiers.attach(encoders, strings)
        return list(self.identifiers.embeddings)

    def save_trainable(self, directory: str | Path, mode: str) -> None:
        """Trainable weights as safetensors; LoRA in the layout ``pipeline.load_lora_weights`` reads,
        learnt identifiers in the one ``load_textual_inversion`` reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.identifiers is not None:
            self.identifiers.save(directory)
        if mode == "lora":
            from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet))
            (StableDiffusionXLPipeline if self.is_sdxl else StableDiffusionPipeline).save_lora_weights(
                directory, unet_lora_layers=layers
            )
            return
        state = {n: p.detach().cpu().contiguous() for n, p in self.unet.named_parameters() if p.requires_grad}
        save_file(state, directory / TRAINABLE_FILE)

    def load_lora(self, directory: str | Path) -> None:
        """Load LoRA weights written by :meth:`save_trainable` into adapters made by ``set_trainable("lora")``."""
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft.utils import set_peft_model_state_dict

        state = load_file(Path(directory) / "pytorch_lora_weights.safetensors")
        state = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in state.items()})
        result = set_peft_model_state_dict(self.unet, state)
        if result.unexpected_keys:
            raise ParrotError(f"{directory}: LoRA weights do not fit this UNet (e.g. {result.unexpected_keys[0]})")
        if self.identifiers is not None:
            self.identifiers.load(directory)

    def load_trainable(self, directory: str | Path) -> None:
        """Load weights written by :meth:`save_trainable` (full or cross-attention sets)."""
        state = load_file(Path(directory) / TRAINABLE_FILE)
        missing = set(state) - {n for n, _ in self.unet.named_parameters()}
        if missing:
            raise ParrotError(f"{directory}: {len(missing)} saved tensors do not fit this UNet (e.g. {min(missing)})")
        self.unet.load_state_dict(state, strict=False)
        if self.identifiers is not None:
            self.identifiers.load(directory)
