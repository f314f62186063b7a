"""Reward identifiers with learnable input embeddings, so that they can specialise (issue 15).

Paper §3.3 prefixes "<reward k>" to the prompt and relies on RL alone to give each identifier its
meaning. With the text encoder frozen, an identifier's token keeps the embedding it had before RL,
and only the UNet's cross-attention can learn to read it: in the mini world the four identifiers
became one shared "brighter" direction (docs/MINI_WORLD.md). Textual inversion (Gal et al. 2023)
gives each identifier one trainable input embedding instead, trained by the same policy gradient.

Each identifier string becomes one token of every text encoder's tokenizer (added to it when the
tokenizer would split it, as CLIP's BPE and T5's SentencePiece do), and a forward hook on each
encoder's input-embedding layer substitutes that encoder's learnt vectors at those tokens; the
encoders' own weights stay untouched. A model with several encoders (SDXL: two CLIPs; SD3: two
CLIPs and T5; FLUX: CLIP and T5) learns one vector per identifier in each, since each reads the
prompt in its own embedding space. The vectors of encoder i save as ``{identifier: (D_i,)}``
safetensors, ``identifier_embeddings.safetensors`` for the first, ``identifier_embeddings_2``,
``_3`` for the next (diffusers' numbering of ``text_encoder_2``, ``_3``): the layout diffusers'
``load_textual_inversion(..., text_encoder=, tokenizer=)`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import ParrotError

FILE = "identifier_embeddings.safetensors"  # the first (or only) text encoder's vectors


def embedding_file(encoder: int) -> str:
    """The file of text encoder ``encoder`` (0-based), named as diffusers numbers the encoders."""
    return FILE if encoder == 0 else FILE.replace(".safetensors", f"_{encoder + 1}.safetensors")


class LearnedIdentifiers(torch.nn.Module):
    def __init__(self, strings: list[str], token_ids: list[Tensor], initial: list[Tensor]):
        super().__init__()
        self.strings = list(strings)
        for i, ids in enumerate(token_ids):
            self.register_buffer(f"token_ids_{i}", ids)  # (K,) one token per identifier, in encoder i
        # (K, D_i) per encoder, float32 whatever the encoder's dtype: AdamW on bf16 vectors would stall.
        self.embeddings = torch.nn.ParameterList([torch.nn.Parameter(e.float().clone()) for e in initial])

    @classmethod
    def attach(cls, encoders: Sequence[tuple[torch.nn.Module, object]], strings: list[str]) -> LearnedIdentifiers:
        """For each (text encoder, tokenizer): make every identifier one token (adding missing ones,
        with transformers' mean-initialised rows), start from the encoder's current embeddings of those
        tokens, and hook the encoder."""
        token_ids, initial = [], []
        for encoder, tokenizer in encoders:
            split = [s for s in strings if len(tokenizer(s, add_special_tokens=False).input_ids) != 1]
            if split:
                tokenizer.add_tokens(split)
                encoder.resize_token_embeddings(len(tokenizer))
            ids = torch.tensor(tokenizer.convert_tokens_to_ids(strings), device=encoder.device)
            token_ids.append(ids)
            initial.append(encoder.get_input_embeddings().weight.detach()[ids])
        learned = cls(strings, token_ids, initial).to(encoders[0][0].device)
        for i, (encoder, _) in enumerate(encoders):
            hook = lambda module, args, output, i=i: learned._substitute(i, args[0], output)
            encoder.get_input_embeddings().register_forward_hook(hook)
        return learned

    def _substitute(self, encoder: int, input_ids: Tensor, output: Tensor) -> Tensor:
        """Input embeddings (B, L, D) with each identifier token's row replaced by its learnt vector."""
        match = input_ids[..., None] == getattr(self, f"token_ids_{encoder}")  # (B, L, K)
        learnt = self.embeddings[encoder].to(output.dtype)[match.to(torch.long).argmax(-1)]
        return torch.where(match.any(-1, keepdim=True), learnt, output)

    def save(self, directory: str | Path) -> None:
        for i, table in enumerate(self.embeddings):
            state = {s: e.detach().cpu().contiguous() for s, e in zip(self.strings, table)}
            save_file(state, Path(directory) / embedding_file(i))

    def load(self, directory: str | Path) -> None:
        for i, table in enumerate(self.embeddings):
            path = Path(directory) / embedding_file(i)
            if not path.is_file():
                raise ParrotError(f"{directory}: no {path.name}: these identifiers were learnt for fewer text encoders")
            state = load_file(path)
            if set(state) != set(self.strings):
                raise ParrotError(
                    f"{directory}: learnt identifiers {sorted(state)} do not match this run's {self.strings}"
                )
            with torch.no_grad():
                table.copy_(torch.stack([state[s] for s in self.strings]))
