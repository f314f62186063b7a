"""The prompt expansion network (PEN) p_φ(ĉ | c), paper §3.3: any Hugging Face causal LM.

The PEN turns a user prompt c into a detailed prompt ĉ. Parrot trains it with REINFORCE on the
expansion tokens, so sampling returns each token's log-probability, and :meth:`token_log_probs`
recomputes them with gradients for the update.

Log-prob convention: log softmax(logits / temperature) of the sampled token, i.e. the
temperature-scaled model's distribution. Top-p truncation only shapes which tokens get sampled;
it is not part of the log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from .errors import missing_weights_error

# How each kind of PEN is prompted; "{prompt}" is the user's prompt.
TEMPLATES = {
    "mini": "<bos>{prompt} <sep>",  # the mini world's GPT-2 (parrot_t2i/mini/train_pen.py)
    "promptist": "{prompt} Rephrase:",  # microsoft/Promptist
    "instruction": "Input: {prompt}. This is a text input for image generation. Expand prompt for improving image quality. Output: ",  # the paper's
}


@dataclass
class Expansions:
    """A batch of sampled expansions and what the PEN update needs from it."""

    texts: list[str]  # (B,) decoded expansions ĉ
    prompt_ids: Tensor  # (B, Lp) templated prompts, left-padded
    prompt_mask: Tensor  # (B, Lp)
    ids: Tensor  # (B, Le) sampled tokens (the end-of-sequence token included when produced)
    mask: Tensor  # (B, Le) 1 on sampled tokens, 0 on padding after the end
    log_probs: Tensor  # (B, Le) per-token log p_φ at sampling time, 0 where mask is 0


class PromptExpander:
    def __init__(self, model, tokenizer, template: str):
        if "{prompt}" not in template:
            raise ValueError(f"PEN template must contain '{{prompt}}': {template!r}")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # prompts end where generation starts

    @classmethod
    def from_pretrained(cls, name_or_path: str = "builtin:mini", template: str | None = None) -> PromptExpander:
        """A hub id or local folder; ``builtin:mini`` is the shipped mini-world PEN. ``template``
        is a key of ``TEMPLATES`` or a format string (default: "mini" for the mini PEN, else
        "instruction")."""
        source = name_or_path
        if name_or_path == "builtin:mini":
            from .mini import weights_path

            source, template = str(weights_path("pen")), template or "mini"
        try:
            model = AutoModelForCausalLM.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as err:
            raise missing_weights_error(name_or_path, err) from None
        template = TEMPLATES.get(template or "instruction", template)
        return cls(model.eval(), tokenizer, template)

    def _prompts(self, prompts: list[str]):
        texts = [self.template.format(prompt=p) for p in prompts]
        return self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt").to(self.model.device)

    @torch.no_grad()
    def sample(self, prompts: list[str], *, max_new_tokens: int = 24, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> Expansions:
        """One sampled expansion per prompt, with per-token log-probabilities."""
        encoded = self._prompts(prompts)
        with torch.random.fork_rng(devices=[]):
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
        log_probs = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
        mask = _until_eos(ids, self.tokenizer.eos_token_id)
        texts = [t.strip() for t in self.tokenizer.batch_decode(ids * mask + self.tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True)]
        return Expansions(texts, encoded.input_ids, encoded.attention_mask, ids, mask, log_probs * mask)

    def token_log_probs(self, expansions: Expansions, temperature: float = 1.0) -> Tensor:
        """(B, Le) log p_φ of each sampled token, recomputed with gradients; 0 where mask is 0."""
        ids = torch.cat([expansions.prompt_ids, expansions.ids], 1)
        attention = torch.cat([expansions.prompt_mask, expansions.mask], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions).logits.float() / temperature
        start = expansions.prompt_ids.shape[1]
        predicted = logits[:, start - 1 : -1]  # the logits that chose each expansion token
        log_probs = predicted.log_softmax(-1).gather(-1, expansions.ids[..., None]).squeeze(-1)
        return log_probs * expansions.mask


def _until_eos(ids: Tensor, eos_token_id: int) -> Tensor:
    """1 up to and including the first end-of-sequence token of each row, 0 after it."""
    is_eos = (ids == eos_token_id).long()
    after = is_eos.cumsum(1) - is_eos  # > 0 strictly after the first eos
    return (after == 0).long()
