"""Reward identifiers with learnable input embeddings, so that they can specialise (issue 15).

Paper §3.3 prefixes "<reward k>" to the prompt and relies on RL alone to give each identifier its
meaning. With the text encoder frozen, an identifier's token keeps the embedding it had before RL,
and only the UNet's cross-attention can learn to read it: in the mini world the four identifiers
became one shared "brighter" direction (docs/MINI_WORLD.md). Textual inversion (Gal et al. 2023)
gives each identifier one trainable input embedding instead, trained by the same policy gradient.

Each identifier string becomes one token of the text encoder's tokenizer (added to it when the
tokenizer would split it, as CLIP's BPE does), and a forward hook on the encoder's input-embedding
layer substitutes the learnt vectors at those tokens; the encoder's own weights stay untouched.
The vectors save as ``{identifier: (D,)}`` safetensors, the layout diffusers'
``load_textual_inversion`` reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import ParrotError

FILE = "identifier_embeddings.safetensors"


class LearnedIdentifiers(torch.nn.Module):
    def __init__(self, strings: list[str], token_ids: Tensor, initial: Tensor):
        super().__init__()
        self.strings = list(strings)
        self.register_buffer("token_ids", token_ids)  # (K,) one token per identifier
        self.embeddings = torch.nn.Parameter(initial.clone())  # (K, D)
        self._handle = None

    @classmethod
    def attach(cls, text_encoder, tokenizer, strings: list[str]) -> LearnedIdentifiers:
        """Make every identifier one token (adding missing ones, with transformers' mean-initialised
        rows), start from the encoder's current embeddings of those tokens, and hook the encoder."""
        split = [s for s in strings if len(tokenizer(s, add_special_tokens=False).input_ids) != 1]
        if split:
            tokenizer.add_tokens(split)
            text_encoder.resize_token_embeddings(len(tokenizer))
        token_ids = torch.tensor(tokenizer.convert_tokens_to_ids(strings), device=text_encoder.device)
        table = text_encoder.get_input_embeddings()
        learned = cls(strings, token_ids, table.weight.detach()[token_ids]).to(table.weight.device)
        learned._handle = table.register_forward_hook(learned._substitute)
        return learned

    def _substitute(self, module, args, output: Tensor) -> Tensor:
        """Input embeddings (B, L, D) with each identifier token's row replaced by its learnt vector."""
        match = args[0][..., None] == self.token_ids  # (B, L, K)
        learnt = self.embeddings.to(output.dtype)[match.to(torch.long).argmax(-1)]
        return torch.where(match.any(-1, keepdim=True), learnt, output)

    def save(self, directory: str | Path) -> None:
        save_file(
            {s: e.detach().cpu().contiguous() for s, e in zip(self.strings, self.embeddings)}, Path(directory) / FILE
        )

    def load(self, directory: str | Path) -> None:
        state = load_file(Path(directory) / FILE)
        if set(state) != set(self.strings):
            raise ParrotError(f"{directory}: learnt identifiers {sorted(state)} do not match this run's {self.strings}")
        with torch.no_grad():
            self.embeddings.copy_(torch.stack([state[s] for s in self.strings]))
