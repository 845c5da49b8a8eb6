"""Stage `embed`: the seed embedder encodes every corpus passage (one output shard per corpus shard).

Encoding goes in length-sorted batches (fret.parts.embed) and is cached by content hash under
RUN/_cache/embed, so a rerun, or a restart with the same model, does not encode again.
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pyarrow as pa
from pydantic import Field

from ...core.config import Section
from ...core.stage import ShardOutput, Stage


class EmbedSettings(Section):
    model: str = "default"  # a sentence-transformers path or name; default: bundled MiniLM
    device: str = "auto"
    batch_size: int = 64
    max_seq_length: Optional[int] = 256
    pooling: Literal["model", "mcls"] = "model"  # mcls = BGE-M3 multi-CLS pooling for long texts
    mcls_window: int = 256
    passage_format: str = "title: {title} | text: {text}"
    query_format: str = "task: {task} | query: {query}"
    # onnx: the same model exported once to RUN/_cache/onnx and run on ONNX Runtime (CPU only):
    # about half the memory of torch, same vectors to 1e-4 (fret.parts.onnx_embed); needs
    # `pip install 'fret[onnx]'`
    engine: Literal["torch", "onnx"] = "torch"
    # at most this many padded tokens (texts x longest) per batch, on top of batch_size: bounds a
    # batch's activations; None: 512 on onnx (fret.parts.embed.ONNX_BATCH_TOKENS), none on torch;
    # mcls pooling batches its fixed-size windows by batch_size alone
    batch_tokens: Optional[int] = Field(None, ge=1)
    new_keys = {"engine": "torch", "batch_tokens": None}


EMBEDDING_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False),
                              pa.field("vector", pa.list_(pa.float32()), nullable=False)])


def format_passage(fmt: str, row: dict) -> str:
    """format_passage('title: {title} | text: {text}', {'title': None, 'text': 'x'}) -> 'title: none | text: x'"""
    return fmt.format(title=row.get("title") or "none", text=row["text"])


def make_embedder(ctx, settings: EmbedSettings):
    """The seed embedder of these settings, loaded once per run context (`embed` and `mine`)."""
    from ...parts.embed import Embedder
    return ctx.model("embedder:" + settings.model_dump_json(), lambda: Embedder(
        settings.model, device=settings.device, batch_size=settings.batch_size,
        max_seq_length=settings.max_seq_length, pooling=settings.pooling,
        mcls_window=settings.mcls_window, engine=settings.engine,
        export_cache=ctx.run_dir / "_cache" / "onnx", batch_tokens=settings.batch_tokens))


class EmbedStage(Stage):
    name = "embed"
    Settings = EmbedSettings
    schema = EMBEDDING_SCHEMA
    input = "corpus"
    uses_model = True

    def fingerprint(self) -> dict:
        from ...parts.embed import identity_from_files
        s = self.settings  # read from the model's files where they say it: see identity_from_files
        read = identity_from_files(s.model, s.max_seq_length, True, s.pooling, s.mcls_window,
                                   s.engine)
        return {"embedder": read or self._embedder().identity()}

    def _embedder(self):
        if getattr(self, "_model", None) is None:
            self._model = make_embedder(self.ctx, self.settings)
        return self._model

    def process(self, index: int) -> ShardOutput:
        from ...parts.embed import encode_cached
        rows = self.ctx.read_shard(self.input, index)
        texts = [format_passage(self.settings.passage_format, r) for r in rows]
        ids = [r["id"] for r in rows]
        vectors = encode_cached(self._embedder(), ids, texts, self.ctx.run_dir / "_cache" / "embed")
        out = [{"id": i, "vector": v} for i, v in zip(ids, np.asarray(vectors, dtype=np.float32))]
        return ShardOutput(rows=out, rows_in=len(rows))
