"""Several processes (torchrun): every rank sees every rank's embeddings as negatives.

Each rank embeds its slice of the global batch; `gather_with_grad` concatenates all slices in
rank order with the local slice put back as the live tensor, so gradients flow to the local
part only. Every rank then computes the same global loss, and `sum_gradients` adds the ranks'
parameter gradients, which equals the gradient of the single-process loss on the union batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device_type: str) -> bool:
    """Join the process group torchrun describes in the environment; False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each rank -> (world * b, ...) in rank order; the local block keeps its graph."""
    rank, size = world()
    if size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts)  # (world * b, ...)


def gather(local: torch.Tensor) -> torch.Tensor:
    """gather_with_grad for tensors without gradients (ids, masks)."""
    return gather_with_grad(local.detach())


def sum_gradients(params) -> None:
    """All-reduce (sum) the gradients of `params` across ranks, as one flat buffer."""
    _, size = world()
    if size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
