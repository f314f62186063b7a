"""The mini world's word-level tokenizer, in transformers' own format (``tokenizer.json``).

One token per grammar word, so tiny models learn the language in minutes. It also carries the
reward identifiers "<reward 1>" … "<reward 8>" as ordinary (non-special) added tokens that no
pre-training caption contains: RL is what gives them meaning (paper §3.3). "<sep>" separates a user
prompt from its expansion for the prompt expansion network.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .world import vocabulary

SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
MAX_IDENTIFIERS = 8
IDENTIFIERS = [f"<reward {k}>" for k in range(1, MAX_IDENTIFIERS + 1)]
SEPARATOR = "<sep>"
MAX_LENGTH = 32  # bos + up to 4 identifiers + the longest caption (20 tokens) + eos, with room


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=True,  # "circle , on" decodes as "circle, on"
    )
    tokenizer.add_tokens(IDENTIFIERS + [SEPARATOR])
    return tokenizer
