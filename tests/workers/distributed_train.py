"""Run under `accelerate launch --num_processes 2`: two Parrot iterations on the tiny model.

Every process writes what it scored itself (before any gathering), the global prompt slots and
identifiers of its samples, the weights it trained with, and its trainable parameters after
each iteration to OUT/rank{r}.pt, for tests/test_distributed.py to compare.
"""

import sys
from pathlib import Path

import torch

from parrot_t2i.config import load_config
from parrot_t2i.run import setup_run
from parrot_t2i.trainer import train_iteration


class Recording:
    """A reward that keeps a copy of every score it hands out on this process."""

    def __init__(self, reward):
        self.reward, self.name, self.scores = reward, reward.name, []

    def __call__(self, images, prompts):
        scores = self.reward(images, prompts)
        self.scores.append(scores.detach().clone())
        return scores


def main(out: Path, *overrides: str) -> None:
    config = load_config(
        "tiny",
        [
            "rewards=[brightness, colorfulness]",
            "sample.num_inference_steps=3",
            "sample.prompts_per_iteration=2",
            "eval.file=null",
            f"train.output_dir={out / 'run'}",
            *overrides,
        ],
    )
    run = setup_run(config, out / "run")
    run.rewards = [Recording(r) for r in run.rewards]
    record = {"num_processes": run.accelerator.num_processes, "iterations": []}
    for _ in range(2):
        result = train_iteration(run)
        record["iterations"].append(
            {
                "rewards": torch.stack([r.scores[-1] for r in run.rewards], 1),
                "groups": result.batch.groups,
                "reward_index": result.batch.reward_index,
                "weights": result.weights.cpu(),
                "t2i": [p.detach().clone() for p in run.params],
                "pen": [p.detach().clone() for p in run.pen_params],
            }
        )
    torch.save(record, out / f"rank{run.accelerator.process_index}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
