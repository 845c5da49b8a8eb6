"""Reading log-probabilities out of OpenAI-style responses.

`loglik` sums the echoed prompt tokens that carry the continuation: `echo_spans` finds each
token's characters (by `text_offset` where the tokens rebuild the prompt, else by walking them
through it, for a BOS string the server added or SentencePiece tokens whose decode drops the
leading space), and `echo_is_shifted` tells servers whose echoed logprobs are off by one token
(llama.cpp's). Relevance classification reads each label's first-token log-probability from one
answer's `top_logprobs` (`label_scores`), which needs labels that start with distinct words.
"""
from __future__ import annotations

import math
from typing import Any

from .base import LLMError

# A text whose next tokens a language model predicts well: the alignment probe reads it back.
PROBE_TEXT = ("Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. "
              "January, February, March, April, May, June, July, August, September, October. "
              "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20")
INSTEAD = "use vLLM's OpenAI server, the `vllm` backend or the `transformers` backend for loglik"
TOP_LOGPROBS = 20  # OpenAI's maximum for chat


def continuation_span(spans: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens (by their [start, end) in the text) that carry characters [start, end).

    A token straddling `start` belongs to the continuation (it carries its first characters);
    tokens that span nothing (a BOS string) never do.
    continuation_span([(0, 3), (3, 7), (7, 11)], 3, 11) -> [1, 2].
    """
    return [i for i, (a, b) in enumerate(spans) if a < end and b > start and b > a]


def token_spans(tokens: list[str], text: str) -> list[tuple[int, int]] | None:
    """[start, end) of each echoed token in `text`, found by walking the tokens through it, or
    None where they do not fit. A token the text lacks at the very start (a BOS string) spans
    nothing; whitespace a token's decode dropped (SentencePiece) belongs to that token; tokens
    after the text (the generated one) start at its end.
    token_spans(["<s>", "The", "cat"], "The cat") -> [(0, 0), (0, 3), (3, 7)]
    """
    spans, pos, started = [], 0, False
    for token in tokens:
        piece = token.replace("\u2581", " ")  # SentencePiece's word marker, where a server keeps it
        if pos >= len(text) or not piece:
            spans.append((min(pos, len(text)),) * 2)
            continue
        if pos == 0 and not text.startswith(piece) and text.startswith(piece.lstrip()):
            piece = piece.lstrip()  # SentencePiece's dummy prefix space before the first word
        at = pos
        while not text.startswith(piece, at) and at < len(text) and text[at].isspace():
            at += 1
        if piece and text.startswith(piece, at):
            spans.append((pos, at + len(piece)))
            pos, started = at + len(piece), True
        elif not started and pos == 0:  # a special token the server put before the text
            spans.append((0, 0))
        else:
            return None
    return spans


def echo_spans(logprobs: Any, text: str) -> list[tuple[int, int]]:
    """[start, end) of each echoed token in `text`: from `text_offset` when the tokens rebuild
    the text and the offsets agree with them, else by walking the tokens (BOS, SentencePiece)."""
    tokens, offsets = logprobs.tokens, logprobs.text_offset
    at, rebuilt = 0, []
    for t in tokens:
        rebuilt.append(at)
        at += len(t)
    if "".join(tokens).startswith(text) and list(offsets) == rebuilt:
        return [(o, o + len(t)) for o, t in zip(offsets, tokens)]
    walked = token_spans(tokens, text)
    if walked is None:  # e.g. byte-fallback tokens decoded alone as U+FFFD: only the offsets are left
        return [(o, o + max(len(t), 1)) for o, t in zip(offsets, tokens)]
    return walked


def require_prompt_logprobs(logprobs: Any) -> None:
    values = getattr(logprobs, "token_logprobs", None) or []
    if getattr(logprobs, "text_offset", None) is None or all(v is None for v in values[1:]) \
            or len(values) < 2:
        raise LLMError(f"the server returned no prompt logprobs for echo=True; {INSTEAD}")


def sum_echo_logprobs(logprobs: Any, text: str, start: int) -> tuple[float, int, int]:
    """(summed logprob of the tokens carrying text[start:], their count, prompt token count) from
    an echoed completions `logprobs` object (`tokens`, `token_logprobs`, `text_offset`) of `text`.
    A token straddling `start` belongs to the continuation (it carries its first characters)."""
    require_prompt_logprobs(logprobs)
    span = continuation_span(echo_spans(logprobs, text), start, len(text))
    values = [logprobs.token_logprobs[i] for i in span]
    if any(v is None for v in values):
        raise LLMError("the continuation starts at the first token, which has no logprob: "
                       "give loglik a non-empty prompt")
    return float(sum(values)), len(span), (span[0] if span else len(logprobs.tokens))


def echo_is_shifted(logprobs: Any) -> bool:
    """True when position i's top logprobs predict token i+1 rather than token i: the server
    then reports log P(token i | tokens <= i), not log P(token i | tokens < i)."""
    tokens, tops = logprobs.tokens, logprobs.top_logprobs or []
    same = nxt = 0
    for i in range(1, min(len(tokens), len(tops)) - 1):
        if not tops[i]:
            continue
        best = max(tops[i], key=tops[i].get)
        same += best == tokens[i]
        nxt += best == tokens[i + 1]
    return nxt > same


def first_word(label: str) -> str:
    """first_word(' Highly relevant') -> 'highly'"""
    words = label.split()
    return words[0].lower() if words else ""


def check_label_starts(labels: list[str]) -> None:
    """Labels are scored by their first token: refuse two whose first words could share one."""
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            wa, wb = first_word(a), first_word(b)
            if not wa or not wb or wa.startswith(wb) or wb.startswith(wa):
                raise LLMError(f"labels {a.strip()!r} and {b.strip()!r} may start with the same token; "
                               "the openai backend scores a label by its first token from "
                               "top_logprobs, so labels must start with distinct words (rerank.labels)")


def label_scores(tops: dict[str, float], labels: list[str]) -> list[float]:
    """Per label: log P(first token) from the answer's top log-probabilities, summed over the top
    tokens that begin that label and no other (case-insensitive, spaces ignored); a label absent
    from the top ones gets the smallest logprob listed (an upper bound on its own).
    label_scores({' High': -0.5, ' Not': -1.2, 'Other': -3.0}, [' Highly relevant', ' Not relevant'])
    -> [-0.5, -1.2]
    """
    words = [label.strip().lower() for label in labels]
    floor = min(tops.values()) if tops else -100.0
    found: list[list[float]] = [[] for _ in labels]
    for token, value in tops.items():
        piece = token.replace("\u2581", " ").strip().lower()
        owners = [i for i, w in enumerate(words) if piece and w.startswith(piece)]
        if len(owners) == 1:
            found[owners[0]].append(value)
    out = []
    for values in found:
        if not values:
            out.append(floor)
            continue
        top = max(values)
        out.append(top + math.log(sum(math.exp(v - top) for v in values)))
    return out
