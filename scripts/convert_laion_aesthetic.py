"""Convert the LAION aesthetic predictor v2 head to safetensors, once.

    python scripts/convert_laion_aesthetic.py sac+logos+ava1-l14-linearMSE.pth laion_aesthetic_v2.safetensors

The upstream file is a pickled PyTorch state dict (keys ``layers.{0,2,4,6,7}.{weight,bias}``). It is
read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled code, checked against
the head's architecture and written as safetensors, the only format parrot-t2i loads weights from.
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import save_file

from parrot_t2i.rewards.clip import ScoreHead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pth", help="sac+logos+ava1-l14-linearMSE.pth (or another head of the same shape)")
    parser.add_argument("out", help="the .safetensors file to write")
    args = parser.parse_args()
    state = torch.load(args.pth, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    head = ScoreHead.from_state_dict(state)  # fails loudly on a file of another shape
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, args.out)
    print(f"wrote {args.out}: {sum(v.numel() for v in head.state_dict().values()):,} parameters")


if __name__ == "__main__":
    main()
