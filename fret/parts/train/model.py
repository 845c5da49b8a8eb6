"""The encoder being trained: a Hugging Face model plus pooling, saved as a sentence-transformers folder.

Pooling lives here and only here (`pool`), so new modes (e.g. BGE-M3's MCLS) are added in one
place. Training uses our own small forward (tokenize, model, pool) rather than
sentence-transformers' modules, and `save_sentence_transformer` writes a folder that
`SentenceTransformer(path)` loads with the same pooling and a Normalize module.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

POOLING_MODES = ("mean", "cls", "lasttoken")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Token states (B, T, H) and attention mask (B, T) -> one vector per text (B, H)."""
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
    if mode == "cls":
        return hidden[:, 0]  # (B, H)
    if mode == "lasttoken":
        # the last attended position works for right and left padding alike
        positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
        last = (mask.long() * positions).argmax(dim=1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
    raise ValueError(f"unknown pooling {mode!r}; choose from {POOLING_MODES}")


def st_pooling_mode(folder: Path) -> str | None:
    """The pooling of a sentence-transformers folder, reading old (flags) and new (string) configs."""
    modules = folder / "modules.json"
    if not modules.exists():
        return None
    for entry in json.loads(modules.read_text()):
        if entry["type"].endswith("Pooling"):
            cfg = json.loads((folder / entry["path"] / "config.json").read_text())
            if "pooling_mode" in cfg:
                mode = cfg["pooling_mode"]
                return mode if isinstance(mode, str) else mode[0]
            flags = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                     "pooling_mode_lasttoken": "lasttoken"}
            for flag, mode in flags.items():
                if cfg.get(flag):
                    return mode
    return None


class Encoder(nn.Module):
    def __init__(self, name_or_path: str, pooling: str = "auto", max_length: int = 256):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = Path(name_or_path)
        found = st_pooling_mode(folder) if folder.is_dir() else None
        self.pooling = (found or "mean") if pooling == "auto" else pooling
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"{name_or_path}: pooling {self.pooling!r} is not one of {POOLING_MODES}")
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModel.from_pretrained(name_or_path)
        if self.pooling == "lasttoken" and self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**features)
        return pool(out.last_hidden_state, features["attention_mask"], self.pooling)  # (B, H)

    def embed(self, texts: Sequence[str], device: torch.device) -> torch.Tensor:
        features = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        return self(features)  # (B, H)


def _st_modules():
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules


def save_sentence_transformer(encoder: Encoder, output: Path, prompts: dict[str, str] | None = None) -> None:
    """Write `output` as a sentence-transformers folder: transformer, pooling, normalize, and the
    query/document `prompts` training used (so `encode_query` / `encode_document` format alike)."""
    from sentence_transformers import SentenceTransformer

    modules = _st_modules()
    staging = output.with_name(output.name + ".hf-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    encoder.model.save_pretrained(staging)
    encoder.tokenizer.save_pretrained(staging)
    transformer = modules.Transformer(str(staging), max_seq_length=encoder.max_length)
    pooling = modules.Pooling(encoder.dim, encoder.pooling)
    st = SentenceTransformer(modules=[transformer, pooling, modules.Normalize()], device="cpu",
                             prompts=dict(prompts or {}))
    output.mkdir(parents=True, exist_ok=True)
    st.save(str(output), create_model_card=False)
    shutil.rmtree(staging)
