"""The seed embedder: any sentence-transformers model, encoding in length-sorted batches, cached.

Sorting by token length before batching means each batch pads to texts of about the same length,
so little compute goes to padding (benchmarks/bench_embed.py measures the gain); the output rows
are put back in input order. `encode_cached` stores one .npy per (model, ids, texts), so rerunning
a stage over the same shard reads the vectors instead of encoding again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fret.parts import bundled

_SMALL_FILE = 1 << 20  # hashed whole; bigger files (weights) by size plus head and tail
# The onnx engine's default bound on a batch's padded tokens. Measured on MiniLM with one thread
# per batch (benchmarks/bench_mine.py): 512 encodes as fast as 8 texts per batch or as one text
# at a time, and a batch's activations stay a few MiB where 8 texts of 256 tokens take ~140 MiB.
ONNX_BATCH_TOKENS = 512


def fingerprint_dir(folder: Path) -> str:
    """Content fingerprint of a model folder, independent of its location and mtimes.

    Small files (configs, tokenizer) are hashed whole; large ones by name, size and their first
    and last MiB, which changes with any retrained weights without reading gigabytes.
    """
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        h.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= _SMALL_FILE:
                h.update(f.read())
            else:
                h.update(f.read(_SMALL_FILE))
                f.seek(size - _SMALL_FILE)
                h.update(f.read(_SMALL_FILE))
    return h.hexdigest()[:16]


def pick_device(device: str) -> str:
    """'auto' -> 'cuda' where present, else 'mps' on Apple silicon, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Embedder:
    """A sentence-transformers model with length-sorted batching and a stable identity."""

    def __init__(self, name_or_path: str = "default", device: str = "auto", batch_size: int = 64,
                 max_seq_length: Optional[int] = None, normalize: bool = True,
                 pooling: str = "model", mcls_window: int = 256, engine: str = "torch",
                 export_cache: Optional[Path] = None, batch_tokens: Optional[int] = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.name = name_or_path
        self.path = bundled.resolve_embedder(name_or_path)
        self.batch_size = batch_size
        # at most this many padded tokens (texts x longest) per batch; None: no bound on torch
        self.batch_tokens = batch_tokens or (ONNX_BATCH_TOKENS if engine == "onnx" else None)
        self.normalize = normalize
        self.engine = engine
        self._max_seq_length_asked = max_seq_length
        self._identity: Optional[dict] = None
        self.pooling, self.mcls_window = pooling, mcls_window
        self._mcls = self._onnx = self.model = None
        if pooling not in ("model", "mcls"):
            raise ValueError(f"embedder pooling {pooling!r}: expected 'model' or 'mcls'")
        if engine == "onnx":  # no torch in this process: see fret.parts.onnx_embed
            if pooling != "model" or device not in ("auto", "cpu"):
                raise ValueError("embed.engine onnx runs the model's own pooling on the CPU; "
                                 "use engine torch for mcls pooling or a GPU")
            from . import onnx_embed
            self.device = "cpu"
            folder = onnx_embed.ensure_exported(
                self.path, self._fingerprint(), max_seq_length,
                Path(export_cache or Path.home() / ".cache" / "fret" / "onnx"))
            self._onnx = onnx_embed.OnnxEncoder(folder)
            self.dim, self.max_seq_length = self._onnx.dim, self._onnx.max_seq_length
            return
        if engine != "torch":
            raise ValueError(f"embedder engine {engine!r}: expected 'torch' or 'onnx'")
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        self.model = SentenceTransformer(self.path, device=self.device)
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.max_seq_length = int(self.model.max_seq_length)
        self.dim = int(self.model.get_embedding_dimension()
                       if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        if pooling == "mcls":  # BGE-M3 multi-CLS pooling, for inputs longer than one window
            from .mcls import MCLSEncoder
            self._mcls = MCLSEncoder(self.path, window=mcls_window, device=self.device,
                                     batch_size=batch_size, normalize=normalize)

    def _fingerprint(self) -> str:
        folder = Path(self.path)
        return fingerprint_dir(folder) if folder.is_dir() else self.path

    def identity(self) -> dict:
        """Everything that changes the vectors: model content, sequence length, normalization,
        pooling, engine."""
        if self._identity is None:
            read = identity_from_files(self.name, self._max_seq_length_asked, self.normalize,
                                       self.pooling, self.mcls_window, self.engine)
            fingerprint = read["fingerprint"] if read else self._fingerprint()  # hashed once
            self._identity = make_identity(self.name, fingerprint, self.max_seq_length,
                                           self.normalize, self.dim, self.pooling,
                                           self.mcls_window, self.engine)
            if read is not None and read != self._identity:  # stages plan with the files' one
                raise RuntimeError(f"embedder {self.name!r}: its files say {read}, the loaded "
                                   f"model {self._identity}")
        return self._identity

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token count of each text, capped at max_seq_length (what the model will actually see)."""
        if self._onnx is not None:
            return self._onnx.token_lengths(texts)
        cap = self.max_seq_length
        ids = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=True,
                                   max_length=cap, return_attention_mask=False)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.int64)

    def encode(self, texts: Sequence[str], batch_size: Optional[int] = None,
               progress: bool = False, sort_by_length: bool = True) -> np.ndarray:
        """(n, dim) float32 in input order; batches formed longest first when sort_by_length."""
        texts = list(texts)
        if self._mcls is not None:  # sorts its own windows by length
            return self._mcls.encode(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bs = batch_size or self.batch_size
        if self._onnx is not None:  # tokenized once, for the lengths and the batches
            inputs = self._onnx.tokenize(texts)
            lengths = np.array([len(ids) for ids in inputs], dtype=np.int64)
        else:  # sentence-transformers tokenizes each batch itself
            inputs = texts
            lengths = (self.token_lengths(texts) if sort_by_length or self.batch_tokens
                       else np.zeros(len(texts), dtype=np.int64))
        # stable sort, longest first: ties keep input order, so batches are deterministic
        order = (np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(texts)))
        batches = plan_batches(lengths, order, bs, self.batch_tokens)
        inputs_of = ([inputs[i] for i in idx] for idx in batches)
        results = (self._onnx.map(inputs_of) if self._onnx is not None
                   else map(self._torch_batch, inputs_of))  # each (len(batch), dim)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(batches), desc="embed", unit="batch")
        for idx, vecs in zip(batches, results):
            out[idx] = vecs
        if self._onnx is not None and self.normalize:  # as sentence-transformers' option does
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _torch_batch(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                 normalize_embeddings=self.normalize, show_progress_bar=False)


def plan_batches(lengths: np.ndarray, order: np.ndarray, batch_size: int,
                 batch_tokens: Optional[int] = None) -> list[np.ndarray]:
    """Cut `order` into consecutive batches of at most batch_size texts and, with batch_tokens,
    at most that many padded tokens (texts x the batch's longest); a longer text goes alone.

    plan_batches(np.array([9, 5, 5, 2]), np.arange(4), 8, 10) -> [[0], [1, 2], [3]]"""
    if not batch_tokens:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start, longest = [], 0, 0
    for pos, i in enumerate(order):
        longest = max(longest, int(lengths[i]))
        if pos > start and (pos - start + 1 > batch_size or (pos - start + 1) * longest > batch_tokens):
            batches.append(order[start:pos])
            start, longest = pos, int(lengths[i])
    if len(order):
        batches.append(order[start:])
    return batches


def make_identity(name: str, fingerprint: str, max_seq_length: int, normalize: bool, dim: int,
                  pooling: str = "model", mcls_window: int = 256, engine: str = "torch") -> dict:
    return {
        "name": name, "fingerprint": fingerprint, "max_seq_length": int(max_seq_length),
        "normalize": normalize, "dim": int(dim),
        **({"pooling": "mcls", "mcls_window": mcls_window} if pooling == "mcls" else {}),
        # its vectors differ from torch's in the last bits (under 1e-4): not interchangeable
        **({"engine": "onnx"} if engine == "onnx" else {}),
    }


def identity_from_files(name: str = "default", max_seq_length: Optional[int] = None,
                        normalize: bool = True, pooling: str = "model", mcls_window: int = 256,
                        engine: str = "torch") -> Optional[dict]:
    """What Embedder(...).identity() gives, read from a local sentence-transformers folder without
    loading the model, or None where its files do not say (then load it). Why: a Ray driver plans
    `embed` by its identity, and loading MiniLM there only for that cost ~10 s of a short run,
    on top of the actors' own load. Embedder.identity() checks the two agree."""
    folder = Path(bundled.resolve_embedder(name))
    if not folder.is_dir():
        return None
    try:
        modules = json.loads((folder / "modules.json").read_text())
        length = max_seq_length or json.loads(
            (folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        dim = _output_dim(folder, modules)
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if dim is None or not isinstance(length, int):
        return None
    return make_identity(name, fingerprint_dir(folder), length, normalize, dim, pooling,
                         mcls_window, engine)


def _output_dim(folder: Path, modules: list[dict]) -> Optional[int]:
    """The vector size from the last module that sets it (as sentence-transformers finds it):
    a Dense layer's outputs, or Pooling's token size times its modes; None for anything else."""
    for module in reversed(modules):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Normalize":
            continue
        config = json.loads((folder / module["path"] / "config.json").read_text())
        if kind == "Dense":
            return int(config["out_features"])
        if kind == "Pooling":
            modes = sum(1 for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
            return int(config["word_embedding_dimension"]) * modes or None
        return None
    return None


def cache_key(identity: dict, ids: Sequence[str], texts: Sequence[str]) -> str:
    """Hash of the embedder identity and every (id, text) pair, streamed (no giant JSON blob)."""
    h = hashlib.sha256(repr(sorted(identity.items())).encode())
    for i, t in zip(ids, texts, strict=True):
        h.update(b"\x1e" + str(i).encode() + b"\x1f" + t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def encode_cached(embedder: Embedder, ids: Sequence[str], texts: Sequence[str], cache_dir: Path,
                  progress: bool = False) -> np.ndarray:
    """Vectors for texts, read from cache_dir/KEY.npy when this exact call was made before."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cache_key(embedder.identity(), ids, texts)}.npy"
    if path.exists():
        vecs = np.load(path)
        if vecs.shape == (len(texts), embedder.dim):
            return vecs
    vecs = embedder.encode(texts, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, vecs)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return vecs
