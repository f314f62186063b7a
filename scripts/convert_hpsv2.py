"""Convert an HPSv2 / HPSv2.1 checkpoint into a transformers CLIPModel folder, once.

    python scripts/convert_hpsv2.py HPS_v2.1_compressed.pt --base laion/CLIP-ViT-H-14-laion2B-s32B-b79K --out hpsv2.1

``--base`` is the CLIP-ViT-H/14 the checkpoint was fine-tuned from (hub id or local folder; only its
config, tokenizer and image processor are read). The checkpoint is read with
``torch.load(weights_only=True)``, its keys are renamed (parrot_t2i/rewards/openclip.py), checked
against the architecture and written as safetensors. Then score with
``{name: hpsv2, args: {model: hpsv2.1}}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

from parrot_t2i.rewards.openclip import openclip_to_transformers


def convert(checkpoint: str, base: str, out: str | Path) -> Path:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = openclip_to_transformers(state.get("state_dict", state))
    config = CLIPConfig.from_pretrained(base)
    with torch.device("meta"):
        expected = {k: v.shape for k, v in CLIPModel(config).state_dict().items() if not k.endswith("position_ids")}
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    wrong = [k for k in set(expected) & set(state) if state[k].shape != expected[k]]
    if missing or unexpected or wrong:
        raise SystemExit(
            f"checkpoint does not fit {base}: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}, "
            f"wrong shape {wrong[:3]}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    CLIPImageProcessor.from_pretrained(base).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="HPS_v2_compressed.pt or HPS_v2.1_compressed.pt")
    parser.add_argument("--base", default="laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    parser.add_argument("--out", required=True, help="folder to write the transformers model to")
    args = parser.parse_args()
    print(f"wrote {convert(args.checkpoint, args.base, args.out)}")


if __name__ == "__main__":
    main()
