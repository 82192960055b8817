"""Distributed data parallelism under ``torchrun`` (gloo on CPU, nccl on CUDA), and the device choice.

``torchrun --nproc_per_node=K -m archdsl.cli train ...`` starts K processes
with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`setup` joins them
into one process group. Each process takes one contiguous shard of every global
batch (:meth:`archdsl.data.Split.batches`) and scales its summed loss by
``K / global_batch``, so the gradients that DistributedDataParallel averages
are those of the mean loss over the global batch: K processes compute what one
process computes with the same global batch (up to float rounding, and except
for batch norm, whose statistics are per process, as DDP's default).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..diagnostics import ArchError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, values) -> list:
        """``values`` (floats) summed over the processes."""
        if not self.active:
            return [float(v) for v in values]
        import torch
        import torch.distributed as td
        t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                         device=self.device if self.backend == "nccl" else "cpu")
        td.all_reduce(t)
        return t.cpu().tolist()

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td
            td.barrier()

    def wrap(self, module):
        """``module`` inside DistributedDataParallel when there are several processes."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP
        if self.backend == "nccl":
            return DDP(module, device_ids=[self.local_rank], output_device=self.local_rank)
        return DDP(module)

    def close(self) -> None:
        if self.active:
            import torch.distributed as td
            if td.is_initialized():
                td.destroy_process_group()


def check_device(device: str) -> str:
    import torch
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ArchError(f"Unknown device '{device}'; the devices are cpu and cuda (or cuda:K).")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArchError("The CUDA device was asked for, but PyTorch finds no CUDA GPU on this machine; use "
                        "--device cpu.")
    return device


def setup(device: str = "cpu") -> Dist:
    """The process group of a ``torchrun`` launch (or a single process), with this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    check_device(device)
    if world <= 1:
        return Dist(device=device)
    import torch
    import torch.distributed as td
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise ArchError(f"Process {rank} would use GPU {local}, but this machine has "
                            f"{torch.cuda.device_count()}; start at most that many processes per node.")
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    return Dist(rank, world, local, device, backend)
