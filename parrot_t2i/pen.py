"""The prompt expansion network (PEN) p_φ(ĉ | c), paper §3.3: any Hugging Face causal LM.

The PEN turns a user prompt c into a detailed prompt ĉ. Parrot trains it with REINFORCE on the
expansion tokens, so sampling returns each token's log-probability, and :meth:`token_log_probs`
recomputes them with gradients for the update.

Log-prob convention: log softmax(logits / temperature) of the sampled token, i.e. the
temperature-scaled model's distribution. Top-p truncation only shapes which tokens get sampled;
it is not part of the log-probability.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from .builtin import resolve
from .errors import ParrotError, missing_weights_error

logger = logging.getLogger(__name__)

# How each kind of PEN is prompted; "{prompt}" is the user's prompt.
TEMPLATES = {
    "mini": "<bos>{prompt} <sep>",  # the mini world's GPT-2 (parrot_t2i/mini/train_pen.py)
    "promptist": "{prompt} Rephrase:",  # microsoft/Promptist
    "instruction": (  # the paper's
        "Input: {prompt}. This is a text input for image generation. "
        "Expand prompt for improving image quality. Output: "
    ),
}
# Written beside a PEN by `parrot sft-pen` (and the mini PEN): the template it was trained with.
TEMPLATE_FILE = "parrot_pen.json"
# What `save_trainable` writes for a fully fine-tuned PEN (LoRA goes to peft's adapter files).
FULL_WEIGHTS = "model.safetensors"


@dataclass
class Expansions:
    """A batch of sampled expansions and what the PEN update needs from it."""

    texts: list[str]  # (B,) decoded expansions ĉ
    prompt_ids: Tensor  # (B, Lp) templated prompts, left-padded
    prompt_mask: Tensor  # (B, Lp)
    ids: Tensor  # (B, Le) sampled tokens (the end-of-sequence token included when produced)
    mask: Tensor  # (B, Le) 1 on sampled tokens, 0 on padding after the end
    log_probs: Tensor  # (B, Le) per-token log p_φ at sampling time, 0 where mask is 0

    def __getitem__(self, rows: Tensor) -> Expansions:
        """The expansions of ``rows`` (a long index tensor), e.g. the Pareto set for the update."""
        index = rows.tolist()
        return Expansions(
            [self.texts[i] for i in index],
            self.prompt_ids[rows],
            self.prompt_mask[rows],
            self.ids[rows],
            self.mask[rows],
            self.log_probs[rows],
        )


class PromptExpander:
    def __init__(self, model, tokenizer, template: str):
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as err:
            raise ParrotError(
                f"PEN template {template!r} is not a format string ({err}); write {{{{ and }}}} for literal braces"
            ) from None
        if fields != {"prompt"}:
            others = ", ".join("{" + f + "}" for f in sorted(fields - {"prompt"}))
            raise ParrotError(
                f"PEN template {template!r} may use exactly one placeholder, {{prompt}}"
                + (f" (found {others})" if others else " (it has none)")
                + "; write {{ and }} for literal braces"
            )
        self.model, self.tokenizer, self.template = model, tokenizer, template
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # prompts end where generation starts

    @classmethod
    def from_pretrained(cls, name_or_path: str = "builtin:mini", template: str | None = None) -> PromptExpander:
        """A hub id or local folder; ``builtin:mini`` is the shipped mini-world PEN.

        ``template`` is a key of ``TEMPLATES`` or a format string. By default it is the one saved
        beside the model (``parrot_pen.json``, written by ``parrot sft-pen``), else "instruction",
        the paper's.
        """
        source = resolve(name_or_path, "pen")
        try:
            model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as err:
            raise missing_weights_error(name_or_path, err) from None
        saved = Path(source) / TEMPLATE_FILE
        if template is None and saved.is_file():
            template = json.loads(saved.read_text())["template"]
        template = TEMPLATES.get(template or "instruction", template)
        return cls(model.eval().requires_grad_(False), tokenizer, template)

    # ------------------------------------------------------------------ trainable parameters

    def set_trainable(self, mode: str, lora_rank: int = 8, lora_alpha: float | None = None) -> list[torch.nn.Parameter]:
        """Unfreeze what RL trains and return it: peft LoRA adapters on every linear layer (the
        paper's choice) or the full model. With LoRA the SFT model stays available by disabling
        the adapters, which is what the KL term compares against."""
        self.model.requires_grad_(False)
        if mode == "lora":
            from peft import LoraConfig, get_peft_model
            from transformers.pytorch_utils import Conv1D

            conv1d = any(isinstance(m, Conv1D) for m in self.model.modules())  # GPT-2 stores linear layers transposed
            config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha or lora_rank,
                target_modules="all-linear",
                lora_dropout=0.0,
                fan_in_fan_out=conv1d,
                task_type="CAUSAL_LM",
            )
            self.model = get_peft_model(self.model, config).eval()  # peft leaves it in train mode: dropout would make
            # the sampled expansions and their recomputed log-probs disagree
        elif mode == "full":
            self.model.requires_grad_(True)
        else:
            raise ValueError(f"unknown PEN trainable set {mode!r}")
        return [p for p in self.model.parameters() if p.requires_grad]

    def save_trainable(self, directory: str | Path, mode: str) -> None:
        """LoRA: peft's adapter files (``adapter_model.safetensors``); full: the model's weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if mode == "lora":
            self.model.save_pretrained(directory)
        else:
            from safetensors.torch import save_model

            save_model(self.model, str(directory / FULL_WEIGHTS))

    def load_trainable(self, directory: str | Path, mode: str) -> None:
        """Load what :meth:`save_trainable` wrote: onto this SFT PEN (for inference), or into the
        weights :meth:`set_trainable` made trainable (resuming training; they stay trainable)."""
        from peft import PeftModel
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file, load_model

        directory = Path(directory)
        training = any(p.requires_grad for p in self.model.parameters())
        try:
            if mode == "lora" and isinstance(self.model, PeftModel):
                set_peft_model_state_dict(self.model, load_file(directory / "adapter_model.safetensors"))
            elif mode == "lora":
                self.model = PeftModel.from_pretrained(self.model, str(directory))
            else:
                load_model(self.model, str(directory / FULL_WEIGHTS))
        except (OSError, RuntimeError, ValueError) as err:
            raise ParrotError(f"{directory}: cannot load the trained PEN ({str(err).splitlines()[0]})") from None
        if not training:
            self.model.requires_grad_(False).eval()

    def _prompts(self, prompts: list[str], max_new_tokens: int):
        """Templated prompts, tokenized and left-padded; a prompt too long for the PEN's position
        limit together with ``max_new_tokens`` loses words from its end, with one warning."""
        config = getattr(self.model, "config", None)
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        texts = [self.template.format(prompt=p) for p in prompts]
        if limit is not None:
            budget = limit - max_new_tokens
            if self._length("") > budget:
                raise ParrotError(
                    f"pen.max_new_tokens={max_new_tokens} leaves no room for the prompt in the PEN's {limit} positions"
                )
            shortened = [self._shorten(p, budget) for p in prompts]
            cut = sum(s != p for s, p in zip(shortened, prompts))
            if cut:
                logger.warning(
                    "%d prompt(s) were too long for the PEN (%d positions, %d of them for the expansion) and were "
                    "shortened to their first words",
                    cut,
                    limit,
                    max_new_tokens,
                )
            texts = [self.template.format(prompt=p) for p in shortened]
        return self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt").to(self.model.device)

    def _length(self, prompt: str) -> int:
        return len(
            self.tokenizer(self.template.format(prompt=prompt), add_special_tokens=False, verbose=False).input_ids
        )

    def _shorten(self, prompt: str, budget: int) -> str:
        """The longest word prefix of ``prompt`` whose templated form has at most ``budget`` tokens."""
        if self._length(prompt) <= budget:
            return prompt
        words = prompt.split()
        low, high = 0, len(words)  # binary search: prefixes of `low` words fit, of `high` do not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self._length(" ".join(words[:middle])) <= budget else (low, middle)
        return " ".join(words[:low])

    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 24,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Expansions:
        """One sampled expansion per prompt, with per-token log-probabilities."""
        encoded = self._prompts(prompts, max_new_tokens)
        # manual_seed reseeds every device's generator: fork them all, so the caller's come back untouched.
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                **encoded,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        ids = out.sequences[:, encoded.input_ids.shape[1] :]  # (B, Le)
        logits = torch.stack(out.logits, 1).float() / temperature  # (B, Le, V) raw model logits
        mask = _until_eos(ids, self.tokenizer.eos_token_id)
        texts = [
            t.strip()
            for t in self.tokenizer.batch_decode(
                ids * mask + self.tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True
            )
        ]
        return Expansions(
            texts,
            encoded.input_ids,
            encoded.attention_mask,
            ids,
            mask,
            sampled_log_probs(logits.log_softmax(-1), ids, mask),
        )

    def fit_to(self, expansions: Expansions, fits: Callable[[int, str], bool]) -> Expansions:
        """Shorten each expansion to its longest token prefix whose text ``fits(row, text)``.

        The caller says what fits (e.g. "the T2I text encoder takes identifier + expansion
        whole"). Dropped tokens leave the mask, so the PEN is credited only for the tokens the
        T2I model saw.
        """
        mask, texts = expansions.mask.clone(), list(expansions.texts)
        for row, text in enumerate(texts):
            length = int(mask[row].sum())
            while length > 0 and not fits(row, text):
                length -= 1
                text = self.tokenizer.decode(expansions.ids[row, :length], skip_special_tokens=True).strip()
            mask[row, length:] = 0
            texts[row] = text
        return replace(expansions, texts=texts, mask=mask, log_probs=expansions.log_probs * mask)

    def token_log_probs(self, expansions: Expansions, temperature: float = 1.0) -> Tensor:
        """(B, Le) log p_φ of each sampled token, recomputed with gradients; 0 where mask is 0."""
        return sampled_log_probs(self.token_distributions(expansions, temperature), expansions.ids, expansions.mask)

    def token_distributions(self, expansions: Expansions, temperature: float = 1.0) -> Tensor:
        """(B, Le, V) log p_φ(· | c, ĉ_<j) at every expansion position, with gradients."""
        ids = torch.cat([expansions.prompt_ids, expansions.ids], 1)
        attention = torch.cat([expansions.prompt_mask, expansions.mask], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
        logits = (
            self.model(input_ids=ids, attention_mask=attention, position_ids=positions).logits.float() / temperature
        )
        start = expansions.prompt_ids.shape[1]
        return logits[:, start - 1 : -1].log_softmax(-1)  # the logits that chose each expansion token

    def kl_to_sft(self, expansions: Expansions, log_probs: Tensor, temperature: float = 1.0) -> Tensor:
        """(B,) Σ_j KL(p_φ(·|ĉ_<j) ‖ p_SFT(·|ĉ_<j)) over each expansion's positions, exact over the
        vocabulary. ``log_probs`` are :meth:`token_distributions` under the current weights; the
        SFT model is this one with its LoRA adapters switched off."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            raise ParrotError(
                "the KL term to the SFT PEN needs pen.trainable=lora (the adapters off give the SFT model)"
            )
        with torch.no_grad(), self.model.disable_adapter():
            reference = self.token_distributions(expansions, temperature)
        kl = (log_probs.exp() * (log_probs - reference)).sum(-1)  # (B, Le)
        return (kl * expansions.mask).sum(1)


def sampled_log_probs(distributions: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """(B, L) log-probability of each sampled token under (B, L, V) log-distributions; 0 where mask is 0."""
    return distributions.gather(-1, ids[..., None]).squeeze(-1) * mask


def _until_eos(ids: Tensor, eos_token_id: int) -> Tensor:
    """1 up to and including the first end-of-sequence token of each row, 0 after it."""
    is_eos = (ids == eos_token_id).long()
    after = is_eos.cumsum(1) - is_eos  # > 0 strictly after the first eos
    return (after == 0).long()
