"""`fret eval`: evaluate any embedding model on retrieval, STS, classification and bitext data.

fret eval --model MODEL (--retrieval BEIR_DIR|SQUAD_JSON | --sts STS_FILE | --classification CSV_DIR
          | --bitext SRC TGT) [--corpus-from SQUAD_JSON] [--dims 384,128] [--task TEXT | --no-format]
          [--rerank PIPELINE --run-dir DIR [--top-n N] [--set KEY=VALUE]] [--json FILE]

Inputs are formatted the way the model was trained: a fret-trained model's recorded formatting,
else the model's own sentence-transformers `query`/`document` prompts, else not at all. `--task`
formats Gecko-style with that task instead; `--no-format` feeds the texts as they are.

Every task option may repeat. The readers are in fret.parts.evaluation.readers and the metrics in
fret.parts.evaluation.tasks; recipes call those functions directly.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from typing import Optional

from fret.parts.bundled import resolve_embedder
from fret.parts.evaluation import readers, tasks, teacher
from fret.parts.formatting import Formatting, gecko, recorded

HEADLINE = {"retrieval": "ndcg@10", "sts": "spearman", "classification": "accuracy", "bitext": "accuracy"}


def parse_dims(text: str) -> list[int]:
    """parse_dims('384,128') -> [384, 128]"""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dims {text!r}: expected comma-separated integers") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fret eval", description="Evaluate an embedding model.")
    p.add_argument("--model", required=True, help="sentence-transformers path or name; 'default' = bundled MiniLM")
    p.add_argument("--retrieval", action="append", default=[], type=Path,
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or SQuAD/XQuAD JSON")
    p.add_argument("--corpus-from", type=Path, help="SQuAD/XQuAD JSON whose paragraphs form the corpus (cross-lingual)")
    p.add_argument("--split", default="test", help="BEIR qrels split (default test)")
    p.add_argument("--sts", action="append", default=[], type=Path, help="STS Benchmark TSV file")
    p.add_argument("--classification", action="append", default=[], type=Path,
                   help="folder with train.csv and test.csv (header text,category)")
    p.add_argument("--bitext", action="append", default=[], nargs=2, type=Path, metavar=("SRC", "TGT"),
                   help="aligned texts: two line-per-sentence files or two XQuAD JSON files (questions)")
    p.add_argument("--dims", type=parse_dims, help="Matryoshka dims to evaluate (default: recorded ones, else full)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--task", help="format inputs as Gecko does: 'task: TASK | query: ...' and 'title: ... | text: ...' "
                     "(default: the formatting the model records)")
    how.add_argument("--no-format", action="store_true", help="feed texts as they are, whatever the model records")
    p.add_argument("--limit", type=int, help="use only the first N queries / pairs / sentences, or a seeded sample of N rows per classification split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu, cuda, ... (default: what sentence-transformers picks)")
    p.add_argument("--mcls", type=int, metavar="WINDOW",
                   help="BGE-M3 MCLS pooling for long inputs: a CLS token every WINDOW tokens (e.g. 256)")
    p.add_argument("--json", type=Path, help="write the figures here")
    teacher.add_arguments(p)
    return p


def _limit(items, n):
    return items if n is None else items[:n]


def _sample(texts: list, labels: list, n, seed: int = 0) -> tuple[list, list]:
    """A seeded sample of n rows in file order (class files are often sorted by label)."""
    if n is None or n >= len(texts):
        return texts, labels
    keep = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in keep], [labels[i] for i in keep]


def choose_formatting(model: str, task: Optional[str] = None, no_format: bool = False
                      ) -> tuple[Optional[Formatting], str]:
    """(formatting, one line saying which and why) for evaluating `model`."""
    if no_format:
        return None, "none (--no-format)"
    if task:
        found = gecko(task)
        return found, f"{found.describe()} (--task)"
    found, origin = recorded(Path(resolve_embedder(model, "--model")))
    return found, f"{found.describe()} ({origin})" if found else f"none ({origin})"


def run_all(args, model, formatting: Optional[Formatting]) -> list[dict]:
    dims, rows = args.dims, []
    common = dict(dims=dims, formatting=formatting, batch_size=args.batch_size)

    def add(kind, data, figures):
        for dim, metrics in figures.items():
            rows.append({"task": kind, "data": str(data), "dim": dim, **metrics})

    for path in args.retrieval:
        data = (readers.read_squad_retrieval(path, args.corpus_from) if path.suffix == ".json"
                else readers.read_beir(path, args.split))
        qids = _limit(list(data.queries), args.limit)
        name = f"{path} (corpus {args.corpus_from})" if args.corpus_from and path.suffix == ".json" else path
        add("retrieval", name, tasks.evaluate_retrieval(model, data.corpus, {q: data.queries[q] for q in qids},
                                                        data.qrels, **common))
    for path in args.sts:
        add("sts", path, tasks.evaluate_sts(model, _limit(readers.read_sts(path), args.limit), **common))
    for folder in args.classification:
        (xa, ya), (xb, yb) = readers.read_classification(folder)
        add("classification", folder, tasks.evaluate_classification(
            model, _sample(xa, ya, args.limit), _sample(xb, yb, args.limit), **common))
    for src, tgt in args.bitext:
        a, b = readers.read_bitext(src, tgt)
        add("bitext", f"{src} -> {tgt}", tasks.evaluate_bitext(model, _limit(a, args.limit), _limit(b, args.limit), **common))
    return rows


def table(rows: list[dict]) -> str:
    """Fixed-width table: task, data, dim, then every metric of the row."""
    lines = [f"{'task':<15} {'dim':>5}  {'metrics':<60} data"]
    for r in rows:
        metrics = "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in r.items() if k not in ("task", "data", "dim"))
        lines.append(f"{r['task']:<15} {r['dim']:>5}  {metrics:<60} {r['data']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage line
        return int(exit_.code or 0)
    if not (args.retrieval or args.sts or args.classification or args.bitext):
        print("fret eval: give at least one of --retrieval, --sts, --classification, --bitext", file=sys.stderr)
        return 2
    if args.dims is None:
        args.dims = tasks.recorded_dims(args.model)
    try:
        formatting, which = choose_formatting(args.model, args.task, args.no_format)
        print(f"fret eval: formatting {which}", file=sys.stderr)
        model = tasks.load_model(args.model, args.device, args.mcls)
        rows = run_all(args, model, formatting)
        if args.rerank:
            rows += teacher.run(args, model, formatting)
    except readers.EvalDataError as err:
        print(f"fret eval: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # e.g. dims larger than the model's
        print(f"fret eval: {err}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "formatting": which, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
