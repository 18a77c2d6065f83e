# SPDX-License-Identifier: BSD-3-Clause
"""Data-parallel training across processes, GPUs and nodes (``torchrun``).

The same ``tomodl train CONFIG`` command runs in one process or under ``torchrun``: the
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` variables that torchrun sets select
DistributedDataParallel with the ``nccl`` backend on CUDA and ``gloo`` on the CPU.

PyTorch's :class:`torch.nn.SyncBatchNorm` only runs on GPUs.  :class:`GlooSyncBatchNorm` is
the CPU equivalent used here, so that batch-norm statistics are those of the global batch on
any backend, and ``world`` processes with batch ``b`` compute the same step as one process
with batch ``world * b`` (up to float rounding).
"""
from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: ``world`` processes, this one is ``rank``."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (set by torchrun); defaults: one process."""
    env = os.environ
    return DistInfo(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)),
                    int(env.get("LOCAL_RANK", 0)))


def init(info: DistInfo, device: "torch.device") -> None:  # noqa: F821
    """Join the process group (nccl on CUDA, gloo on the CPU) when ``world > 1``."""
    import torch.distributed as dist

    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world)
    logger.info("rank %d/%d joined the %s process group", info.rank, info.world, backend)


def shutdown(sync: bool = True) -> None:
    """Leave the process group if one was joined.

    With ``sync`` (after a run that ended normally) every process first waits at a barrier,
    so that no rank tears down gloo's connections while another still uses them (only rank 0
    writes files, so it finishes last; CI once saw the rank that left first abort with
    "terminate called without an active exception").  After an error the barrier is
    skipped: the other ranks may never reach it.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if sync:
        dist.barrier()
    dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], device: "torch.device") -> list:  # noqa: F821
    """Sum a few numbers over all processes (identity in a single process)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _sync_bn_class():
    import torch
    from torch.distributed.nn.functional import all_reduce

    class GlooSyncBatchNorm(torch.nn.BatchNorm2d):
        """BatchNorm2d whose training statistics are reduced over all processes (any backend).

        The per-channel sums are combined with a differentiable all-reduce, so the gradient
        also flows through the global statistics, as in :class:`torch.nn.SyncBatchNorm`.
        """

        def forward(self, x):
            import torch.distributed as dist

            if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
                return super().forward(x)
            xf = x.float()
            count = torch.full((1,), xf.numel() / xf.shape[1], dtype=xf.dtype, device=x.device)
            stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
            with warnings.catch_warnings():   # deprecated in torch 2.13, but differentiable
                warnings.simplefilter("ignore", FutureWarning)   # on every torch >= 2.2
                stats = all_reduce(stats)
            c = xf.shape[1]
            n = stats[-1]
            mean = stats[:c] / n
            var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked += 1
                    m = self.momentum if self.momentum is not None else \
                        1.0 / float(self.num_batches_tracked)
                    self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                    self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
            y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
            if self.affine:
                y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
            return y.to(x.dtype) if x.dtype != torch.float32 else y

    return GlooSyncBatchNorm


def convert_sync_batchnorm(model: "torch.nn.Module", device: "torch.device"  # noqa: F821
                           ) -> "torch.nn.Module":  # noqa: F821
    """Synchronize the batch norms: torch's SyncBatchNorm on CUDA, the gloo version elsewhere.

    The state-dict keys are unchanged, so weights saved from the converted model load into
    the plain one.
    """
    import torch

    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    cls = _sync_bn_class()
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.BatchNorm2d):
            new = cls(child.num_features, child.eps, child.momentum, child.affine,
                      child.track_running_stats).to(device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for local multi-process runs and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_worker(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    # share the cores instead of oversubscribing them (torchrun sets OMP_NUM_THREADS=1 likewise)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    fn(*args)


def launch_local(fn: Callable[..., Any], world: int, *args: Any) -> None:
    """Run ``fn(*args)`` in ``world`` fresh processes on this machine, as torchrun would.

    ``fn`` must be importable (a module-level function).  Used by the tests; on a cluster use
    ``torchrun --nnodes ... --nproc_per_node ... -m tomodl train CONFIG``.
    """
    import torch.multiprocessing as mp

    mp.spawn(_local_worker, args=(world, free_port(), fn, args), nprocs=world, join=True)
