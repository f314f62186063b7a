"""User-facing errors: the CLI prints these as plain messages, never as tracebacks."""

from __future__ import annotations

import os


class ParrotError(RuntimeError):
    """A problem the user can fix (bad input, missing files or weights)."""


class RewardError(ParrotError):
    """A reward raised, or returned the wrong scores; ``__cause__`` holds the reward's own exception."""


def missing_weights_error(name_or_path: str, cause: Exception) -> ParrotError:
    """One paragraph naming the model, where it was looked for, and how to provide it."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return ParrotError(
        f"could not load model {name_or_path!r}: it is not a local folder with the expected files and was "
        f"not found in the Hugging Face cache ({cache}){' while HF_HUB_OFFLINE is set' if offline else ''}. "
        "Download it on a machine with network access (e.g. `huggingface-cli download ID`) and copy the cache, "
        "set HF_HOME/HF_HUB_CACHE to where it lives, or pass a local diffusers folder as model.pretrained. "
        "Weights are read only from safetensors files: a model that ships only pickled weights "
        "(pytorch_model.bin) must be converted once, on a machine you trust (docs/REAL_MODELS.md). "
        f"(underlying error: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__})"
    )
