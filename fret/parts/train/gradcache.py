"""One training step's forward and backward, plain or with gradient caching.

Gradient caching (Gao et al. 2021, as BGE-M3 uses it): embed the batch in sub-batches without a
graph, compute the loss on all embeddings, then re-embed each sub-batch with a graph and
back-propagate the cached embedding gradient into it. Memory then depends on the sub-batch,
not the batch. The last sub-batch keeps its graph from the first pass instead of being embedded
again, which saves one of the repeated forwards per step. The random state (dropout) of each
sub-batch is saved and replayed, so the cached path gives the same loss and gradients as the
plain one, and leaves the random state where the plain one does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fret.parts.train.model import Encoder


def length_chunks(texts: list[str], size: int) -> list[list[int]]:
    """Indices of texts, shortest first, in chunks of `size` (less padding per forward pass).

    The longest texts come last so that `cached_step` keeps the graph of the costliest chunk.
    length_chunks(['aaa', 'a', 'aa'], 2) -> [[1, 2], [0]]
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i:i + size] for i in range(0, len(order), size)]


@dataclass
class RngState:
    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> "RngState":
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's malloc_trim, or None where the C library has none (macOS, some libcs)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_host_memory(device: torch.device) -> None:
    """Hand free heap pages back to the OS before a sub-batch's graph is built (CPU only).

    glibc keeps the freed buffers of earlier sub-batches resident and scattered, so each new graph
    lands beside them and the peak grows with the number of sub-batches: 1.34x at batch 1024 vs
    32 measured without this, 1.08x with it, at no measurable cost in step time
    (benchmarks/bench_train.py). On CUDA the graphs live in the device's own allocator.
    """
    trim = _malloc_trim() if device.type == "cpu" else None
    if trim is not None:
        trim(0)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _place(n: int, dim: int, chunks: list[list[int]], parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    out = like.new_empty((n, dim))  # (N, d)
    for idx, part in zip(chunks, parts):
        out[torch.tensor(idx, device=out.device)] = part.to(out.dtype)
    return out


def tokenized_chunks(encoder: Encoder, texts: list[str], chunk_size: int, device: torch.device):
    """(chunks of indices, their tokenized features on device); tokenized once, used by both passes."""
    chunks = length_chunks(texts, chunk_size)
    features = [{k: v.to(device) for k, v in encoder.tokenize([texts[i] for i in idx]).items()} for idx in chunks]
    return chunks, features


def plain_step(encoder: Encoder, texts: list[str], loss_of: Callable[[torch.Tensor], torch.Tensor],
               device: torch.device, chunk_size: int, bf16: bool = False) -> float:
    """Embed every chunk with its graph, compute the loss, back-propagate once."""
    chunks, features = tokenized_chunks(encoder, texts, chunk_size, device)
    parts = []
    for feats in features:
        with autocast(device, bf16):
            parts.append(encoder(feats).float())  # (c, d)
    emb = _place(len(texts), parts[0].shape[1], chunks, parts, parts[0])  # (N, d), keeps the graphs
    loss = loss_of(emb)
    loss.backward()
    return float(loss.detach())


def cached_step(encoder: Encoder, texts: list[str], loss_of: Callable[[torch.Tensor], torch.Tensor],
                device: torch.device, chunk_size: int, bf16: bool = False) -> float:
    """Gradient-cached forward and backward; same result as `plain_step` with the same chunks.

    The last chunk (the longest texts) keeps its graph from the first pass, so only the other
    chunks are embedded twice: this saves the costliest of the repeated forwards, while at most
    one chunk's graph is alive at any time, as in plain gradient caching.
    """
    chunks, features = tokenized_chunks(encoder, texts, chunk_size, device)
    states, parts = [], []
    with torch.no_grad():
        for feats in features[:-1]:
            states.append(RngState.capture(device))
            with autocast(device, bf16):
                parts.append(encoder(feats).float())  # (c, d)
    release_host_memory(device)
    with autocast(device, bf16):
        kept = encoder(features[-1]).float()  # (c, d), with its graph
    parts.append(kept.detach())
    emb = _place(len(texts), kept.shape[1], chunks, parts, parts[0]).requires_grad_()  # (N, d)
    loss = loss_of(emb)
    loss.backward()
    cached = emb.grad  # (N, d)
    kept.backward(cached[torch.tensor(chunks[-1], device=device)])
    del kept  # frees the last chunk's graph before the replays build theirs
    after = RngState.capture(device)  # where the plain path leaves the random state
    # longest first: each replay's graph then fits in the memory the previous, larger one freed
    for idx, feats, state in reversed(list(zip(chunks, features, states))):
        release_host_memory(device)
        state.restore(device)
        with autocast(device, bf16):
            live = encoder(feats).float()  # (c, d)
        live.backward(cached[torch.tensor(idx, device=device)])
    after.restore(device)
    return float(loss.detach())
