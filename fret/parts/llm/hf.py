"""The `transformers` backend: a local Hugging Face causal LM (the embedded default: SmolLM2 GGUF).

`loglik` is exact and cheap: per batch, the token prefix shared by all prompts (the few-shot
part) is run once and its key/values kept across batches; then ONE forward pass per batch runs
each request's own prompt tokens followed by all its continuations side by side, a 4D attention
mask keeping the continuations apart (each sees the prompt and itself only, positions restarting
after the prompt); the LM head is applied only to the hidden states that predict a continuation
token. `generate` is batched with left padding; a request's `json_schema`, `regex` or EBNF
`grammar` is enforced while decoding (xgrammar, fret.parts.llm.grammar). Key/values go through the
`Cache` API (`DynamicCache`, passed as `cache=`; `past_key_values=` on older transformers).
Prompts get the special tokens the model's tokenizer puts in front of a text (Llama's and
Gemma's BOS; none for SmolLM2 or Qwen) unless the text already starts with them.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

from .base import LLM, Generation, GenerateRequest, LLMError, LLMSettings, Loglik, LoglikRequest

MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate pass
PREFIX_CACHE_SIZE = 4  # prefixes (key/values) kept across batches, least recently used dropped
_LOADED: dict[tuple, tuple] = {}  # (source, gguf, dtype, device) -> (model, tokenizer)
_GRAMMARS: dict[tuple, object] = {}  # the same key -> fret.parts.llm.grammar.Grammars


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix. [[1, 2, 3], [1, 2, 4]] -> 2."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def truncate_prompt(ids: list[int], shared: int, budget: int) -> list[int]:
    """Cut an over-long prompt to `budget` tokens: tokens are removed from the start of its own
    part (right after the `shared` prefix), so the instruction and the prompt's end survive.
    truncate_prompt([1, 2, 3, 4, 5], shared=1, budget=3) -> [1, 4, 5]."""
    excess = len(ids) - budget
    if excess <= 0:
        return ids
    if len(ids) - shared - excess < 1:
        raise LLMError(f"prompt of {len(ids)} tokens cannot fit max_length: its shared prefix alone "
                       f"has {shared} tokens and {budget} are allowed; raise llm.max_length")
    return ids[:shared] + ids[shared + excess:]


def resolve_source(settings: LLMSettings) -> tuple[str, str | None]:
    """(folder or hub name, gguf file name or None). 'default' -> the bundled SmolLM2 GGUF."""
    if settings.model in ("default", "", None):
        from fret.parts.bundled import smollm2_gguf
        path = smollm2_gguf()
        return str(path.parent), path.name
    from fret.parts.bundled import check_model_path
    check_model_path(settings.model, "llm.model", needs=(settings.gguf_file or "config.json",))
    if settings.model.endswith(".gguf"):
        path = Path(settings.model)
        return str(path.parent), path.name
    return settings.model, settings.gguf_file


def resolve_device(settings: LLMSettings) -> str:
    import torch
    if settings.device != "auto":
        return settings.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(settings: LLMSettings, device: str) -> str:
    """'auto' -> bfloat16 where the hardware runs it natively (CUDA, or a CPU with AVX512-BF16 /
    AMX, about 3x faster than float32 here), float32 otherwise."""
    import torch
    if settings.dtype != "auto":
        return settings.dtype
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def load_model(source: str, gguf_file: str | None, dtype: str, device: str):
    """Load once per process: stages in one run share the weights."""
    key = (source, gguf_file, dtype, device)
    if key not in _LOADED:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        model_kwargs = dict(kwargs)
        if gguf_file:
            # Dense weights in the asked dtype: bf16 matmuls (AMX) beat packed-GGUF kernels, which
            # compute in float32; newer transformers would keep them packed when `kernels` is there.
            from transformers import GgufConfig
            model_kwargs["quantization_config"] = GgufConfig(dequantize=True)
        try:
            tok = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dtype), attn_implementation="sdpa", **model_kwargs)
        except OSError as e:
            raise LLMError(f"cannot load model {source!r} (gguf_file={gguf_file!r}): {e}") from e
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        _LOADED[key] = (model.to(device).eval(), tok)
    return _LOADED[key]


def leading_special_tokens(tok) -> list[int]:
    """The ids the tokenizer puts before any text by itself: [bos] for Llama or Gemma, [] for
    SmolLM2, Qwen or GPT-2 (whose tokenizers add nothing)."""
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for at in range(len(full) - len(plain) + 1):
        if full[at:at + len(plain)] == plain:
            return list(full[:at])
    return []


def kv_cache(layers: list, batch: int = 1):
    """A DynamicCache holding per-layer (keys, values) of batch 1, expanded to `batch` rows
    (full-attention layers, as the 4D masks here expect)."""
    from transformers import DynamicCache
    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
    return cache


def cache_kwarg(model) -> str:
    """How the model's forward takes a cache: `cache` (transformers >= 5.2x) or `past_key_values`."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def attention_mask_4d(segments, positions, prefix_len: int):
    """Who may attend to whom among the new tokens, after a fully visible prefix.

    segments: (B, T) 0 = the request's own prompt tokens, j >= 1 = continuation j, -1 = padding.
    A token sees prompt tokens and tokens of its own segment at earlier or equal positions;
    padding sees only itself (an all-masked row would give NaN). Returns bool (B, 1, T, P + T).
    """
    import torch
    sq, sk = segments[:, :, None], segments[:, None, :]  # (B, T, 1), (B, 1, T)
    pq, pk = positions[:, :, None], positions[:, None, :]
    same = (sk == 0) | (sk == sq)
    allowed = same & (pk <= pq) & (sk >= 0) & (sq >= 0)  # (B, T, T)
    allowed |= torch.eye(segments.shape[1], dtype=torch.bool, device=segments.device)
    prefix = torch.ones(*allowed.shape[:2], prefix_len, dtype=torch.bool, device=segments.device)
    return torch.cat([prefix, allowed], dim=2)[:, None]  # (B, 1, T, P + T)


class TransformersLLM(LLM):
    name = "transformers"

    def __init__(self, settings: LLMSettings):
        super().__init__(settings)
        self.source, self.gguf_file = resolve_source(settings)
        self.device = resolve_device(settings)
        self.dtype = resolve_dtype(settings, self.device)
        # extra.prefix_sharing = False turns off the shared-prefix pass (for tests and benchmarks)
        self.prefix_sharing = bool(settings.extra.get("prefix_sharing", True))
        self._prefixes: OrderedDict[tuple[int, ...], list] = OrderedDict()
        self._model = self._tok = None
        self._lead: list[int] | None = None
        self._cache_arg: str | None = None

    def identity(self) -> dict:
        # dtype and max_length change the scores (truncation), so they belong in the cache key
        return {**super().identity(), "dtype": self.dtype, "max_length": self.settings.max_length}

    @property
    def model(self):
        if self._model is None:
            self._model, self._tok = load_model(self.source, self.gguf_file, self.dtype, self.device)
        return self._model

    @property
    def tokenizer(self):
        self.model  # noqa: B018 (loads both)
        return self._tok

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def lead(self) -> list[int]:
        if self._lead is None:
            self._lead = leading_special_tokens(self.tokenizer)
        return self._lead

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids under the model's own convention: its tokenizer's leading special tokens
        (BOS) first, unless the text already starts with BOS (a chat template that writes it)."""
        bos = self.tokenizer.bos_token
        if not self.lead or (bos and text.startswith(bos)):
            return self.encode(text)
        return self.lead + self.encode(text)

    def _forward(self, **kwargs):
        """The base model's forward, the cache passed as its transformers version wants it."""
        if self._cache_arg is None:
            self._cache_arg = cache_kwarg(self.model.model)
        kwargs[self._cache_arg] = kwargs.pop("cache")
        return self.model.model(**kwargs)

    def grammars(self):
        """Compiled grammars for this model's tokenizer (built once per process and model)."""
        key = (self.source, self.gguf_file, self.dtype, self.device)
        if key not in _GRAMMARS:
            from .grammar import Grammars
            _GRAMMARS[key] = Grammars(self.tokenizer, self.model.get_output_embeddings().weight.shape[0])
        return _GRAMMARS[key]

    # ---- loglik -------------------------------------------------------------------------
    def _loglik(self, batch: list[LoglikRequest]) -> list[Loglik]:
        import torch
        prompts = [self.encode_prompt(r.prompt) for r in batch]
        conts = [[self.encode(c) for c in r.continuations] for r in batch]
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        prompts = [p or [start] for p in prompts]  # an empty prompt is conditioned on BOS (or EOS)
        shared, past = self._shared_prefix(prompts)
        for i, p in enumerate(prompts):
            budget = self.settings.max_length - max((len(c) for c in conts[i]), default=0)
            prompts[i] = truncate_prompt(p, max(shared, len(self.lead)), budget)  # BOS stays
        with torch.inference_mode():
            scores = self._score_rows([p[shared:] for p in prompts], conts, shared, past)
        return [Loglik(logprobs=s, n_tokens=[len(c) for c in cs], prompt_tokens=len(p))
                for s, cs, p in zip(scores, conts, prompts)]

    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[int, list | None]:
        """(length, per-layer key/values of batch 1) of the prefix every prompt starts with.

        Each prompt keeps at least its last token for the row pass (it predicts the first
        continuation token). Any leading part of a cached prefix is reusable (causal attention:
        the key/values of the first n tokens do not depend on what follows), so a cached
        few-shot prefix serves later batches even when it was stored with some passage text.
        """
        if not self.prefix_sharing:
            return 0, None
        limit = min(len(p) for p in prompts) - 1
        common = min(common_prefix_len(prompts), limit) if len(prompts) > 1 else 0
        target = prompts[0][:max(common, limit if len(prompts) == 1 else 0)]
        best, best_n = None, 0
        for ids in self._prefixes:
            n = common_prefix_len([list(ids), target])
            if n > best_n:
                best, best_n = ids, n
        if best is not None:
            self._prefixes.move_to_end(best)
        past = None if best is None else [(k[:, :, :best_n], v[:, :, :best_n]) for k, v in self._prefixes[best]]
        if common >= MIN_SHARED_PREFIX and common > best_n:
            key = tuple(target[:common])
            past = self._run_prefix(key, best_n, past if best_n else None)
            self._prefixes[key] = past
            while len(self._prefixes) > PREFIX_CACHE_SIZE:
                self._prefixes.popitem(last=False)
            return common, past
        if best_n >= MIN_SHARED_PREFIX:
            return best_n, past
        return 0, None

    def _run_prefix(self, ids: tuple[int, ...], start: int, past: list | None) -> list:
        """Key/values of `ids`, computing only ids[start:] when `past` holds ids[:start]."""
        import torch
        cache = kv_cache(past or [])
        x = torch.tensor([ids[start:]], device=self.device)  # (1, n)
        pos = torch.arange(start, len(ids), device=self.device)[None]  # (1, n)
        with torch.inference_mode():
            self._forward(input_ids=x, position_ids=pos, cache=cache, use_cache=True)
        return [(layer.keys, layer.values) for layer in cache.layers]  # filled in place

    def _score_rows(self, owns, conts, shared: int, past) -> list[list[float]]:
        """One pass over rows [own prompt tokens | cont 1 | cont 2 | ...]; returns summed logprobs."""
        import torch
        rows, segs, poss, where, targets, owner = [], [], [], [], [], []
        for i, (own, cs) in enumerate(zip(owns, conts)):
            row, seg = list(own), [0] * len(own)
            pos = list(range(shared, shared + len(own)))
            for j, c in enumerate(cs):
                start = len(row)
                row += c
                seg += [j + 1] * len(c)
                pos += range(shared + len(own), shared + len(own) + len(c))
                # token m of c is predicted by the hidden state before it
                where += [(i, len(own) - 1 if m == 0 else start + m - 1) for m in range(len(c))]
                targets += c
                owner += [(i, j)] * len(c)
            rows.append(row), segs.append(seg), poss.append(pos)
        width = max(len(r) for r in rows)
        pad = lambda xs, v: [x + [v] * (width - len(x)) for x in xs]  # noqa: E731
        dev = self.device
        ids = torch.tensor(pad(rows, self.tokenizer.pad_token_id), device=dev)  # (B, T)
        seg_t = torch.tensor(pad(segs, -1), device=dev)  # (B, T)
        pos_t = torch.tensor(pad(poss, 0), device=dev)  # (B, T)
        mask = attention_mask_4d(seg_t, pos_t, shared)  # (B, 1, T, shared + T)
        cache = kv_cache(past, len(rows)) if past else None
        hidden = self._forward(input_ids=ids, position_ids=pos_t, attention_mask=mask,
                               cache=cache, use_cache=False).last_hidden_state  # (B, T, H)
        out = [[0.0] * len(cs) for cs in conts]
        if not where:
            return out
        rix = torch.tensor([w[0] for w in where], device=dev)
        cix = torch.tensor([w[1] for w in where], device=dev)
        logits = self.model.lm_head(hidden[rix, cix]).float()  # (n_scored, vocab)
        tgt = torch.tensor(targets, device=dev)
        lp = torch.log_softmax(logits, dim=-1).gather(1, tgt[:, None])[:, 0]  # (n_scored,)
        for (i, j), v in zip(owner, lp.tolist()):
            out[i][j] += v
        return out

    # ---- generate -----------------------------------------------------------------------
    def _generate(self, batch: list[GenerateRequest]) -> list[Generation]:
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault((r.temperature, r.top_p, r.max_tokens, r.stop), []).append(i)
        out: list[Generation | None] = [None] * len(batch)
        for (temperature, top_p, max_tokens, stop), idx in groups.items():
            seed = int(hashlib.sha256(repr([batch[i].seed for i in idx]).encode()).hexdigest()[:8], 16)
            texts = [self._render(batch[i]) for i in idx]
            grammar = self._grammar_mask([batch[i] for i in idx])
            for i, g in zip(idx, self._generate_group(texts, temperature, top_p, max_tokens, stop, seed,
                                                      grammar)):
                out[i] = g
        return out  # type: ignore[return-value]

    def _grammar_mask(self, requests: list[GenerateRequest]):
        """One logits processor masking every constrained row of a group (None: none is)."""
        from .grammar import constraint_of
        constraints = [constraint_of(r) for r in requests]
        if not any(constraints):
            return None
        return self.grammars().mask(constraints)

    def _render(self, r: GenerateRequest) -> str:
        if r.messages is None:
            if r.prompt is None:
                raise LLMError("a generate request needs a prompt or messages")
            return r.prompt
        messages = [{"role": role, "content": content} for role, content in r.messages]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _stop_criteria(self, stop: tuple[str, ...]):
        """Built once per stop tuple: building one scans the whole vocabulary (about 1 s here)."""
        if not stop:
            return None
        cache = self.__dict__.setdefault("_stops", {})
        if stop not in cache:
            from transformers import StoppingCriteriaList, StopStringCriteria
            cache[stop] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))])
        return cache[stop]

    def _generate_group(self, texts, temperature, top_p, max_tokens, stop, seed,
                        grammar=None) -> list[Generation]:
        import torch
        tok = self.tokenizer
        enc = [self.encode_prompt(t) for t in texts]
        width = max(len(e) for e in enc)
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=self.device)  # (B, T)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=self.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 \
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None), torch.inference_mode():
            torch.manual_seed(seed)
            gen = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, pad_token_id=pad,
                stopping_criteria=self._stop_criteria(stop),
                logits_processor=[grammar] if grammar is not None else None, **sampling)
        eos = {tok.eos_token_id, *([self.model.generation_config.eos_token_id]
                                   if isinstance(self.model.generation_config.eos_token_id, int)
                                   else self.model.generation_config.eos_token_id or [])}
        results = []
        for e, row in zip(enc, gen[:, width:].tolist()):
            n = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
            text = tok.decode([t for t in row[:n] if t not in eos], skip_special_tokens=True)
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            finish = "stop" if n < len(row) or (row and row[-1] in eos) or cut >= 0 else "length"
            results.append(Generation(text=text[:cut] if cut >= 0 else text, prompt_tokens=len(e),
                                      completion_tokens=n, finish_reason=finish))
        return results
