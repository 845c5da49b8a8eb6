"""Does `fret train` help on held-out data? fret's trainer against sentence-transformers' on one split.

XQuAD-en (or `--lang`, ../shared/evaldata) is split by article, seeded: half the articles train, the other half
are the held-out test side, read as retrieval (question -> its paragraph among the test
paragraphs). Every model is scored on the test side with `fret eval`, exactly as a user would:

- `base`: the bundled all-MiniLM-L6-v2, untrained;
- `st`: sentence-transformers' own fine-tuning, CachedMultipleNegativesRankingLoss through
  SentenceTransformerTrainer (its defaults: no warm-up, linear decay), same pairs, epochs, batch,
  learning rate;
- `fret`: `fret train` with its defaults on the same pairs, written as unified shards;
- `fret-mined`: the same with one hard negative per query mined by fret's own stages (corpus ->
  queries.from_file -> embed -> mine over the training paragraphs), the positive excluded;
- any `--variant NAME:key=value,key=value`: `fret train --set key=value ...` on the plain pairs
  (`NAME+mined:...` on the mined ones), to measure one change at a time.

    python benchmarks/bench_finetune.py [--epochs 1] [--batch 32] [--variant plain:format=plain] ...

Prints one table (nDCG@10, MRR@10, Recall@100, delta to base) and writes RESULTS.json in --work.
Not a test: a run takes minutes per model on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
XQUAD = ROOT.parent / "shared" / "evaldata" / "xquad"
TASK = "Given a question, find a passage that answers the question"
FRET = [sys.executable, "-m", "fret.cli"]


def split_articles(seed: int, lang: str) -> tuple[list[dict], list[dict]]:
    """(train articles, test articles): a seeded half of XQuAD-<lang>'s articles each."""
    articles = json.loads((XQUAD / f"xquad.{lang}.json").read_text())["data"]
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return [articles[i] for i in sorted(order[:half])], [articles[i] for i in sorted(order[half:])]


def training_pairs(articles: list[dict]) -> list[dict]:
    """One (question, paragraph, title) per question of the training articles."""
    return [{"query": qa["question"], "positive": para["context"], "title": art.get("title")}
            for art in articles for para in art["paragraphs"] for qa in para["qas"]]


def write_unified(folder: Path, pairs: list[dict], negatives: dict[str, list[str]], lang: str) -> None:
    """Unified shards (fret.core.records.Unified), as any fret pipeline would hand them to `fret train`."""
    from fret.core.records import Unified, schema_of, stable_id
    from fret.core.shards import shard_name, write_table

    rows = [Unified(id=stable_id(f"xquad-{lang}-train", p["query"], p["positive"]), task=TASK, query=p["query"],
                    positive=p["positive"], positive_title=p["title"],
                    negatives=negatives.get(p["query"], []), negative_titles=[None] * len(negatives.get(p["query"], [])),
                    source=f"xquad-{lang}-train", task_type="question_answering", symmetric=False, language=lang,
                    meta="{}").model_dump() for p in pairs]
    write_table(folder / shard_name(0), rows, schema_of(Unified))


def mined_negatives(work: Path, pairs: list[dict], which: str) -> dict[str, list[str]]:
    """One hard negative per question from fret's corpus -> queries.from_file -> embed -> mine stages."""
    import pyarrow.parquet as pq

    run = work / "mine-run"
    paragraphs = sorted({(p["title"], p["positive"]) for p in pairs})
    corpus_file = work / "train_paragraphs.jsonl"
    key = {x: f"para-{n}" for n, (_, x) in enumerate(paragraphs)}
    corpus_file.write_text("".join(json.dumps({"id": key[x], "title": t, "text": x}) + "\n" for t, x in paragraphs))
    pipeline = work / "mine.yaml"
    pipeline.write_text(json.dumps({
        "pipeline": "fret", "seed": 0,
        "corpus": {"sources": [{"type": "jsonl", "path": str(corpus_file), "id_field": "id"}], "passage_words": 2000, "min_words": 1},
        "queries": {"from_file": str(work / "train_queries.jsonl")},
        "mine": {"top_n": 20}}))
    (work / "train_queries.jsonl").write_text("")  # the corpus stage validates the whole file
    subprocess.run([*FRET, "generate", "corpus", str(pipeline), "--run-dir", str(run), "--quiet"], check=True)
    ids, texts = {}, {}  # passage id by whitespace-normalised text, and text by id
    for shard in sorted((run / "corpus").glob("part-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "text"]).to_pylist():
            ids[" ".join(row["text"].split())] = row["id"]
            texts[row["id"]] = row["text"]
    ids = {x: ids[" ".join(x.split())] for x in key}
    (work / "train_queries.jsonl").write_text("".join(
        json.dumps({"query": p["query"], "task": TASK, "task_type": "question_answering",
                    "positive_id": ids[p["positive"]]}) + "\n" for p in pairs))
    for stage in ("queries", "embed", "mine"):
        subprocess.run([*FRET, "generate", stage, str(pipeline), "--run-dir", str(run), "--quiet"], check=True)
    out = {}
    for shard in sorted((run / "mine").glob("part-*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            others = [c for c in row["candidate_ids"] if c != row["passage_id"]]
            pick = others[0] if which == "top" else others[-1]
            out[row["query"]] = [texts[pick]]
    return out


def write_test(path: Path, articles: list[dict], lang: str) -> None:
    path.write_text(json.dumps({"version": f"xquad-{lang}-test-half", "data": articles}))


def evaluate(model: str, test: Path, out: Path) -> dict:
    subprocess.run([*FRET, "eval", "--model", model, "--retrieval", str(test), "--json", str(out)], check=True)
    return json.loads(out.read_text())["results"][0]


def train_fret(data: Path, output: Path, overrides: list[str], batch: int, epochs: int) -> float:
    sets = [f"batch_size={batch}", f"epochs={epochs}", *overrides]
    start = time.perf_counter()
    subprocess.run([*FRET, "train", "--data", str(data), "--model", "default", "--output", str(output),
                    "--restart", *(x for s in sets for x in ("--set", s))], check=True)
    return time.perf_counter() - start


def train_st(pairs: list[dict], output: Path, batch: int, epochs: int, lr: float, seed: int) -> float:
    """sentence-transformers' own recipe: CachedMNRL via SentenceTransformerTrainer, its defaults."""
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

    from fret.parts.bundled import minilm_dir

    start = time.perf_counter()
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    model.max_seq_length = 256  # fret train's max_length default
    data = Dataset.from_dict({"anchor": [p["query"] for p in pairs], "positive": [p["positive"] for p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output.with_name(output.name + "-ckpt")), per_device_train_batch_size=batch,
        num_train_epochs=epochs, learning_rate=lr, seed=seed, save_strategy="no", report_to="none",
        logging_steps=10, use_cpu=True)
    loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=32)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    model.save(str(output))
    return time.perf_counter() - start


def parse_variant(text: str) -> tuple[str, list[str]]:
    """parse_variant('t02:temperature=0.02,warmup_steps=2') -> ('t02', ['temperature=0.02', 'warmup_steps=2'])"""
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/fret-bench-finetune"))
    p.add_argument("--seed", type=int, default=0, help="article split seed")
    p.add_argument("--lang", default="en", help="XQuAD language (en, es, de, ...): MiniLM is English-only, so other\n"
                   "languages leave the base model room to gain")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5, help="sentence-transformers' learning rate")
    p.add_argument("--negative", choices=["top", "last"], default="top",
                   help="mined negative: the best-ranked non-positive, or the 20th")
    p.add_argument("--runs", default="base,st,fret,fret-mined", help="comma-separated subset of the fixed runs")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...")
    args = p.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    train_articles, test_articles = split_articles(args.seed, args.lang)
    pairs = training_pairs(train_articles)
    test = work / "test.json"
    write_test(test, test_articles, args.lang)
    print(f"split: {len(train_articles)} train articles ({len(pairs)} pairs), {len(test_articles)} test articles "
          f"({sum(len(q['qas']) for a in test_articles for q in a['paragraphs'])} queries)", file=sys.stderr)
    plain_dir, mined_dir = work / "train-plain", work / "train-mined"
    write_unified(plain_dir, pairs, {}, args.lang)
    runs = args.runs.split(",")
    variants = [parse_variant(v) for v in args.variant]
    if "fret-mined" in runs or any(name.endswith("+mined") for name, _ in variants):
        write_unified(mined_dir, pairs, mined_negatives(work, pairs, args.negative), args.lang)
    results_path = work / "RESULTS.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    todo: list[tuple[str, list[str], Path]] = []
    if "fret" in runs:
        todo.append(("fret", [], plain_dir))
    if "fret-mined" in runs:
        todo.append(("fret-mined", [], mined_dir))
    todo += [(name, sets, mined_dir if name.endswith("+mined") else plain_dir) for name, sets in variants]
    if "base" in runs:
        results["base"] = {**evaluate("default", test, work / "eval-base.json"), "seconds": 0.0}
    if "st" in runs:
        seconds = train_st(pairs, work / "model-st", args.batch, args.epochs, args.lr, 0)
        results["st"] = {**evaluate(str(work / "model-st"), test, work / "eval-st.json"), "seconds": seconds}
    for name, sets, data in todo:
        model = work / f"model-{name}"
        seconds = train_fret(data, model, sets, args.batch, args.epochs)
        results[name] = {**evaluate(str(model), test, work / f"eval-{name}.json"), "seconds": seconds,
                         "sets": sets}
        results_path.write_text(json.dumps(results, indent=2))
    results_path.write_text(json.dumps(results, indent=2))
    base = results.get("base", {}).get("ndcg@10")
    print(f"\n{'run':<28} {'nDCG@10':>8} {'vs base':>8} {'MRR@10':>8} {'R@100':>8} {'s':>6}  settings (x100)")
    for name, r in results.items():
        delta = f"{100 * (r['ndcg@10'] - base):+.2f}" if base is not None else ""
        print(f"{name:<28} {100 * r['ndcg@10']:8.2f} {delta:>8} {100 * r['mrr@10']:8.2f} "
              f"{100 * r['recall@100']:8.2f} {r.get('seconds', 0):6.0f}  {' '.join(r.get('sets', []))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
