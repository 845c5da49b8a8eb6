"""Rerank scoring (QL + RC through `loglik`) against a raw forward pass and a plain baseline.

On the same (query, passage) pairs from the bundled English Wikipedia extracts, with the
pipeline's prompts (prompts/fret_ql.jinja: 1 continuation; prompts/fret_rc.jinja: 4 graded
labels), it times, side by side and interleaved (best of --repeats, since the machine is shared):

  ours        TransformersLLM.loglik as the rerank stage calls it (dtype auto = bf16 here, all
              labels from one pass, LM head only where scored, shared prefix computed once)
  ours-noshare  the same with prefix sharing off (every row runs its whole prompt)
  raw         the bare base model (`model.model`, same dtype, same batch size, no LM head) over
              exactly the tokens ours-noshare feeds it: each request's prompt + its continuations
  baseline    fp32, one full forward pass with full-vocabulary logits per (pair, label) and per
              QL pair, log_softmax, sum over the continuation; batched like ours, no prefix reuse

and prints pairs/s and the ratios: (a) ours / raw (target >= 0.8); (b) ours / baseline (>= 5x).

    python benchmarks/bench_rerank_scoring.py [--pairs 32] [--batch-size 8] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LABELS = (" Perfectly relevant", " Highly relevant", " Somewhat relevant", " Not relevant")


def make_pairs(n: int, passage_chars: int) -> list[tuple[str, str]]:
    """(query, passage): the passage is an extract's head; the query asks about its title."""
    from fret.parts.bundled import wiki_summaries
    data = json.loads(wiki_summaries("en").read_text(encoding="utf-8"))
    rows = [v for v in data.values() if len(v["extract"]) >= passage_chars][:n]
    return [(f"what is {v['title'].lower()}", v["extract"][:passage_chars]) for v in rows]


def requests_for(pairs):
    from fret.parts.llm import LoglikRequest
    from fret.parts.prompts import render
    ql = [LoglikRequest(render("fret_ql", passage=p).rstrip("\n"), (" " + q,)) for q, p in pairs]
    rc = [LoglikRequest(render("fret_rc", query=q, passage=p).rstrip("\n"), LABELS) for q, p in pairs]
    return ql + rc


def run_ours(llm, reqs):
    llm._prefixes.clear()  # the shared prefix is computed once per run, inside the timing
    return llm.loglik(reqs)


def run_raw(llm, reqs, batch_size: int):
    import torch
    seqs = [llm.encode(r.prompt) + [t for c in r.continuations for t in llm.encode(c)] for r in reqs]
    with torch.inference_mode():
        for s in range(0, len(seqs), batch_size):
            batch = seqs[s:s + batch_size]
            width = max(len(x) for x in batch)
            ids = torch.tensor([x + [0] * (width - len(x)) for x in batch])  # (B, T)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
            llm.model.model(input_ids=ids, attention_mask=mask)


def run_baseline(model, tok, reqs, batch_size: int) -> list[list[float]]:
    import torch
    jobs = [(tok(r.prompt, add_special_tokens=False)["input_ids"], tok(c, add_special_tokens=False)["input_ids"])
            for r in reqs for c in r.continuations]
    scores = []
    with torch.inference_mode():
        for s in range(0, len(jobs), batch_size):
            batch = jobs[s:s + batch_size]
            width = max(len(p) + len(c) for p, c in batch)
            ids = torch.tensor([p + c + [0] * (width - len(p) - len(c)) for p, c in batch])  # (B, T)
            mask = torch.tensor([[1] * (len(p) + len(c)) + [0] * (width - len(p) - len(c)) for p, c in batch])
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # (B, T, V)
            for b, (p, c) in enumerate(batch):
                scores.append(sum(logp[b, len(p) - 1 + k, t].item() for k, t in enumerate(c)))
    out, it = [], iter(scores)
    for r in reqs:
        out.append([next(it) for _ in r.continuations])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--passage-chars", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch
    from fret.parts.llm import LLMSettings, make_llm
    ours = make_llm(LLMSettings(batch_size=args.batch_size))
    noshare = make_llm(LLMSettings(batch_size=args.batch_size, extra={"prefix_sharing": False}))
    fp32 = make_llm(LLMSettings(dtype="float32", batch_size=args.batch_size))
    pairs = make_pairs(args.pairs, args.passage_chars)
    reqs = requests_for(pairs)
    tokens = [len(ours.encode(r.prompt)) + sum(len(ours.encode(c)) for c in r.continuations) for r in reqs]
    n = len(pairs)
    print(f"{n} pairs, {len(reqs)} loglik requests ({sum(len(r.continuations) for r in reqs)} "
          f"continuations), {sum(tokens) / n:.0f} tokens per pair (QL + RC), batch size "
          f"{args.batch_size}, model dtype {ours.dtype}, torch threads {torch.get_num_threads()}")

    runs = {
        "ours": lambda: run_ours(ours, reqs),
        "ours-noshare": lambda: run_ours(noshare, reqs),
        "raw": lambda: run_raw(ours, reqs, args.batch_size),
        "baseline": lambda: run_baseline(fp32.model, fp32.tokenizer, reqs, args.batch_size),
    }
    for fn in (lambda: run_ours(ours, reqs[:2]), lambda: run_ours(noshare, reqs[:2]),
               lambda: run_raw(ours, reqs[:2], 2), lambda: run_baseline(fp32.model, fp32.tokenizer, reqs[:1], 2)):
        fn()  # warm-up: first calls pay for kernel selection and allocation
    best = {k: float("inf") for k in runs}
    results = {}
    for _ in range(max(1, args.repeats)):
        for name, fn in runs.items():
            t = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    rate = {k: n / v for k, v in best.items()}
    for k in runs:
        print(f"  {k:13s} {best[k]:8.2f} s   {rate[k]:7.2f} pairs/s")
    diff = max(abs(a - b) for o, ref in zip(results["ours"], results["baseline"])
               for a, b in zip(o.logprobs, ref))
    diff32 = max(abs(a - b) for o, ref in zip(fp32.loglik(reqs[:8]), results["baseline"][:8])
                 for a, b in zip(o.logprobs, ref))
    print(f"(a) ours / raw forward:          {rate['ours'] / rate['raw']:.2f}  (target >= 0.8)")
    print(f"    ours-noshare / raw forward:  {rate['ours-noshare'] / rate['raw']:.2f}  "
          "(same tokens, no prefix reuse: our overhead alone)")
    print(f"(b) ours / plain fp32 baseline:  {rate['ours'] / rate['baseline']:.1f}x (target >= 5x)")
    print(f"max |ours - baseline| over all scores: {diff:.3f} nats ({ours.dtype} vs float32); "
          f"fp32 ours vs baseline on 8 requests: {diff32:.1e}")


if __name__ == "__main__":
    main()
