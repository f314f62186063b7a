"""Run configuration: nested dataclasses, YAML presets and dotted command-line overrides.

The dataclasses are the one source of truth for every setting. Their defaults describe the
default job of ``parrot train``; presets (``parrot_t2i/configs/*.yaml``, also reachable as
``configs/`` in a checkout) override some fields, and ``--set key=value`` overrides any field.
Every mistake is reported as a :class:`ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ParrotError
from .identifiers import parse_identifiers

PRESET_DIR = Path(__file__).parent / "configs"

# Keys that no longer exist: the value an old run folder's config.yaml holds is dropped in silence;
# any other value is an error that says what replaced the key.
RETIRED = {
    "train.mode": (
        "joint",
        "train.mode is gone: training is always joint; the decoupled ablation is two ordinary runs, one with "
        "train.pen=false and one with train.t2i=false, combined by `parrot evaluate --combine T2I_RUN PEN_RUN` "
        "or `parrot generate --run T2I_RUN --pen-run PEN_RUN`",
    ),
}

# Names users bring from other trainers, for "did you mean" suggestions only.
ALIASES = {
    "lr": "learning_rate",
    "weight_decay": "adam_weight_decay",
    "grad_clip": "max_grad_norm",
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "cfg_scale": "guidance_scale",
    "iterations": "num_iterations",
    "epochs": "num_iterations",
}


class ConfigError(ValueError):
    """A user mistake in a configuration; the CLI prints its message as one line."""


@dataclass
class ModelConfig:
    # Hub id, local diffusers folder, or "builtin:NAME": "builtin:mini" (the shipped mini-world
    # model, see docs/MINI_WORLD.md) or "builtin:tiny" (a tiny random model for smoke tests).
    pretrained: str = "builtin:mini"
    # Which UNet parameters are trained: "cross_attention" (the paper), "lora" (peft) or "full".
    trainable: Literal["cross_attention", "lora", "full"] = "cross_attention"
    # LoRA rank and alpha (alpha defaults to the rank, i.e. scale 1); used when trainable == "lora".
    lora_rank: int = 4
    lora_alpha: float | None = None
    # Learn one input embedding per reward identifier (textual inversion), trained with the UNet by
    # the same policy gradient, so identifiers can specialise although the text encoder is frozen
    # (parrot_t2i/learned_identifiers.py), one per text encoder. Needs prompts.identifiers.
    train_identifiers: bool = False
    # Memory knobs for real models: recompute UNet activations in the update's backward pass, and
    # decode latents one image at a time.
    gradient_checkpointing: bool = False
    vae_slicing: bool = False
    # Convolutions in channels-last (NHWC) memory layout: UNet and VAE weights, and the latents fed
    # to the UNet. Same results up to float rounding; measured on 2 CPU cores, an iteration is 6%
    # (mini model) to 11% (small SD-architecture model) faster (docs/PERFORMANCE.md).
    channels_last: bool = True
    # The frozen weights' dtype. "bfloat16" halves their memory (FLUX.1-dev: 24 GB instead of 48 GB for
    # the transformer); the trained set (LoRA) stays float32, as Flow-GRPO trains it.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Flow-matching models (SD3 / SD3.5, FLUX.1) only. Image side in pixels (null: the model's own,
    # 1024 on SD3.5 and FLUX.1; Flow-GRPO trains at 512).
    resolution: int | None = None
    # The stochastic sampler: "sde" (Flow-GRPO) or "cps" (coefficients-preserving, arXiv 2509.05952);
    # its noise level is sample.eta.
    flow_sampler: Literal["sde", "cps"] = "sde"
    # FLUX.1-dev's distilled guidance, an input of the transformer (FluxPipeline's guidance_scale);
    # sample.guidance_scale is then true CFG over a negative branch (1: none, as FLUX.1-dev samples).
    distilled_guidance: float = 3.5


@dataclass
class SampleConfig:
    # Denoising steps T of the stochastic DDIM sampler.
    num_inference_steps: int = 20
    # Classifier-free guidance scale w (paper: 5.0); the negative prompt is empty.
    guidance_scale: float = 5.0
    # The sampler's noise, in (0, 1]: DDIM's η for a UNet model; for a flow model (SD3) the SDE's a
    # (Flow-GRPO: 0.7 on SD3.5). Must be > 0 so that log p(x_{t-1}|x_t) exists.
    eta: float = 1.0
    # Prompts drawn per iteration on each process (P processes sample P× as many images).
    prompts_per_iteration: int = 4
    # Images per group N. group_by "prompt": N images per prompt, their identifiers round-robin over
    # the K rewards, one expansion per image. "prompt_reward" (the paper's Algorithm 1): N images
    # per (prompt, reward k) from one expansion, so an iteration has prompts × K × N images.
    images_per_prompt: int = 8
    group_by: Literal["prompt", "prompt_reward"] = "prompt"
    # Images per UNet call while sampling (per process); memory knob only.
    batch_size: int = 32
    # MixGRPO's sliding window (Li et al. 2025, arXiv 2507.21802): only this many consecutive steps
    # are stochastic and trained, the others deterministic (Euler / DDIM η = 0), so an update costs
    # window / T of the full chain's; the window starts at step 0 and slides one step every
    # sde_window_shift_every iterations, back to 0 past the end. null: every step (Flow-GRPO, DDPO).
    sde_window: int | None = None
    sde_window_shift_every: int = 25  # MixGRPO: 25 iterations per window position


@dataclass
class PromptConfig:
    # Training prompts given inline; when given they take precedence over `file`.
    prompts: list[str] = field(default_factory=list)
    # A prompt file: text (one prompt per line; blank lines and # comments skipped), JSONL
    # ({"prompt": ...} per line), a PartiPrompts TSV (optionally "file.tsv#Category=Animals"), or a
    # packaged set: "builtin:mini-train", "builtin:mini-heldout" (mini-world prompts, disjoint).
    file: str | None = "builtin:mini-train"
    # Prefix each training prompt with its reward identifier (paper §3.3): "<reward k> prompt".
    identifiers: bool = True
    # Identifier format; "{k}" is the 1-based reward number.
    identifier_template: str = "<reward {k}>"
    # Or one explicit string per reward, in reward order (overrides the template when given).
    identifier_strings: list[str] = field(default_factory=list)


@dataclass
class PenConfig:
    # The prompt expansion network p_φ(ĉ|c) (paper §3.3): any Hugging Face causal LM (hub id or
    # local folder, e.g. one written by `parrot sft-pen`), or "builtin:mini" (the mini world's).
    # null: no expansion; the T2I model sees the user prompt (the "T2I tuning only" baseline).
    pretrained: str | None = "builtin:mini"
    # How the PEN is prompted: "mini", "promptist", "instruction" (the paper's) or a format string
    # with "{prompt}"; null: the template saved beside the model, else "instruction".
    template: str | None = None
    # Expansion length in PEN tokens; expansions are further shortened so that identifiers plus
    # expansion never exceed the T2I text encoder's limit (77 tokens for CLIP).
    max_new_tokens: int = 32
    # Sampling temperature and nucleus (top-p) of the expansions, in training and evaluation.
    temperature: float = 1.0
    top_p: float = 1.0
    # What RL trains: peft LoRA adapters on every linear layer ("lora", the paper) or "full".
    trainable: Literal["lora", "full"] = "lora"
    lora_rank: int = 8
    lora_alpha: float | None = None
    # AdamW learning rate of the PEN update (betas, weight decay and clipping as in `train`). The
    # default suits the mini PEN's LoRA: at 1e-2 it collapsed to degenerate text within 20
    # iterations, at 2e-3 it barely moved in 50 (docs/MINI_WORLD.md).
    learning_rate: float = 5e-3
    # Coefficient of Σ_tokens KL(p_φ ‖ p_SFT), averaged over the batch, added to the PEN loss (the
    # paper has none: set 0 to be faithful; the mini job keeps a guard against that collapse).
    # Needs trainable=lora, whose adapters switched off give the SFT model.
    kl_coef: float = 0.1


@dataclass
class RewardSpec:
    # Registered reward name (see `parrot rewards`) or "module:function" for user code.
    name: str = "brightness"
    # Keyword arguments for the reward's constructor.
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    # The credit each sample carries (docs in parrot_t2i/objectives.py): "parrot" (Eq. 4, its own
    # identifier's reward), "weighted_sum" (Σ λ_k r_k: DPOK raw, Flow-GRPO with group
    # normalisation), "single" (one reward), "normalize_then_sum" (GDPO), the Pareto advantages
    # "front_rank", "dominance_count", "hv_contribution", or "random" (zero-mean random weights:
    # the drift control).
    name: Literal[
        "parrot",
        "weighted_sum",
        "single",
        "normalize_then_sum",
        "front_rank",
        "dominance_count",
        "hv_contribution",
        "random",
    ] = "parrot"
    # Train only on the non-dominated samples of each scope (the paper's selection; dominated
    # samples skip the backward pass). null: on for "parrot", off for every other credit.
    pareto_filter: bool | None = None
    # weighted_sum: one weight per reward, in reward order (default: equal weights).
    weights: list[float] | None = None
    # single: the name of the reward to optimise.
    reward: str | None = None
    # Scope of the Pareto filter and of the rank-based credits: each group (sample.group_by; the
    # paper's N images) or the whole global batch.
    selection: Literal["group", "global"] = "group"
    # Reward values entering the parrot / weighted_sum / single credit: raw ("none", the paper),
    # standardised over the batch, or per group (GRPO-style advantages; the default mini job's
    # choice, see configs/mini.yaml).
    reward_normalization: Literal["none", "batch", "group"] = "group"


@dataclass
class TrainConfig:
    # RL iterations (one iteration = sample, score, select, one optimiser step per network).
    num_iterations: int = 50
    # Which networks RL updates: both, jointly from the same samples (Parrot), the T2I model only,
    # or the PEN only (Promptist-style). The paper's decoupled ablation is a T2I-only run and a
    # PEN-only run combined at load time (`parrot evaluate --combine T2I_RUN PEN_RUN`).
    t2i: bool = True
    pen: bool = True
    # AdamW settings (paper: lr 1e-5, betas (0.9, 0.999), weight decay 0.1). The default lr suits
    # the mini world's 66k cross-attention parameters; real models want the paper's 1e-5.
    learning_rate: float = 5e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.1
    adam_epsilon: float = 1e-8
    # Gradient-norm clip (paper: 1e-4).
    max_grad_norm: float = 1.0
    # Samples per forward/backward chunk of the update (per process); memory knob only.
    batch_size: int = 16
    # Fraction of the T timesteps trained on per sample (paper: 1.0, all of them).
    timestep_fraction: float = 1.0
    # PPO clip range ε on the importance ratio (DDPO); None = plain REINFORCE (the paper).
    clip_range: float | None = None
    # Passes over each iteration's samples; > 1 only makes sense with clip_range.
    num_inner_epochs: int = 1
    # Coefficient β of the per-step KL(p_θ ‖ p_ref) to the T2I model before RL, added on the trained
    # (sample, step) pairs and averaged over the selected samples (Flow-GRPO's KL; the paper has
    # none). The reference is the model with its LoRA adapters switched off, or a frozen copy of
    # the trainable set. A guard against drift: what every update does to the rewards it ignores.
    kl_coef: float = 0.0
    # "no", "fp16" or "bf16" (accelerate autocast).
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    # Run folder: TensorBoard logs, sample grids, checkpoints, resolved config.
    output_dir: str = "runs/parrot"
    # Checkpoint (trainable weights + resume state) every N iterations (0: only at the end and on
    # Ctrl-C); `parrot train --resume RUN_DIR` continues from the newest one.
    checkpoint_every: int = 10
    # Log an image grid every N iterations (0: never, except first and last).
    log_images_every: int = 10
    # Experiment trackers (accelerate's): tensorboard, wandb, mlflow, a comma-separated list of
    # them, or "all" (every one installed). Each but TensorBoard is an optional extra
    # (pip install 'parrot-t2i[wandb]') and follows its own environment (WANDB_MODE=offline, ...).
    report_to: str = "tensorboard"


@dataclass
class EvalConfig:
    # Held-out prompts scored before and after training (same format as prompts.file); null: skip.
    file: str | None = "builtin:mini-heldout"
    # Images per prompt, drawn from the same fixed noise before and after training.
    images_per_prompt: int = 4
    # Seed of that noise.
    seed: int = 1234
    # Denoising steps at inference (evaluation, `parrot generate --run`); null: sample.num_inference_steps.
    # Flow-GRPO trains on fewer steps than it samples with (SD3.5: 10 vs 40; FLUX.1: 6 vs 28).
    num_inference_steps: int | None = None
    # Identifiers prefixed at inference: "all" (the paper: "<reward 1> … <reward K> ĉ"), "none",
    # or a subset of reward numbers such as "1,3" (or 2, or [1, 3]). Ignored when training used no
    # identifiers.
    identifiers: str | int | list[int] = "all"
    # Condition on the PEN's expansion ĉ of each prompt (when a PEN is configured).
    expand: bool = True
    # Original-prompt-centred guidance (paper Eq. 5): ε(∅) + w1·(ε(c) − ε(∅)) + w2·(ε(ĉ) − ε(∅)).
    # false: plain classifier-free guidance on ĉ with sample.guidance_scale. The paper uses
    # w1 = w2 = 5 on SD 1.5. The mini defaults keep w1 + w2 = the training CFG scale of 5, weighted
    # towards the user's prompt, with guidance rescale φ = 0.7 (Lin et al. 2024): on the shipped
    # model they follow held-out prompts better than the plain prompt (checker shape / colour /
    # background 0.975 / 0.975 / 0.892 against 0.958 / 0.942 / 0.867), where w1 = w2 = 2.5 without
    # rescale did worse (0.917 / 0.925 / 0.875) and w1 = w2 = 5 much worse (0.592 / 0.717 / 0.600);
    # benchmarks/inference_defaults.py, docs/MINI_WORLD.md.
    original_prompt_guidance: bool = True
    w1: float = 4.0
    w2: float = 1.0
    # Guidance rescale φ in [0, 1] (Lin et al. 2024; diffusers' rescale_noise_cfg); 0 is off.
    guidance_rescale: float = 0.7
    # These settings are the one source of inference defaults: the run's own evaluation,
    # `parrot evaluate --run` and `parrot generate --run` read them from the run's config.yaml;
    # `parrot generate --model` and `parrot evaluate --model` read this dataclass's defaults.


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    rewards: list[RewardSpec] = field(
        default_factory=lambda: [
            RewardSpec(name) for name in ("mini_aesthetic", "mini_preference", "mini_alignment", "mini_sentiment")
        ]
    )
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    pen: PenConfig = field(default_factory=PenConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> Config:
        """Range and cross-field checks; raises ConfigError naming the key."""
        check_ranges((key, lookup(self, key), rule) for key, rule in RANGES.items())
        try:
            parse_report_to(self.train.report_to)
        except ValueError as err:
            raise ConfigError(f"train.report_to {err}") from None
        if not self.rewards:
            raise ConfigError("rewards: at least one reward is required")
        names = [r.name for r in self.rewards]
        if len(set(names)) != len(names):
            raise ConfigError(f"rewards: each reward may appear once (got {names})")
        obj = self.objective
        if obj.weights is not None and len(obj.weights) != len(names):
            raise ConfigError(
                f"objective.weights needs one weight per reward ({len(names)}: {names}), got {obj.weights}"
            )
        if obj.name == "single" and obj.reward not in names:
            raise ConfigError(f"objective.reward must name one of the configured rewards {names} (got {obj.reward!r})")
        if self.train.num_inner_epochs > 1 and self.train.clip_range is None:
            raise ConfigError(
                "train.num_inner_epochs > 1 reuses stale samples and needs train.clip_range (PPO clipping)"
            )
        if self.model.dtype != "float32" and self.model.trainable != "lora":
            raise ConfigError(
                f"model.dtype={self.model.dtype} keeps the frozen weights in half precision: it needs "
                f"model.trainable=lora (got {self.model.trainable!r}), whose adapters train in float32"
            )
        window = self.sample.sde_window
        if window is not None and window > self.sample.num_inference_steps:
            raise ConfigError(
                f"sample.sde_window ({window}) is longer than the chain (sample.num_inference_steps="
                f"{self.sample.num_inference_steps})"
            )
        if "{k}" not in self.prompts.identifier_template:
            raise ConfigError("prompts.identifier_template must contain '{k}'")
        if self.prompts.identifier_strings and len(self.prompts.identifier_strings) != len(names):
            raise ConfigError(
                f"prompts.identifier_strings needs one string per reward ({len(names)}), got "
                f"{self.prompts.identifier_strings}"
            )
        try:
            parse_identifiers(self.eval.identifiers, len(names))
        except ParrotError as err:
            raise ConfigError(f"eval.{err}") from None
        t, pen = self.train, self.pen
        if not (t.t2i or t.pen):
            raise ConfigError("train.t2i and train.pen are both false: nothing to train")
        if t.pen and pen.pretrained is None:
            raise ConfigError("train.pen=true needs a PEN: set pen.pretrained (or train.pen=false)")
        if self.model.train_identifiers and not (self.prompts.identifiers and t.t2i):
            raise ConfigError(
                "model.train_identifiers learns the reward identifiers: it needs prompts.identifiers=true and "
                "train.t2i=true"
            )
        if pen.kl_coef > 0 and pen.trainable != "lora":
            raise ConfigError("pen.kl_coef > 0 needs pen.trainable=lora (the adapters switched off give the SFT model)")
        return self


# ----------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Range:
    """What values a number may take: ``ok(value)``, and the words an error message uses for it."""

    ok: typing.Callable[[Any], bool]
    allowed: str


ONE_OR_MORE = Range(lambda v: v >= 1, ">= 1")
ONE_OR_MORE_OR_NULL = Range(lambda v: v is None or v >= 1, ">= 1 or null")
AT_LEAST_ONE = Range(lambda v: v >= 1.0, ">= 1.0")
NON_NEGATIVE = Range(lambda v: v >= 0, ">= 0")
POSITIVE = Range(lambda v: v > 0, "> 0")
POSITIVE_OR_NULL = Range(lambda v: v is None or v > 0, "> 0 or null")
UNIT = Range(lambda v: 0 <= v <= 1, "in [0, 1]")
UNIT_OPEN_LEFT = Range(lambda v: 0 < v <= 1, "in (0, 1]")
UNIT_OPEN_RIGHT = Range(lambda v: 0 <= v < 1, "in [0, 1)")

# The one table of allowed ranges: Config.validate checks every key, and a command-line flag that
# stands for a key (``parrot generate --w1`` for eval.w1) is checked against the same entry.
RANGES: dict[str, Range] = {
    "model.lora_rank": ONE_OR_MORE,
    "model.resolution": POSITIVE_OR_NULL,
    "model.distilled_guidance": NON_NEGATIVE,
    "sample.num_inference_steps": ONE_OR_MORE,
    "sample.guidance_scale": AT_LEAST_ONE,
    "sample.eta": UNIT_OPEN_LEFT,
    "sample.prompts_per_iteration": ONE_OR_MORE,
    "sample.images_per_prompt": ONE_OR_MORE,
    "sample.batch_size": ONE_OR_MORE,
    "sample.sde_window": ONE_OR_MORE_OR_NULL,
    "sample.sde_window_shift_every": ONE_OR_MORE,
    "train.num_iterations": NON_NEGATIVE,
    "train.learning_rate": POSITIVE,
    "train.adam_beta1": UNIT_OPEN_RIGHT,
    "train.adam_beta2": UNIT_OPEN_RIGHT,
    "train.adam_weight_decay": NON_NEGATIVE,
    "train.max_grad_norm": POSITIVE,
    "train.batch_size": ONE_OR_MORE,
    "train.timestep_fraction": UNIT_OPEN_LEFT,
    "train.clip_range": POSITIVE_OR_NULL,
    "train.num_inner_epochs": ONE_OR_MORE,
    "train.kl_coef": NON_NEGATIVE,
    "train.checkpoint_every": NON_NEGATIVE,
    "train.log_images_every": NON_NEGATIVE,
    "eval.images_per_prompt": ONE_OR_MORE,
    "eval.num_inference_steps": ONE_OR_MORE_OR_NULL,
    "eval.w1": NON_NEGATIVE,
    "eval.w2": NON_NEGATIVE,
    "eval.guidance_rescale": UNIT,
    "pen.max_new_tokens": ONE_OR_MORE,
    "pen.temperature": POSITIVE,
    "pen.top_p": UNIT_OPEN_LEFT,
    "pen.lora_rank": ONE_OR_MORE,
    "pen.learning_rate": POSITIVE,
    "pen.kl_coef": NON_NEGATIVE,
}


def check_ranges(values: typing.Iterable[tuple[str, Any, Range]]) -> None:
    """A one-line ConfigError for the first (name, value, range) whose value is out of range."""
    for name, value, allowed in values:
        if not allowed.ok(value):
            raise ConfigError(f"{name} must be {allowed.allowed} (got {value!r})")


TRACKERS = ("tensorboard", "wandb", "mlflow")  # aim: see docs/ARCHITECTURE.md, "Experiment tracking"


def parse_report_to(value: str) -> list[str]:
    """``"all"`` or a comma-separated list of tracker names -> the names (installation is not checked)."""
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if names == ["all"]:
        return list(TRACKERS)
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or not names:
        raise ValueError(f"names no tracker {unknown or repr(value)}: use all, or a list of {', '.join(TRACKERS)}")
    return names


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then a preset (a YAML path or a packaged preset name), then ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(_find_preset(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.learning_rate=1e-5")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return _build(Config, data, "").validate()


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _find_preset(path: str | Path) -> Path:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    packaged = PRESET_DIR / f"{candidate.stem}.yaml"
    if candidate.suffix in ("", ".yaml") and packaged.is_file() and candidate.parent.name in ("", "configs"):
        return packaged
    raise ConfigError(f"config file {str(path)!r} not found (packaged presets: {', '.join(preset_names())})")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[leaf] = value


def lookup(obj: Any, dotted: str) -> Any:
    """The value of dotted key ``dotted`` (e.g. "train.learning_rate") in a config."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct dataclass ``cls`` from plain data, checking keys and types recursively."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if path in RETIRED:
            kept, message = RETIRED[path]
            if value == kept:
                continue
            raise ConfigError(message)
        if key not in fields:
            close = [ALIASES[key]] if ALIASES.get(key) in fields else difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{where + '.' if where else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint}; valid keys here: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans: map them back to the option meant
            value = next(
                (word for word in (("yes", "on", "true") if value else ("no", "off", "false")) if word in args), value
            )
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))} (got {value!r})")
        return value
    if dataclasses.is_dataclass(hint):
        if hint is RewardSpec and isinstance(value, str):
            return RewardSpec(name=value)
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list (got {value!r})")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping (got {value!r})")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string (got {value!r})")
        return value
    return value
