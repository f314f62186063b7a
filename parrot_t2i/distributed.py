"""Many processes, one global batch: what Parrot needs from data parallelism.

Each process samples its own slice of the iteration's prompts with its own noise. Pareto
selection and the Eq. 4 normalisation (1/|P|) are defined on the whole batch, so every process
gathers all rewards, computes the same selection, and keeps its own rows' weights. The weights
are then already normalised over the global batch, so gradients are **summed** across processes
(not averaged, as DDP would): the step equals the single-process step over the same samples.

Gradients are summed once per optimiser step, after all of the step's chunks have been
accumulated, instead of by DDP's hooks. A process may have no selected sample at all (Pareto
weights are mostly zero); with DDP it would then skip the backward pass its peers wait on. One
explicit all-reduce has the same traffic as DDP's last, synchronising chunk and cannot hang.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import Tensor


def process_rows(accelerator: Accelerator, rows_per_process: int) -> slice:
    """This process's rows in the global batch, which is laid out in process order."""
    start = accelerator.process_index * rows_per_process
    return slice(start, start + rows_per_process)


def gather_rows(accelerator: Accelerator, tensor: Tensor) -> Tensor:
    """Every process's (B, ...) rows concatenated in process order; the tensor itself on one process."""
    return accelerator.gather(tensor.contiguous()) if accelerator.num_processes > 1 else tensor


def sum_gradients(accelerator: Accelerator, params: list[torch.nn.Parameter]) -> None:
    """All-reduce (sum) the accumulated gradients so every process takes the same step.

    A parameter without a gradient on this process (nothing selected here) contributes zeros.
    The gradients are flattened into one buffer: one collective call, whatever the layer count.
    """
    if accelerator.num_processes == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
