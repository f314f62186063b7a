"""Convert the official ImageReward checkpoint into a transformers BLIP folder, once.

    python scripts/convert_image_reward.py ImageReward.pt --med-config med_config.json \
        --tokenizer bert-base-uncased --out image-reward

ImageReward.pt and med_config.json come from THUDM/ImageReward (Apache-2.0); --tokenizer is
bert-base-uncased (hub id or local folder), to which BLIP adds [DEC] and [ENC]. The checkpoint is
read with ``torch.load(weights_only=True)``, renamed onto ``BlipForImageTextRetrieval`` (ViT-L/16 at
224 px, BERT-base with cross-attention) and written as safetensors with the score head beside it.
Then score with ``{name: image_reward, args: {model: image-reward}}``.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoTokenizer, BlipConfig

from parrot_t2i.rewards.blip import save_image_reward


def blip_config(med_config: dict) -> BlipConfig:
    """BLIP-large as ImageReward builds it: timm ViT-L/16 (LayerNorm eps 1e-6) + the med BERT."""
    text = {
        "vocab_size": med_config["vocab_size"],
        "hidden_size": med_config["hidden_size"],
        "encoder_hidden_size": med_config["encoder_width"],
        "intermediate_size": med_config["intermediate_size"],
        "num_hidden_layers": med_config["num_hidden_layers"],
        "num_attention_heads": med_config["num_attention_heads"],
        "max_position_embeddings": med_config["max_position_embeddings"],
        "layer_norm_eps": med_config.get("layer_norm_eps", 1e-12),
    }
    vision = {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
    }
    return BlipConfig(text_config=text, vision_config=vision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="ImageReward.pt")
    parser.add_argument("--med-config", required=True, help="med_config.json from THUDM/ImageReward")
    parser.add_argument("--tokenizer", default="bert-base-uncased")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    tokenizer.add_special_tokens(
        {"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]}
    )  # as BLIP's init_tokenizer
    with open(args.med_config) as f:
        config = blip_config(json.load(f))
    print(f"wrote {save_image_reward(state.get('state_dict', state), config, tokenizer, args.out)}")


if __name__ == "__main__":
    main()
