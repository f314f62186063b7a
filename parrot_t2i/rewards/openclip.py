"""OpenCLIP / OpenAI-CLIP checkpoints as transformers ``CLIPModel`` state dicts, by renaming keys.

HPSv2 is an OpenCLIP ViT-H/14 fine-tune. Its architecture equals transformers' CLIPModel of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, so its weights port without OpenCLIP (which, with timm
and torchvision, cannot be installed beside transformers on CPU machines). The layout is the one
transformers' own ``convert_clip_original_pytorch_to_hf`` reads: fused attention ``in_proj``
matrices are split into q/k/v, and the two projection matrices are transposed into Linear weights.
"""

from __future__ import annotations

import re

from torch import Tensor

_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
IGNORED = {"attn_mask", "visual.attn_mask"}  # causal-mask buffers some versions save; rebuilt by transformers


def openclip_to_transformers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an OpenCLIP (OpenAI layout) state dict to ``CLIPModel`` keys. Unknown keys raise KeyError."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key in IGNORED:
            continue
        if key in _TOP:
            out[_TOP[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif match := _BLOCK.match(key):
            tower = "vision_model" if match.group(1) else "text_model"
            prefix, rest = f"{tower}.encoder.layers.{match.group(2)}", match.group(3)
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")  # weight or bias: q, k, v stacked along dim 0
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}.self_attn.{name}.{kind}"] = part.contiguous()
            else:
                module, _, leaf = rest.rpartition(".")
                if module not in _LAYER:
                    raise KeyError(f"unexpected OpenCLIP key {key!r}")
                out[f"{prefix}.{_LAYER[module]}.{leaf}"] = value
        else:
            raise KeyError(f"unexpected OpenCLIP key {key!r}")
    return out
