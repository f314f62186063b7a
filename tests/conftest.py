"""Shared fixtures: offline, seeded, two threads, and tiny models round-tripped through from_pretrained."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from tiny_models import build_tiny_clip, build_tiny_sdxl, build_tiny_vit

from parrot_t2i.tiny import build_tiny_sd

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test: fixed seed, and a private cache so built-in models are built from scratch."""
    torch.manual_seed(0)
    monkeypatch.setenv("PARROT_CACHE", str(tmp_path_factory.getbasetemp() / "parrot-cache"))
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a process keeps one mixed-precision setting; tests use several


@pytest.fixture(scope="session")
def tiny_pixel_model(tmp_path_factory):
    """A pixel-space tiny model folder (3×16×16 images, no VAE)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-pixel"), sample_size=16)


@pytest.fixture(scope="session")
def tiny_sd_model(tmp_path_factory):
    """A genuine tiny StableDiffusionPipeline folder (VAE latents 4×8×8, images 16×16)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"), sample_size=8, with_vae=True)


@pytest.fixture(scope="session")
def tiny_sdxl_model(tmp_path_factory):
    """A genuine tiny StableDiffusionXLPipeline folder (two text encoders, latents 4×8×8, images 16×16)."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIPModel folder (with tokenizer and image processor), the reward backbone."""
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A tiny random ViT classifier folder with labels negative / neutral / positive."""
    return str(build_tiny_vit(tmp_path_factory.mktemp("tiny-vit")))


@pytest.fixture
def train_tiny():
    """``train_tiny(run_dir, *sets)``: `parrot train` of one 2-step iteration of the tiny preset
    with no held-out evaluation, plus ``--set`` overrides; returns the exit code."""
    from parrot_t2i.cli import main

    def run(run_dir, *sets: str) -> int:
        overrides = ["train.num_iterations=1", "sample.num_inference_steps=2", "eval.file=null", *sets]
        return main(
            ["train", "--config", "tiny", *[a for s in overrides for a in ("--set", s)], "--output-dir", str(run_dir)]
        )

    return run
