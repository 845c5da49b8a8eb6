"""Generated tokens/s with and without grammar-constrained decoding (transformers backend).

The same E5 `examples` requests (prompts/e5_example_*.jinja, one task per group, English,
sampling at temperature 1 with fixed seeds) go through `TransformersLLM.generate` twice per
round, interleaved: once plain, once with each group's JSON schema enforced by xgrammar (one
compiled grammar per schema, one token bitmask per batch). A warm-up call of each kind comes
first (it also compiles the six schemas, timed separately). Rows stop at `--max-tokens` or EOS;
the rate counts each row's generated tokens, so a constrained row that closes its JSON early
counts fewer tokens. Prints tokens/s of each run, the best of each kind, and the ratio.

    python benchmarks/bench_grammar.py [--max-tokens 64] [--repeats 3] [--batch-size 6]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = {
    "short_long": "Retrieve recipes that match a list of ingredients",
    "long_short": "Classify a product review by the product's category",
    "short_short": "Find the city that matches a short description",
    "long_long": "Given a news article, find another article about the same event",
    "sts": "Retrieve semantically similar sentences",
    "bitext": "Retrieve parallel sentences",
}
ATTRS = {"query_type": "extremely long-tail", "query_length": "less than 5 words",
         "clarity": "clear", "num_words": 50, "difficulty": "high school", "language": "en",
         "language_name": "English", "target_language": "fr", "target_language_name": "French",
         "high_score": 4, "low_score": 2.5, "unit": "sentence"}


def make_requests(max_tokens: int, constrained: bool):
    from fret.parts.llm import GenerateRequest
    from fret.parts.prompts import load_template
    from fret.stages.e5.records import GROUPS
    reqs = []
    for group, task in TASKS.items():
        prompt = load_template(f"e5_example_{group}.jinja").render(task=task, **ATTRS).strip()
        schema = json.dumps(GROUPS[group].model.model_json_schema(), sort_keys=True)
        reqs.append(GenerateRequest(messages=(("user", prompt),), max_tokens=max_tokens,
                                    temperature=1.0, seed=len(reqs),
                                    json_schema=schema if constrained else None))
    return reqs


def timed(llm, reqs) -> tuple[float, int, list]:
    start = time.perf_counter()
    out = llm.generate(reqs)
    return time.perf_counter() - start, sum(g.completion_tokens for g in out), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=6)
    args = ap.parse_args()

    from fret.parts.llm import LLMSettings, make_llm
    from fret.stages.e5.records import first_json
    llm = make_llm(LLMSettings(batch_size=args.batch_size))
    plain, constrained = make_requests(args.max_tokens, False), make_requests(args.max_tokens, True)
    print(f"model: bundled SmolLM2-135M-Instruct, dtype {llm.dtype}, {len(plain)} requests, "
          f"batch {args.batch_size}, max_tokens {args.max_tokens}, {args.repeats} interleaved rounds")
    llm.generate(plain[:1])  # warm-up: kernel selection
    start = time.perf_counter()
    llm.grammars()
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for r in constrained:
        llm.grammars().compile("json_schema", r.json_schema)
    print(f"setup: tokenizer info {setup:.2f} s; compiling the six schemas {time.perf_counter() - start:.2f} s "
          "(once per process)")
    llm.generate(constrained[:1])
    rates = {"plain": [], "grammar": []}
    for k in range(args.repeats):
        for kind, reqs in (("plain", plain), ("grammar", constrained)):
            sec, toks, out = timed(llm, reqs)
            rates[kind].append(toks / sec)
            ok = 0
            for g in out:
                try:
                    first_json(g.text, "{")
                    ok += 1
                except ValueError:
                    pass
            print(f"round {k + 1} {kind:8s} {toks:4d} tokens in {sec:6.2f} s = {toks / sec:6.1f} tokens/s "
                  f"(complete JSON: {ok}/{len(out)})")
    best = {k: max(v) for k, v in rates.items()}
    print(f"best tokens/s: plain {best['plain']:.1f}, grammar {best['grammar']:.1f}")
    print(f"ratio grammar / plain = {best['grammar'] / best['plain']:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
