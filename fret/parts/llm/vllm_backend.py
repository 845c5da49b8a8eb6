"""The `vllm` backend: in-process vLLM for GPU batch work.

`generate` sends the whole batch to `LLM.generate` with one `SamplingParams` per request. A
prompt that leaves fewer than `max_tokens` of `max_length` is cut in the middle (its start, with
the instruction and BOS, and its end, with the answer cue, are kept; a warning counts them); a
request that cannot fit at all comes back with finish_reason "prompt_too_long", and the rest of
the batch is answered (vLLM itself would fail the whole batch with a ValueError).

`loglik` sends token ids tokens(prompt) + tokens(continuation) with `prompt_logprobs=0` (the
logprob of each actual prompt token) and sums the continuation's positions. vLLM does not read
its prefix cache for a request that asks for prompt logprobs (`SamplingParams` sets
`skip_reading_prefix_cache` then: the engine would leave the logprobs of cached positions
unfilled), so every loglik job prefills its whole prompt; prefix caching serves `generate`.

Token ids follow vLLM's own rules: a plain prompt starts with the special tokens the model's
tokenizer puts before text (BOS for Llama or Gemma, none for Qwen or SmolLM2), a chat prompt is
taken as its template renders it, a continuation gets none.

GGUF: vLLM reads a GGUF's weights (in its own tree up to 0.23, through the `vllm-gguf-plugin`
package from 0.24); its tokenizer (and, with the plugin, its config) come from a Hugging Face
folder, as 0.24 on can read no tokenizer from a GGUF (and no release from a folder holding only
the file); fret exports that folder from the GGUF with transformers, once per file.
vllm is imported only when the backend is built.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from .base import LLM, Generation, GenerateRequest, LLMError, LLMSettings, Loglik, LoglikRequest
from .hf import common_prefix_len, resolve_source, truncate_prompt

log = logging.getLogger(__name__)
PROMPT_TOO_LONG = "prompt_too_long"  # finish_reason of a generate request that cannot fit


def sampling_kwargs(r: GenerateRequest) -> dict:
    """SamplingParams keyword arguments of a request (json_schema is added by the caller, since
    the structured-output class moved between vLLM versions)."""
    return {"n": 1, "temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_tokens,
            "stop": list(r.stop) or None, "seed": r.seed}


def sum_prompt_logprobs(prompt_logprobs: Sequence[Any], token_ids: Sequence[int], start: int) -> float:
    """Sum of log P(token_ids[i] | token_ids[:i]) for i >= start, from vLLM's `prompt_logprobs`
    (position 0 is None; position i maps token id -> Logprob with `.logprob`).
    sum_prompt_logprobs([None, {7: Logprob(-1.0)}, {9: Logprob(-2.0)}], [5, 7, 9], 1) -> -3.0."""
    if start < 1:
        raise LLMError("the continuation starts at the first token, which has no logprob: "
                       "give loglik a non-empty prompt")
    if len(prompt_logprobs) != len(token_ids):
        raise LLMError(f"vLLM returned {len(prompt_logprobs)} prompt logprobs for {len(token_ids)} tokens")
    total = 0.0
    for i in range(start, len(token_ids)):
        entry = prompt_logprobs[i]
        if entry is None or token_ids[i] not in entry:
            raise LLMError(f"vLLM returned no logprob for prompt token {i} (id {token_ids[i]})")
        total += float(entry[token_ids[i]].logprob)
    return total


def structured_kwargs(schema: str | None = None, *, regex: str | None = None,
                      grammar: str | None = None) -> dict:
    """The SamplingParams argument asking for JSON that follows `schema`, or text matching `regex`
    or an EBNF `grammar` (the first one given), in either vLLM API."""
    import json
    spec = ({"json": json.loads(schema)} if schema is not None else
            {"regex": regex} if regex is not None else {"grammar": grammar})
    try:
        from vllm.sampling_params import StructuredOutputsParams
        return {"structured_outputs": StructuredOutputsParams(**spec)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams
        return {"guided_decoding": GuidedDecodingParams(**spec)}


# ---- token ids, as vLLM itself would make them -------------------------------------------

def special_prefix(tok) -> list[int]:
    """The special tokens the tokenizer puts before any text (`add_special_tokens=True`), never
    those after it: Llama or Gemma -> [bos id]; Qwen, SmolLM2, GPT-2 -> []; BERT -> [CLS id]."""
    plain = tok.encode("a", add_special_tokens=False)
    full = tok.encode("a", add_special_tokens=True)
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i]
    return []


def start_token(tok) -> int:
    """What an empty prompt is conditioned on: BOS, or EOS for a model without one (a BOS id of 0
    is a BOS)."""
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def encode_prompt(tok, text: str, prefix: list[int]) -> list[int]:
    """A plain prompt's ids: `prefix` (see special_prefix), then the text's own ids; a text that
    already starts with the prefix (a rendered "<s>...") does not get it twice."""
    ids = tok.encode(text, add_special_tokens=False)
    return ids if ids[:len(prefix)] == prefix else prefix + ids


def cut_middle(ids: list[int], budget: int) -> list[int]:
    """Keep the first and last tokens of an over-long prompt, `budget` in all (the start one longer).
    cut_middle([1, 2, 3, 4, 5, 6, 7], 4) -> [1, 2, 6, 7]; cut_middle([1, 2, 3, 4, 5], 3) -> [1, 2, 5]."""
    if len(ids) <= budget:
        return ids
    head = (budget + 1) // 2
    return ids[:head] + ids[len(ids) - (budget - head):]


# ---- the engine's arguments ---------------------------------------------------------------

def gguf_support() -> str | None:
    """How the installed vLLM reads GGUF weights: 'in-tree', 'plugin' or None."""
    import importlib.metadata
    import importlib.util
    try:
        if importlib.util.find_spec("vllm.model_executor.layers.quantization.gguf") is not None:
            return "in-tree"
    except ImportError:
        pass
    plugins = importlib.metadata.entry_points(group="vllm.general_plugins")
    return "plugin" if any(ep.name == "gguf" for ep in plugins) else None


def local_gguf(source: str, gguf_file: str) -> Path:
    """The GGUF file on disk: in a local folder, or downloaded from the hub repo `source`."""
    path = Path(source) / gguf_file
    if path.is_file():
        return path
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(source, gguf_file))
    except (OSError, ValueError) as e:  # offline, unknown repo or file (hub errors are OSErrors)
        raise LLMError(f"cannot find GGUF file {gguf_file!r} in {source!r}: {e}") from e


def gguf_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "fret" / "gguf-hf"


def export_gguf_tokenizer(gguf: Path, root: Path | None = None) -> Path:
    """A Hugging Face folder (tokenizer files and config.json) made from a GGUF file's metadata,
    which is what vLLM loads a GGUF's tokenizer (and, with the plugin, its config) from. Made
    once per file (keyed by path, size and modification time); the folder is renamed into place
    when complete, so an interrupted export is redone."""
    gguf = Path(gguf).resolve()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = (root or gguf_cache_root()) / f"{gguf.stem}-{key}"
    if out.is_dir():
        return out
    from transformers import AutoConfig, AutoTokenizer
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    except (OSError, ValueError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LLMError(f"cannot read the tokenizer of {gguf} with transformers: {e}") from e
    (tmp / "fret_source.json").write_text(json.dumps({"gguf": str(gguf), "size": st.st_size}))
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def engine_kwargs(settings: LLMSettings, export_root: Path | None = None) -> dict:
    """Keyword arguments of `vllm.LLM` for these settings; `llm.extra.engine_args` wins.
    A GGUF model is given as its file, with the exported folder as tokenizer (see above)."""
    source, gguf = resolve_source(settings)
    kwargs: dict[str, Any] = {
        "model": source, "dtype": settings.dtype, "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "max_model_len": settings.max_length, "enable_prefix_caching": True, "seed": 0}
    user = dict(settings.extra.get("engine_args", {}))
    if gguf:
        path = local_gguf(source, gguf)
        kwargs["model"] = str(path)
        if "tokenizer" not in user:
            kwargs["tokenizer"] = str(export_gguf_tokenizer(path, export_root))
    return {**kwargs, **user}


class VLLMLLM(LLM):
    name = "vllm"

    def __init__(self, settings: LLMSettings):
        super().__init__(settings)
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise LLMError("the vllm backend needs vLLM (and a GPU): pip install vllm") from e
        self._engine = None

    def identity(self) -> dict:
        # special_tokens: prompts start with the model's own BOS (earlier versions sent none)
        return {**super().identity(), "dtype": self.settings.dtype, "max_length": self.settings.max_length,
                "special_tokens": "model"}

    @property
    def engine(self):
        if self._engine is None:
            from vllm import LLM as Engine
            kwargs = engine_kwargs(self.settings)
            if str(kwargs["model"]).endswith(".gguf") and gguf_support() is None:
                import vllm
                raise LLMError(
                    f"vLLM {getattr(vllm, '__version__', '?')} has no GGUF support (it left vLLM's "
                    "own tree, vllm-project/vllm#39583): pip install vllm-gguf-plugin, or set "
                    "llm.model to a safetensors model, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
            self._engine = Engine(**kwargs)
        return self._engine

    def _prompt_ids(self, tok, prefix: list[int], r: GenerateRequest) -> list[int]:
        if r.messages is not None:  # as vLLM's chat: the template writes any BOS itself
            messages = [{"role": role, "content": content} for role, content in r.messages]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return tok.encode(text, add_special_tokens=False)
        if r.prompt is None:
            raise LLMError("a generate request needs a prompt or messages")
        return encode_prompt(tok, r.prompt, prefix) or [start_token(tok)]

    def _generate(self, batch: list[GenerateRequest]) -> list[Generation]:
        from vllm import SamplingParams
        tok = self.engine.get_tokenizer()
        prefix = special_prefix(tok)
        out: list[Generation | None] = [None] * len(batch)
        prompts, params, sent, cut = [], [], [], 0
        for i, r in enumerate(batch):
            ids = self._prompt_ids(tok, prefix, r)
            budget = self.settings.max_length - r.max_tokens  # vLLM: prompt + answer <= max_model_len
            if budget < 1:
                out[i] = Generation(text="", prompt_tokens=len(ids), finish_reason=PROMPT_TOO_LONG)
                continue
            if len(ids) > budget:
                ids, cut = cut_middle(ids, budget), cut + 1
            prompts.append({"prompt_token_ids": ids})
            extra = (structured_kwargs(r.json_schema, regex=r.regex, grammar=r.grammar)
                     if r.json_schema or r.regex or r.grammar else {})
            params.append(SamplingParams(**sampling_kwargs(r), **extra))
            sent.append(i)
        if cut or len(sent) < len(batch):
            log.warning("vllm: %d prompt(s) cut in the middle to fit max_length %d with their max_tokens; "
                        "%d request(s) answered %r (max_tokens >= max_length)", cut, self.settings.max_length,
                        len(batch) - len(sent), PROMPT_TOO_LONG)
        outs = self.engine.generate(prompts, params, use_tqdm=False) if prompts else []
        for i, o in zip(sent, outs):
            out[i] = Generation(text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids),
                                completion_tokens=len(o.outputs[0].token_ids),
                                finish_reason=o.outputs[0].finish_reason or "")
        return out  # type: ignore[return-value]

    def _loglik(self, batch: list[LoglikRequest]) -> list[Loglik]:
        from vllm import SamplingParams
        tok = self.engine.get_tokenizer()
        prefix = special_prefix(tok)
        prompts = [encode_prompt(tok, r.prompt, prefix) or [start_token(tok)] for r in batch]
        conts = [[tok.encode(c, add_special_tokens=False) for c in r.continuations] for r in batch]
        shared = common_prefix_len(prompts) if len(prompts) > 1 else 0  # the same cut rule as hf
        shared = max(min(shared, min(len(p) for p in prompts) - 1), len(prefix))  # BOS stays
        jobs, starts = [], []
        for i, p in enumerate(prompts):
            # one position is left for the token vLLM generates (prompt == max_model_len is refused)
            budget = self.settings.max_length - 1 - max((len(c) for c in conts[i]), default=0)
            prompts[i] = truncate_prompt(p, shared, budget)
            for c in conts[i]:
                jobs.append(prompts[i] + c)
                starts.append(len(prompts[i]))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.engine.generate([{"prompt_token_ids": ids} for ids in jobs], params, use_tqdm=False)
        scores = iter(sum_prompt_logprobs(o.prompt_logprobs, ids, s) if len(ids) > s else 0.0
                      for o, ids, s in zip(outs, jobs, starts))
        return [Loglik(logprobs=[next(scores) for _ in cs], n_tokens=[len(c) for c in cs],
                       prompt_tokens=len(p)) for p, cs in zip(prompts, conts)]

    def close(self) -> None:
        self._engine = None
