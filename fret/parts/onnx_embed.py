"""The seed embedder on ONNX Runtime: the same sentence-transformers model, exported once, run
without torch in the process (`embed.engine: onnx`).

Why: a process that imports torch, transformers and sentence-transformers holds about 0.6 GiB
before it encodes anything, and torch's activations of a batch come on top; ONNX Runtime with the
`tokenizers` library holds about 0.2 GiB and gives the same fp32 vectors (benchmarks/bench_mine.py
measures both). Exporting needs torch and `onnx`, so it runs once per (model, max_seq_length) in a
child process, whose memory goes back when it exits, and the files are cached. An export is used
only after it proved faithful on probe texts: the runtime tokenizer gives sentence-transformers'
token ids, and the vectors match the torch model's, else the export fails naming the model.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

FORMAT = 2  # of the exported folder; a change re-exports (2: weights apart, eager attention)
TOKENIZE_CHUNK = 1024  # texts per tokenizer call: lanes share the work, ids stay compact
TOLERANCE = 1e-4  # largest |onnx - torch| over the probes' vector components
PROBES = [  # what tends to break a tokenizer or a traced graph: spaces, case, scripts, length, empty
    "title: Paris | text: Paris is the capital and largest city of France.",
    "  leading and trailing spaces  ", "UPPER Case and MiXeD", "naïve café, Ünïcode: 東京 and Москва",
    "", "word " * 600, "task: find the passage | query: what is a 20th-century fugue?",
]


def export_dir(cache_root: Path, fingerprint: str, max_seq_length: Optional[int]) -> Path:
    return Path(cache_root) / f"{fingerprint}-{max_seq_length or 'model'}-v{FORMAT}"


def ensure_exported(model_path: str, fingerprint: str, max_seq_length: Optional[int],
                    cache_root: Path) -> Path:
    """The exported folder of this model, exporting it first (in a child process) if needed."""
    import importlib.util

    from ..core.errors import FretError
    if importlib.util.find_spec("onnxruntime") is None:
        raise FretError("embed.engine onnx needs ONNX Runtime: pip install 'fret[onnx]'")
    out = export_dir(cache_root, fingerprint, max_seq_length)
    if (out / "export.json").exists():
        return out
    argv = [sys.executable, "-m", "fret.parts.onnx_embed", model_path, str(max_seq_length or 0), str(out)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:]) or f"exit code {done.returncode}"
        raise RuntimeError(f"embedder {model_path!r}: ONNX export failed ({tail[:400]}); "
                           f"set embed.engine: torch to encode with torch instead")
    return out


class OnnxEncoder:
    """An exported model: token lengths and (batch, dim) vectors, no torch in the process."""

    def __init__(self, folder: Path, threads: Optional[int] = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        meta = json.loads((folder / "export.json").read_text())
        self.dim, self.max_seq_length = int(meta["dim"]), int(meta["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # One thread per batch and `lanes` batches at once: on a small model, batches side by
        # side keep the cores busier than one batch split across them (benchmarks/bench_mine.py),
        # and each batch's vector is the same whatever the number of lanes.
        self.lanes = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        # Memory patterns plan one block per input shape and keep it; every batch here has its
        # own shape, so they only add to the peak (measured: no speed lost without them).
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        # The arena would keep the largest batch's activations for the life of the process (into
        # `mine`, which builds its index after `embed` in the same process): give them back after
        # every batch. Measured: a lower peak, the same speed.
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's token ids (int64), `lanes` chunks at once (the Rust tokenizer frees the
        GIL). The encoder runs on these, so a text is tokenized once for both its length and its
        batch; only the ids are kept, not the tokenizer's Encoding objects (~10x their size)."""
        texts = list(texts)
        chunks = [texts[i:i + TOKENIZE_CHUNK] for i in range(0, len(texts), TOKENIZE_CHUNK)]
        return [ids for part in self._lanes(self._tokenize_chunk, chunks) for ids in part]

    def _tokenize_chunk(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts)]

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([len(ids) for ids in self.tokenize(texts)], dtype=np.int64)

    def map(self, batches: Iterable[list[np.ndarray]]) -> Iterator[np.ndarray]:
        """run() of each batch of token ids, in order, `lanes` at a time."""
        return self._lanes(self.run, batches)

    def _lanes(self, work, items: Iterable) -> Iterator:
        """work(item) for each item, in order, `lanes` at a time (ONNX Runtime and the Rust
        tokenizer free the GIL)."""
        if self.lanes == 1:
            yield from map(work, items)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.lanes, thread_name_prefix="onnx") as pool:
            yield from pool.map(work, items)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, as the model's sentence-transformers modules compute it."""
        return self.run(self.tokenize(texts))

    def run(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """The vectors of one batch of token ids (from tokenize), padded to its longest."""
        width = max((len(ids) for ids in batch), default=0)
        feeds = {name: np.zeros((len(batch), width), dtype=np.int64) for name in
                 ("input_ids", "attention_mask", "token_type_ids")}  # type ids: 0, one segment
        for row, ids in enumerate(batch):  # right padding with id 0, as the HF tokenizers pad
            feeds["input_ids"][row, :len(ids)] = ids
            feeds["attention_mask"][row, :len(ids)] = 1
        feeds = {k: feeds[k] for k in self.inputs}
        return self.session.run(None, feeds, self.run_options)[0].astype(np.float32)


def default_threads() -> int:
    """OMP_NUM_THREADS where set (the Ray worker sets it to its CPUs), else the usable cores."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- the export (a child process)


def export(model_path: str, max_seq_length: Optional[int], out: Path) -> None:
    """Trace the whole sentence-transformers module stack (transformer, pooling, dense,
    normalize) into model.onnx, save its tokenizer as tokenizer.json, check both, then publish
    the folder with one rename (two processes exporting at once leave one complete folder)."""
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention traces to the plain MatMul/Softmax graph that ONNX Runtime's optimizer
    # fuses; the default (SDPA) traces to one it runs a few percent slower (measured on MiniLM).
    model = SentenceTransformer(model_path, device="cpu",
                                model_kwargs={"attn_implementation": "eager"})
    if max_seq_length:
        model.max_seq_length = max_seq_length
    model.eval()
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = model.tokenizer.backend_tokenizer  # the Rust tokenizer behind the HF one
    tokenizer.no_padding()  # the encoder pads each batch to its own longest text
    tokenizer.enable_truncation(int(model.max_seq_length))
    tokenizer.save(str(tmp / "tokenizer.json"))
    sample = model.tokenize(PROBES[:2])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(dict(zip(names, tensors)))["sentence_embedding"]

    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    with torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter: the dynamo one needs onnxscript and re-traces per shape.
        torch.onnx.export(Stack(), tuple(sample[n] for n in names), str(tmp / "model.onnx"),
                          input_names=names, output_names=["embedding"],
                          dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
              else model.get_sentence_embedding_dimension())
    (tmp / "export.json").write_text(json.dumps({
        "model": model_path, "max_seq_length": int(model.max_seq_length), "dim": dim,
        "inputs": names, "format": FORMAT}, indent=1))
    _weights_apart(tmp / "model.onnx")
    check(model, OnnxEncoder(tmp, threads=1))
    try:
        tmp.rename(out)
    except OSError:  # another process published it first: theirs is the same export
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "export.json").exists():
            raise


def _weights_apart(path: Path) -> None:
    """Move the weights out of the graph file into model.onnx.data, which ONNX Runtime maps into
    memory instead of copying out of a parsed graph: the session's load peak falls from about
    twice the weights to about once (measured on MiniLM: 192 -> 104 MiB)."""
    import onnx

    graph = onnx.load(str(path))
    onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    shutil.copymode(path, path.with_name(path.name + ".data"))  # onnx writes it owner-only


def check(model, encoder: OnnxEncoder) -> None:
    """Refuse an export that would not give the torch model's token ids and vectors."""
    features = model.tokenize(PROBES)
    if "token_type_ids" in features and bool(features["token_type_ids"].any()):
        raise RuntimeError("the tokenizer gives one text several segments (token type ids); "
                           "the exported encoder feeds one segment")
    for text, ours, ids, mask in zip(PROBES, encoder.tokenize(PROBES), features["input_ids"],
                                     features["attention_mask"]):
        if ours.tolist() != [int(t) for t, m in zip(ids, mask) if m]:
            raise RuntimeError(f"the exported tokenizer gives other token ids than "
                               f"sentence-transformers for {text[:40]!r}")
    want = model.encode(PROBES, convert_to_numpy=True, batch_size=len(PROBES))
    got = np.concatenate([encoder.encode([t]) for t in PROBES] + [encoder.encode(PROBES)])
    worst = float(np.abs(got - np.concatenate([want, want])).max())
    if worst > TOLERANCE:
        raise RuntimeError(f"the exported model's vectors differ from torch's by up to {worst:.2g}")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")  # the tracer's warnings are about shapes it keeps dynamic
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    export(sys.argv[1], int(sys.argv[2]) or None, Path(sys.argv[3]))
