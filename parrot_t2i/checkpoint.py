"""Checkpoints of a training run, and resuming from one bit for bit.

``checkpoints/iter_N/`` holds what users load (the T2I weights at the top, LoRA in the layout
``pipeline.load_lora_weights`` reads; the PEN's in ``pen/``; the config) and, in ``state/``, what a
resumed run needs to continue exactly where the uninterrupted one would have been: optimiser
(and fp16 loss-scaler) states, every random generator of every process, and the iteration count.

A checkpoint is assembled in a staging folder and renamed into place, so a kill during a write
leaves the previous checkpoint intact; a file cut short afterwards (a full disk, a copy that
stopped) is detected, and the previous good checkpoint is used instead. Non-weight state is read back with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from .config import save_config
from .errors import ParrotError
from .run import Run

logger = logging.getLogger(__name__)


STATE = "state"


# ----------------------------------------------------------------------------- random generators


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Tensor | list | int]:
    """Every random stream a training iteration may draw from, as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict = {
        "python": [list(random.getstate()[1]), random.getstate()[2]],
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": [pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        **{f"generator/{k}": g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    """Restore what :func:`rng_state` captured."""
    keys, gauss_next = state["python"]
    random.setstate((3, tuple(keys), gauss_next))
    pos, has_gauss, cached = state["numpy_pos"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        if f"generator/{k}" in state:  # checkpoints from before the `random` objective have no "objective" stream
            g.set_state(state[f"generator/{k}"])


def _generators(run: Run) -> dict[str, torch.Generator]:
    return {"shared": run.generator, "process": run.noise_generator, "objective": run.objective.generator}


# ----------------------------------------------------------------------------- save / resume


def save_checkpoint(run: Run, iteration: int) -> Path:
    """Write ``checkpoints/iter_N`` atomically: weights, config and the resume state."""
    acc = run.accelerator
    target = run.run_dir / "checkpoints" / f"iter_{iteration:06d}"
    staging = target.with_name(f".staging-{target.name}")
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left by a kill during an earlier write
        (staging / STATE).mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(rng_state(_generators(run)), staging / STATE / f"rng_{acc.process_index}.pt")
    if acc.is_main_process:
        if run.params:
            run.policy.save_trainable(staging, run.config.model.trainable)
        if run.pen_params:
            run.expander.save_trainable(staging / "pen", run.config.pen.trainable)
        save_config(run.config, staging / "config.yaml")
        optimizers = {"t2i": run.optimizer, "pen": run.pen_optimizer}
        torch.save(
            {k: o.state_dict() for k, o in optimizers.items() if o is not None}, staging / STATE / "optimizers.pt"
        )
        if acc.scaler is not None:
            torch.save(acc.scaler.state_dict(), staging / STATE / "scaler.pt")
        progress = {"iteration": iteration, "num_processes": acc.num_processes}
        (staging / STATE / "progress.json").write_text(json.dumps(progress, indent=2))
    acc.wait_for_everyone()
    if acc.is_main_process:
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    acc.wait_for_everyone()
    return target


def damaged_file(checkpoint: Path) -> Path | None:
    """The first file of ``checkpoint`` that is cut short, or None: every safetensors header must
    cover its file, and every torch ``.pt`` must be a whole zip archive. Reads headers only."""
    for path in sorted(checkpoint.rglob("*")):
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, "pt"):
                    pass
            elif path.suffix == ".pt":
                with zipfile.ZipFile(path):
                    pass
        except (SafetensorError, zipfile.BadZipFile, OSError):
            return path
    return None


def intact_checkpoints(run_dir: Path, needs_state: bool) -> Iterator[Path]:
    """``run_dir``'s checkpoints, newest first, skipping (with a warning) any with a damaged file
    and, with ``needs_state``, any without a resume state."""
    for checkpoint in sorted((run_dir / "checkpoints").glob("iter_*"), reverse=True):
        if needs_state and not (checkpoint / STATE / "progress.json").is_file():
            continue
        damaged = damaged_file(checkpoint)
        if damaged is not None:
            logger.warning("%s is damaged (cut short): using the checkpoint before %s", damaged, checkpoint.name)
            continue
        yield checkpoint


def resumable_checkpoint(run_dir: Path) -> tuple[Path, int]:
    """The newest intact checkpoint of ``run_dir`` with a complete resume state, and its iteration."""
    for checkpoint in intact_checkpoints(run_dir, needs_state=True):
        return checkpoint, json.loads((checkpoint / STATE / "progress.json").read_text())["iteration"]
    raise ParrotError(
        f"cannot resume {str(run_dir)!r}: it has no intact checkpoint with a resume state (set "
        "train.checkpoint_every to write them)"
    )


def load_checkpoint(run: Run, checkpoint: Path) -> int:
    """Put the run back in the state :func:`save_checkpoint` recorded; returns its iteration."""
    acc = run.accelerator
    progress = json.loads((checkpoint / STATE / "progress.json").read_text())
    if progress["num_processes"] != acc.num_processes:
        raise ParrotError(
            f"{checkpoint} was written by {progress['num_processes']} process(es); resume it with the same number "
            f"(got {acc.num_processes})"
        )
    if run.params:
        if run.config.model.trainable == "lora":
            run.policy.load_lora(checkpoint)
        else:
            run.policy.load_trainable(checkpoint)
    if run.pen_params:
        run.expander.load_trainable(checkpoint / "pen", run.config.pen.trainable)
    optimizers = torch.load(checkpoint / STATE / "optimizers.pt", weights_only=True)
    for key, optimizer in {"t2i": run.optimizer, "pen": run.pen_optimizer}.items():
        if optimizer is not None:
            optimizer.load_state_dict(optimizers[key])
    if acc.scaler is not None:
        acc.scaler.load_state_dict(torch.load(checkpoint / STATE / "scaler.pt", weights_only=True))
    set_rng_state(torch.load(checkpoint / STATE / f"rng_{acc.process_index}.pt", weights_only=True), _generators(run))
    return progress["iteration"]
