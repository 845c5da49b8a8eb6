"""MCLS (BGE-M3, arXiv 2402.03216): embed a long text with a CLS token every `window` tokens.

The text's tokens are cut into windows of `window` tokens; each window is preceded by the
model's CLS token, and the embedding is the mean of the last hidden states at all CLS
positions. BGE-M3 runs one sequence of up to 8,192 positions. An encoder with fewer positions
(MiniLM: 512) cannot hold a long text in one sequence, so here the windows are packed into as
few sequences as fit `max_length` ([CLS] w1 [CLS] w2 ... [SEP]), the sequences run as one padded
batch, and the mean is taken over the CLS states of all of them: windows in different sequences
then do not attend to each other. A text shorter than one window gives exactly the ordinary
input ([CLS] tokens [SEP]) and so exactly plain CLS pooling.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence


def mcls_layout(ids: Sequence[int], cls_id: int, sep_id: int, window: int,
                max_length: int) -> list[tuple[list[int], list[int]]]:
    """Token ids (no special tokens) -> [(sequence, CLS positions)], each sequence <= max_length.

    mcls_layout([5, 6, 7], cls_id=1, sep_id=2, window=2, max_length=8)
      -> [([1, 5, 6, 1, 7, 2], [0, 3])]
    """
    per_seq = (max_length - 1) // (window + 1)  # windows of 1 + window tokens, then one [SEP]
    if per_seq < 1:
        raise ValueError(f"window {window} does not fit max_length {max_length} "
                         f"(needs window + 2 <= max_length)")
    windows = [list(ids[i:i + window]) for i in range(0, len(ids), window)] or [[]]
    out = []
    for start in range(0, len(windows), per_seq):
        seq, cls_at = [], []
        for w in windows[start:start + per_seq]:
            cls_at.append(len(seq))
            seq += [cls_id] + w
        out.append((seq + [sep_id], cls_at))
    return out


def transformer_dir(path: Path) -> Path:
    """The Hugging Face model folder of a sentence-transformers folder (itself, or the path its
    modules.json gives the Transformer module)."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    modules = path / "modules.json"
    if modules.exists():
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Transformer") and (path / m["path"] / "config.json").exists():
                return path / m["path"]
    raise FileNotFoundError(f"{path}: no config.json of a Hugging Face model (nor a "
                            f"sentence-transformers modules.json pointing to one)")


class MCLSEncoder:
    """encode(texts) -> (n, dim) float32 array of MCLS embeddings (L2-normalized if asked)."""

    def __init__(self, model_path, window: int = 256, max_length: Optional[int] = None,
                 device: str = "cpu", batch_size: int = 16, normalize: bool = True):
        from transformers import AutoModel, AutoTokenizer
        folder = transformer_dir(model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(device).eval()
        if self.tokenizer.cls_token_id is None or self.tokenizer.sep_token_id is None:
            raise ValueError(f"{folder}: tokenizer has no CLS/SEP token; MCLS needs an encoder "
                             f"with a CLS token (BERT, RoBERTa/XLM-R style)")
        limit = max_length or min(self.tokenizer.model_max_length,
                                  self.model.config.max_position_embeddings)
        self.window, self.max_length = window, int(limit)
        self.device, self.batch_size, self.normalize = device, batch_size, normalize
        mcls_layout([], 0, 0, window, self.max_length)  # fail early if the window cannot fit

    def layouts(self, text: str) -> list[tuple[list[int], list[int]]]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        tok = self.tokenizer
        return mcls_layout(ids, tok.cls_token_id, tok.sep_token_id, self.window, self.max_length)

    def encode(self, texts: Sequence[str], **_ignored):
        """Keyword arguments of SentenceTransformer.encode (batch_size, ...) are accepted and ignored,
        so `fret eval` can use either encoder."""
        import numpy as np
        import torch
        seqs = [(t, seq, cls_at) for t, text in enumerate(texts) for seq, cls_at in self.layouts(text)]
        seqs.sort(key=lambda s: len(s[1]))  # length-sorted batches: less padding
        dim = self.model.config.hidden_size
        sums = torch.zeros(len(texts), dim, dtype=torch.float64)  # (n_texts, dim)
        counts = torch.zeros(len(texts), dtype=torch.float64)
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(seqs), self.batch_size):
            batch = seqs[start:start + self.batch_size]
            width = max(len(s[1]) for s in batch)
            ids = torch.tensor([s[1] + [pad] * (width - len(s[1])) for s in batch])  # (B, T)
            mask = torch.tensor([[1] * len(s[1]) + [0] * (width - len(s[1])) for s in batch])
            with torch.inference_mode():
                hidden = self.model(input_ids=ids.to(self.device),
                                    attention_mask=mask.to(self.device)).last_hidden_state  # (B, T, dim)
            hidden = hidden.float().cpu().double()
            for row, (t, _, cls_at) in enumerate(batch):
                sums[t] += hidden[row, cls_at].sum(0)  # (dim,)
                counts[t] += len(cls_at)
        emb = (sums / counts[:, None]).float()  # (n_texts, dim)
        if self.normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        return np.asarray(emb.numpy(), dtype=np.float32)
