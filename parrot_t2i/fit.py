"""One small, resumable training loop shared by the mini-world models and `parrot sft-pen`.

Each model's script supplies ``loss_fn(step)``, which builds its own batch from a generator seeded
by the step number. A batch therefore depends on the step alone, so a run that is stopped and
resumed from its checkpoint (weights, optimiser, EMA, step) continues exactly as if it had never
stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class FitConfig:
    steps: int  # optimiser steps in total
    learning_rate: float  # peak, after linear warm-up; cosine decay to 10% of it over `horizon`
    horizon: int | None = None  # length of the cosine decay (default: `steps`; longer = stop early on it)
    warmup_steps: int = 200
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    ema_decay: float | None = None  # keep an exponential moving average of the weights (with warm-up)
    checkpoint_every: int = 500  # steps between resumable checkpoints
    seed: int = 0


def step_generator(seed: int, step: int) -> torch.Generator:
    """The torch generator for one step's batch: a function of (seed, step) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_factor(step: int, cfg: FitConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, (cfg.horizon or cfg.steps) - cfg.warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(
    model: nn.Module,
    loss_fn: Callable[[int], tuple[Tensor, dict[str, float]]],
    cfg: FitConfig,
    work_dir: str | Path,
    desc: str,
    resume: bool = True,
) -> nn.Module:
    """Train ``model`` for ``cfg.steps`` steps and return it with its final (EMA, if any) weights.

    ``work_dir`` receives ``checkpoint/`` (replaced atomically every ``checkpoint_every`` steps)
    and ``log.jsonl``. With ``resume`` an existing checkpoint there is picked up.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True) if cfg.ema_decay else None
    start = _load_checkpoint(work_dir / "checkpoint", model, optimizer, scheduler, ema) if resume else 0
    model.train()
    with tqdm(
        range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, unit="step", dynamic_ncols=True
    ) as bar:
        for step in bar:
            loss, stats = loss_fn(step)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(params)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if (step + 1) % 50 == 0:
                with open(work_dir / "log.jsonl", "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "step": step + 1,
                                "loss": loss.item(),
                                "grad_norm": float(grad_norm),
                                "lr": scheduler.get_last_lr()[0],
                                **stats,
                            }
                        )
                        + "\n"
                    )
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                _save_checkpoint(work_dir / "checkpoint", step + 1, cfg, model, optimizer, scheduler, ema)
    model.eval()
    if ema is not None:
        ema.copy_to(params)
    return model


def _save_checkpoint(path: Path, step: int, cfg: FitConfig, model, optimizer, scheduler, ema) -> None:
    staging = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=path.parent))
    save_model(model, str(staging / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema else None,
        },
        staging / "state.pt",
    )
    (staging / "progress.json").write_text(json.dumps({"step": step, "fit": asdict(cfg)}, indent=2))
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, model, optimizer, scheduler, ema) -> int:
    if not (path / "progress.json").is_file():
        old = path.with_name(path.name + ".old")  # killed between the two renames of a save
        if not (old / "progress.json").is_file():
            return 0
        path = old
    load_model(model, str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    return json.loads((path / "progress.json").read_text())["step"]
