"""Two processes (gloo on CPU) train as one: shared global selection, identical parameters."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from parrot_t2i.config import load_config
from parrot_t2i.objectives import Objective

WORKER = Path(__file__).parent / "workers" / "distributed_train.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "selection, name, backbone",
    [
        ("group", "parrot", "unet"),
        ("global", "parrot", "unet"),
        ("group", "front_rank", "unet"),
        ("group", "parrot", "sd3"),
    ],
)
def test_two_processes_select_on_the_global_batch_and_stay_identical(tmp_path, selection, name, backbone):
    # accelerate 1.x: `--cpu --num_processes 2` starts ONE process (its multi-CPU path needs
    # mpirun); the torchrun launcher plus ACCELERATE_USE_CPU gives two gloo processes.
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    model = []  # the tiny UNet of the tiny preset, or a tiny SD3 with a LoRA (the flow SDE)
    if backbone == "sd3":
        from tiny_models import build_tiny_sd3

        sd3 = build_tiny_sd3(tmp_path / "sd3")
        model = [f"model.pretrained={sd3}", "model.trainable=lora", "sample.eta=0.7"]
    proc = subprocess.run(
        [
            *launch,
            str(WORKER),
            str(tmp_path),
            f"objective.selection={selection}",
            f"objective.name={name}",
            "objective.pareto_filter=true",
            *model,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        check=False,
    )  # a hang guard only
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    objective = Objective(
        load_config(
            "tiny", [f"objective.selection={selection}", f"objective.name={name}", "objective.pareto_filter=true"]
        ).objective,
        ["brightness", "colorfulness"],
    )
    for step in (0, 1):
        local = [r["iterations"][step] for r in ranks]
        assert (
            local[0]["groups"].tolist() == [0] * 4 + [1] * 4 and local[1]["groups"].tolist() == [2] * 4 + [3] * 4
        )  # global prompt slots
        assert not torch.equal(local[0]["rewards"], local[1]["rewards"])  # each process drew its own samples
        # The selection the processes trained with equals one single-process selection over all samples.
        single = objective(
            torch.cat([r["rewards"] for r in local]),
            torch.cat([r["groups"] for r in local]),
            torch.cat([r["reward_index"] for r in local]),
        )
        assert torch.equal(torch.cat([r["weights"] for r in local]), single.weights)
        assert single.selected.sum() < len(single.selected)  # a real front: some samples were dropped
        for network in ("t2i", "pen"):
            assert local[0][network] and all(torch.equal(a, b) for a, b in zip(local[0][network], local[1][network])), (
                network
            )
    first, second = (ranks[0]["iterations"][s]["t2i"] for s in (0, 1))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # and they did train
