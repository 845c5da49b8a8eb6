"""Grammar-constrained decoding for the `transformers` backend, with xgrammar (vLLM's engine).

A request names at most one constraint: `json_schema`, `regex` or `grammar` (EBNF, GBNF-style
`root ::= ...`). `Grammars` compiles each distinct constraint once per tokenizer and keeps the
compiled grammar; `GrammarMask` is a `transformers` logits processor for one `generate` call:
one matcher per constrained row, one token bitmask for the whole batch, filled by xgrammar's
batch matcher and applied in place to the (batch, vocab) logits. Rows without a constraint and
rows whose matcher has finished are left alone. xgrammar is imported only when a request has a
constraint.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Optional

from .base import GenerateRequest, LLMError

GRAMMAR_CACHE_SIZE = 64  # compiled grammars kept per tokenizer, least recently used dropped


class GrammarError(LLMError):
    """A constraint that xgrammar cannot compile; says which kind and shows its text."""

    def __init__(self, kind: str, text: str, reason: str):
        shown = text if len(text) <= 300 else text[:300] + "..."
        super().__init__(f"cannot compile the {kind} constraint ({reason.strip().splitlines()[-1]}): {shown}")
        self.kind, self.text = kind, text


def constraint_of(r: GenerateRequest) -> Optional[tuple[str, str]]:
    """(kind, text) of a request's constraint, or None. A request names at most one."""
    named = [(k, v) for k, v in (("json_schema", r.json_schema), ("regex", r.regex),
                                 ("grammar", r.grammar)) if v is not None]
    if len(named) > 1:
        raise LLMError(f"a generate request names {' and '.join(k for k, _ in named)}; give at most one")
    return named[0] if named else None


def server_constraint(r: GenerateRequest, style: Optional[str]) -> dict:
    """Extra request-body fields asking an OpenAI-compatible server for `r`'s regex or grammar
    (its JSON schema goes as `response_format`). `style` is `llm.extra.structured_outputs`:
    "structured_outputs" (vLLM >= 0.12), "guided" (older vLLM: guided_regex, guided_grammar), or
    unset: not sent, since servers such as OpenAI's refuse fields they do not know.
    server_constraint(GenerateRequest(regex="a+"), "guided") -> {'guided_regex': 'a+'}"""
    kind, text = constraint_of(r) or ("json_schema", None)
    if kind == "json_schema" or style is None:
        return {}
    if style == "structured_outputs":
        return {"structured_outputs": {kind: text}}
    if style == "guided":
        return {f"guided_{kind}": text}
    raise LLMError(f"llm.extra.structured_outputs must be 'structured_outputs' or 'guided', not {style!r}")


class Grammars:
    """Compiled grammars for one tokenizer, compiled once per distinct constraint."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr
        self.vocab_size = vocab_size  # the model's logits width (may exceed len(tokenizer))
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        self._compiled: OrderedDict[tuple[str, str], object] = OrderedDict()

    def compile(self, kind: str, text: str):
        key = (kind, text)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        try:
            if kind == "json_schema":
                json.loads(text)
                # one-line JSON: free whitespace lets small models loop on newlines
                compiled = self.compiler.compile_json_schema(text, any_whitespace=False)
            elif kind == "regex":
                compiled = self.compiler.compile_regex(text)
            elif kind == "grammar":
                compiled = self.compiler.compile_grammar(text)
            else:
                raise LLMError(f"unknown constraint kind {kind!r}")
        except (RuntimeError, ValueError) as e:  # xgrammar raises RuntimeError; bad JSON ValueError
            raise GrammarError(kind, text, str(e)) from None
        self._compiled[key] = compiled
        while len(self._compiled) > GRAMMAR_CACHE_SIZE:
            self._compiled.popitem(last=False)
        return compiled

    def mask(self, constraints: list[Optional[tuple[str, str]]]) -> Optional["GrammarMask"]:
        """A logits processor for one batch (None when no row is constrained)."""
        compiled = [None if c is None else self.compile(*c) for c in constraints]
        return GrammarMask(compiled, self.vocab_size) if any(c is not None for c in compiled) else None


class GrammarMask:
    """Masks each constrained row's logits to the tokens its grammar allows next: a `transformers`
    logits processor by its call signature (so this module need not import transformers).

    Called by `generate` once per step with the ids so far and the (batch, vocab) scores. From
    the second call on, each live matcher first accepts the token its row just got. A row whose
    matcher refuses a token (its stop string ended it, so it gets padding) stops being masked.
    """

    def __init__(self, compiled: list, vocab_size: int):
        import xgrammar as xgr
        self.xgr = xgr
        self.matchers = {i: xgr.GrammarMatcher(c) for i, c in enumerate(compiled) if c is not None}
        self.bitmask = xgr.allocate_token_bitmask(len(compiled), vocab_size)  # (B, ceil(V / 32))
        self.batch = xgr.BatchGrammarMatcher(max_threads=1)
        self.vocab_size = vocab_size
        self.started = False

    def _live(self) -> list[int]:
        return [i for i, m in self.matchers.items() if not m.is_terminated()]

    def __call__(self, input_ids, scores):
        if self.started:
            live = self._live()
            last = input_ids[live, -1].tolist() if live else []
            ok = self.xgr.BatchGrammarMatcher.batch_accept_token([self.matchers[i] for i in live], last)
            for i, accepted in zip(live, ok):
                if not accepted:
                    del self.matchers[i]
        self.started = True
        live = self._live()
        if not live:
            return scores
        self.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in live], self.bitmask, live)
        bitmask = self.bitmask if scores.device.type == "cpu" else self.bitmask.to(scores.device)
        self.xgr.apply_token_bitmask_inplace(scores, bitmask, vocab_size=self.vocab_size, indices=live)
        return scores
