"""One iteration of the `sd15-paper` preset on a randomly initialised, full-size SD 1.5 architecture.

    python benchmarks/sd15_iteration.py                  # on a GPU: images/s and peak GPU memory
    python benchmarks/sd15_iteration.py --scale tiny     # the same code path, tiny sizes, on CPU (seconds)

Weights do not matter for speed, so nothing is downloaded: the UNet, VAE and CLIP text encoder are
built from SD 1.5's configurations, the PEN from GPT-2 small's (Promptist's size), and the rewards
are cheap image statistics (the real reward models' cost is measured separately). Everything else
is the preset: 512², DDIM 50 steps, CFG 5, 256 images per iteration, cross-attention layers trained,
PEN LoRA, bf16. Prints a table, writes benchmarks/results/sd15_iteration[_tiny].json and, for a GPU
run, appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' tiny PEN builder

import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from tiny_models import build_tiny_pen
from transformers import CLIPTextConfig, CLIPTextModel, GPT2Config, GPT2LMHeadModel

from parrot_t2i.config import load_config
from parrot_t2i.run import setup_run
from parrot_t2i.tiny import build_tiny_sd, sd_ddim_scheduler, tiny_tokenizer
from parrot_t2i.trainer import train_iteration

RESULTS = Path(__file__).parent / "results"


def build_sd15(path: Path) -> Path:
    """SD 1.5's architecture (860M UNet, 123M text encoder, 84M VAE) with random weights."""
    tokenizer = tiny_tokenizer()  # vocabulary size does not change the cost of a 77-token encoder
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    scheduler = sd_ddim_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def build_gpt2_small(path: Path) -> Path:
    """GPT-2 small's architecture (124M), the size of microsoft/Promptist, with the byte tokenizer."""
    build_tiny_pen(path)
    config = GPT2LMHeadModel.from_pretrained(path).config
    GPT2LMHeadModel(
        GPT2Config(vocab_size=config.vocab_size, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
    ).save_pretrained(path)
    return path


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--iterations", type=int, default=1, help="measured iterations, after one warm-up")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.scale == "full" and device != "cuda":
        raise SystemExit(
            "--scale full needs a CUDA GPU (one iteration samples 256 images at 512² with 50 steps); use --scale "
            "tiny on a CPU"
        )
    work = Path(tempfile.mkdtemp(prefix="sd15-bench-"))
    if args.scale == "full":
        model, pen, overrides = build_sd15(work / "sd15"), build_gpt2_small(work / "pen"), []
    else:  # same code path, sizes a CPU runs in seconds
        model, pen = build_tiny_sd(work / "sd", sample_size=8, with_vae=True), build_tiny_pen(work / "pen")
        overrides = [
            "sample.num_inference_steps=4",
            "sample.prompts_per_iteration=2",
            "sample.images_per_prompt=4",
            "train.mixed_precision=no",
        ]
    config = load_config(
        "sd15-paper",
        [
            f"model.pretrained={model}",
            f"pen.pretrained={pen}",
            "rewards=[brightness, colorfulness, jpeg_incompressibility]",
            "prompts.prompts=['a photograph of an astronaut riding a horse', 'a bowl of fruit on a wooden table', 'a "
            "city street at night in the rain', 'a portrait of an old fisherman']",
            "eval.file=null",
            f"train.output_dir={work / 'run'}",
            *overrides,
        ],
    )
    run = setup_run(config, work / "run")
    train_iteration(run)  # warm-up: allocator, kernels, lazy loading
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iterations):
        started = time.perf_counter()
        stats = train_iteration(run).stats
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    images = config.sample.prompts_per_iteration * config.sample.images_per_prompt
    seconds = sorted(times)[len(times) // 2]
    result = {
        "scale": args.scale,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "images_per_iteration": images,
        "num_inference_steps": config.sample.num_inference_steps,
        "resolution": run.policy.resolution,
        "mixed_precision": config.train.mixed_precision,
        "iteration_s": round(seconds, 2),
        "images_per_s": round(images / seconds, 3),
        "peak_memory_gb": round(peak_memory_gb(device), 2),
        "memory_kind": "GPU max_memory_allocated" if device == "cuda" else "process max RSS",
        "selected_fraction": stats["selected_fraction"],
        "time_split_s": {k.removeprefix("time/"): round(v, 2) for k, v in stats.items() if k.startswith("time/")},
        "torch": torch.__version__,
    }
    print("| scale | device | images/it | steps | res | iteration s | images/s | peak memory GB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    row = (
        f"| {args.scale} | {result['device']} | {images} | {result['num_inference_steps']} | {result['resolution']} "
        f"| {result['iteration_s']} | {result['images_per_s']} | {result['peak_memory_gb']} ({result['memory_kind']}) |"
    )
    print(row)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sd15_iteration{'' if args.scale == 'full' else '_tiny'}.json"
    out.write_text(json.dumps(result, indent=2))
    if args.scale == "full":
        with open(Path(__file__).parent / "RESULTS.md", "a") as f:
            f.write(row + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
