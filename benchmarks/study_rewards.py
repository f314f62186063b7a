"""User rewards for the objective study (``pareto_study.py --extra-rewards study_rewards:NAME``).

Plain ``module:function`` rewards, the way a user adds their own: not registered, not shipped.

- ``calm``: a calm, low-key image, dark and muted. It is the mirror of ``mini_sentiment``'s
  brightness and chroma terms, so it pulls against the "brighter, more vivid" direction that every
  update in the mini world drifts along (docs/RESULTS.md). Its question for the study: can any
  objective move the model against that drift when a reward asks for it?
"""

from __future__ import annotations

import torch
from torch import Tensor

from parrot_t2i.rewards.mini import brightness_and_chroma


@torch.no_grad()
def calm(images: Tensor, prompts: list[str]) -> Tensor:
    """σ(6·(0.4 − brightness) + 4·(0.2 − chroma)) on (B, 3, H, W) images in [0, 1]: dark, grey images score high."""
    brightness, chroma = brightness_and_chroma(images.float())
    return torch.sigmoid(6 * (0.4 - brightness) + 4 * (0.2 - chroma))
