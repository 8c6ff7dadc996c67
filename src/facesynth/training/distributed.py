"""Data-parallel training over the processes that ``torchrun`` starts (torch.distributed: gloo on CPU, NCCL on GPU).

Rank r of W processes takes the samples r, r + W, r + 2W, ... of every global batch.  Random draws are made
for the whole global batch on every rank (all ranks hold the same RNG state) and then sliced the same way,
so W processes compute exactly the samples one process would: the same latents, noise maps, flips and
minibatch-stddev groups (groups are strided, so a rank's groups are whole groups of the global batch).  The
snapshot therefore does not depend on W, and a run can resume with a different number of processes.

Gradients are averaged with one flat all-reduce per optimizer step, as StyleGAN2-ADA does, rather than
through the DistributedDataParallel wrapper: its bucketed gradient hooks do not support the double backward
of R1 and path-length regularisation, nor several optimizer phases per step on sub-networks.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ..errors import FacesynthError

# Rank 0 alone writes snapshots and computes metrics; the others wait for it at their next collective.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


class DataParallel:
    """This process's place among the ranks, and the few collectives training needs.

    With one process every method is the plain single-process operation (``randn`` is ``torch.randn``).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ setup
    @classmethod
    def from_env(cls, device: torch.device) -> tuple[DataParallel, torch.device]:
        """Join the process group torchrun describes in the environment; one process without it.

        Returns the group and this rank's device (``cuda`` becomes ``cuda:LOCAL_RANK``).
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls(), device
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank if device.index is None else device.index)
            torch.cuda.set_device(device)
        elif device.type != "cpu":
            raise FacesynthError(f"distributed training runs on CUDA GPUs or CPUs, not {device.type}")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT,
                                    device_id=device if device.type == "cuda" else None)
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Processes sharing one machine's cores: split them rather than oversubscribe.
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        return cls(rank, world_size, local_rank), device

    def close(self, finished: bool = False) -> None:
        """Leave the process group.  ``finished``: every rank got here normally, so they first wait for each
        other: a rank tearing gloo down while another still talks to it can abort the other process."""
        if self.active and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()

    def local_batch(self, global_batch: int, what: str = "batch") -> int:
        if global_batch % self.world_size:
            raise FacesynthError(f"the {what} ({global_batch}) must be divisible by the number of processes "
                                 f"({self.world_size})")
        return global_batch // self.world_size

    # ------------------------------------------------------------------ randomness
    def shard(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.rank::self.world_size] if self.active else t

    def _draw(self, sample, shape, **kw) -> torch.Tensor:
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        if not self.active:
            return sample(shape, **kw)
        return self.shard(sample((shape[0] * self.world_size, *shape[1:]), **kw))

    def randn(self, *shape, device=None, dtype=None, generator=None) -> torch.Tensor:
        """Normal samples for this rank's ``shape`` (dim 0 is the local batch), drawn as one process would."""
        return self._draw(torch.randn, shape, device=device, dtype=dtype, generator=generator)

    def rand(self, *shape, device=None, dtype=None, generator=None) -> torch.Tensor:
        """Uniform samples, sharded like ``randn``."""
        return self._draw(torch.rand, shape, device=device, dtype=dtype, generator=generator)

    # ------------------------------------------------------------------ collectives
    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The average of ``t`` over ranks (the same tensor with one process)."""
        if not self.active:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world_size

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Replace each gradient by its mean over ranks: one all-reduce of all of them."""
        if not self.active:
            return
        params = [p for p in module.parameters() if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (ranks seeded alike agree already; this makes it certain)."""
        if self.active:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def same_choice(self, choice: str, options: tuple[str, ...], device: torch.device) -> str:
        """Rank 0's choice among ``options`` on every rank (e.g. a form each rank timed for itself)."""
        if not self.active:
            return choice
        t = torch.tensor([options.index(choice)], device=device)
        dist.broadcast(t, src=0)
        return options[int(t.item())]

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is true on one (e.g. a time limit reached)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = DataParallel()


def sharded_noise(module: torch.nn.Module, dp: DataParallel) -> None:
    """Per-layer noise maps of ``module`` drawn for the global batch and sliced for this rank."""
    from ..nets.layers import NoiseInjection

    for m in module.modules():
        if isinstance(m, NoiseInjection):
            m.draw = dp.randn if dp.active else None


def run_then_leave(trainer) -> dict:
    """``trainer.run()``, then leave its process group (``trainer.dp``), waiting for the other ranks first
    when the run finished normally."""
    finished = False
    try:
        stats = trainer.run()
        finished = True
        return stats
    finally:
        trainer.dp.close(finished)


__all__ = ["DataParallel", "SINGLE", "sharded_noise", "run_then_leave"]
