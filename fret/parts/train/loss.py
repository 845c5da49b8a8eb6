"""The Gecko contrastive loss with a Matryoshka term (Gecko, arXiv 2403.20327, its fine-tuning loss).

For a batch of B examples (q_i, p_i+, p_i-) and cosine similarity s:

  L = 1/B sum_i -log e^{s(q_i,p_i+)/t} / ( sum_j (e^{s(q_i,p_j+)/t} + 1[j!=i] e^{s(q_i,q_j)/t}) + sum_k e^{s(q_i,p_ik-)/t} )

Candidates whose text equals the example's own positive (another example's positive, a hard
negative, or a same-tower query) are masked out, and so are same-tower queries equal to the
example's own query: duplicates are never negatives. With `mask_siblings` (the default), a
same-tower query whose positive is the example's own positive is masked too: two questions about
one paragraph are not negatives of each other (on XQuAD, ~5 questions share each paragraph). Texts are compared by integer ids
(`text_ids`), so the masking also works on embeddings gathered from other processes.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def text_ids(texts: Sequence[str]) -> torch.Tensor:
    """Stable 62-bit ids of texts; equal texts, equal ids. text_ids(['a', 'a'])[0] == text_ids(['a'])[0]"""
    ids = [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "big") >> 2
           for t in texts]
    return torch.tensor(ids, dtype=torch.int64)


class GeckoLoss(nn.Module):
    """InfoNCE over in-batch positives, same-tower queries and own hard negatives, over Matryoshka dims.

    With `same_tower=False` and no negatives this is plain in-batch InfoNCE (pre-finetuning).
    The Matryoshka term is sum_d w_d * L(embeddings truncated to d and re-normalised).
    """

    def __init__(self, temperature: float = 0.05, same_tower: bool = True,
                 dims: Sequence[int] = (), weights: Sequence[float] = (), mask_siblings: bool = True):
        super().__init__()
        self.temperature = temperature
        self.same_tower = same_tower
        self.mask_siblings = mask_siblings
        self.dims = list(dims)
        self.weights = list(weights) or [1.0] * len(self.dims)

    def forward(self, q: torch.Tensor, p: torch.Tensor, n: Optional[torch.Tensor] = None,
                n_valid: Optional[torch.Tensor] = None, q_ids: Optional[torch.Tensor] = None,
                p_ids: Optional[torch.Tensor] = None, n_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """q, p: (B, d); n: (B, K, d) hard negatives with n_valid (B, K) bool; *_ids: text ids."""
        B = q.shape[0]
        if q_ids is None:
            q_ids = torch.arange(B, device=q.device)
            p_ids = torch.arange(B, 2 * B, device=q.device)
        dims = self.dims or [q.shape[-1]]
        weights = self.weights if self.dims else [1.0]
        masks = self._masks(q_ids, p_ids, n_valid, n_ids)
        total = q.new_zeros((), dtype=torch.float32)
        for dim, weight in zip(dims, weights):
            total = total + weight * self._infonce(q[..., :dim], p[..., :dim],
                                                   None if n is None else n[..., :dim], masks)
        return total

    def _masks(self, q_ids, p_ids, n_valid, n_ids):
        """Boolean 'drop this candidate' masks for the three score blocks."""
        own = torch.eye(q_ids.shape[0], dtype=torch.bool, device=q_ids.device)  # (B, B)
        drop_p = (p_ids[None, :] == p_ids[:, None]) & ~own  # (B, B): duplicate of my positive
        drop_q = own | (q_ids[None, :] == q_ids[:, None]) | (q_ids[None, :] == p_ids[:, None])  # (B, B)
        if self.mask_siblings:
            drop_q = drop_q | (p_ids[None, :] == p_ids[:, None])  # (B, B): q_j answers to my positive too
        drop_n = None
        if n_valid is not None:
            drop_n = ~n_valid  # (B, K)
            if n_ids is not None:
                drop_n = drop_n | (n_ids == p_ids[:, None])  # (B, K)
        return drop_p, drop_q, drop_n

    def _infonce(self, q, p, n, masks) -> torch.Tensor:
        drop_p, drop_q, drop_n = masks
        q = F.normalize(q.float(), dim=-1)  # (B, d)
        p = F.normalize(p.float(), dim=-1)  # (B, d)
        blocks = [(q @ p.T).masked_fill(drop_p, float("-inf"))]  # (B, B)
        if self.same_tower:
            blocks.append((q @ q.T).masked_fill(drop_q, float("-inf")))  # (B, B)
        if n is not None and n.shape[1] > 0:
            n = F.normalize(n.float(), dim=-1)  # (B, K, d)
            qn = torch.einsum("bd,bkd->bk", q, n)  # (B, K)
            blocks.append(qn if drop_n is None else qn.masked_fill(drop_n, float("-inf")))
        logits = torch.cat(blocks, dim=1) / self.temperature  # (B, B + B + K)
        target = torch.arange(q.shape[0], device=q.device)  # own positive sits at column i
        return F.cross_entropy(logits, target)
