"""Multi-process training under ``torchrun`` (DDP): gloo on CPU, nccl on GPUs.

``torchrun --nproc_per_node N -m llmkit.cli.main train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
without them everything runs in one process. (``accelerate launch`` with a multi-CPU config was
seen to start one non-distributed process on these machines; torchrun works.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    enabled: bool
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def setup_distributed() -> DistInfo:
    """Join the process group that torchrun describes in the environment, once."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return DistInfo(enabled=False)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(True, dist.get_rank(), dist.get_world_size(), device)


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of a Python float over all processes (identity in one process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    torch.distributed.all_reduce(t)
    return t.item() / info.world_size
