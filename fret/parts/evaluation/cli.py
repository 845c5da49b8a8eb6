"""`fret eval`: evaluate any embedding model on retrieval, STS, classification and bitext data.

fret eval --model MODEL (--retrieval BEIR_DIR|SQUAD_JSON | --sts STS_FILE | --classification CSV_DIR
          | --bitext SRC TGT) [--corpus-from SQUAD_JSON] [--dims 384,128] [--task TEXT | --no-format]
          [--rerank PIPELINE --run-dir DIR [--top-n N] [--set KEY=VALUE]] [--json FILE]

Inputs are formatted the way the model was trained: a fret-trained model's recorded formatting,
else the model's own sentence-transformers `query`/`document` prompts, else not at all. `--task`
formats Gecko-style with that task instead; `--no-format` feeds the texts as they are.

Every task option may repeat. The readers are in fret.parts.evaluation.readers and the metrics in
fret.parts.evaluation.tasks; recipes call those functions directly. Every file, flag and (with
--rerank) pipeline setting is checked and every data file read before a model loads; errors
follow fret's contract (docs/errors.md).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from typing import Optional

from fret.core.errors import ArgumentParser, Problems, guarded
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
    p = ArgumentParser(prog="fret eval", description="Evaluate an embedding model (and, with "
                       "--rerank, an LLM teacher). Encoding and scoring show progress with the time "
                       "left: a bar on a terminal, a line every 30 s in a log.")
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


def read_all(args) -> dict:
    """Every data set the options name, read (and so checked) before a model loads:
    {('retrieval', i): Retrieval, ('sts', i): pairs, ('classification', i): splits, ('bitext', i): texts}."""
    data = {}
    for i, path in enumerate(args.retrieval):
        data["retrieval", i] = (readers.read_squad_retrieval(path, args.corpus_from) if path.suffix == ".json"
                                else readers.read_beir(path, args.split))
    for i, path in enumerate(args.sts):
        data["sts", i] = readers.read_sts(path)
    for i, folder in enumerate(args.classification):
        data["classification", i] = readers.read_classification(folder)
    for i, (src, tgt) in enumerate(args.bitext):
        data["bitext", i] = readers.read_bitext(src, tgt)
    return data


def run_all(args, model, formatting: Optional[Formatting], data: Optional[dict] = None) -> list[dict]:
    dims, rows = args.dims, []
    common = dict(dims=dims, formatting=formatting, batch_size=args.batch_size)
    data = read_all(args) if data is None else data

    def add(kind, name, figures):
        for dim, metrics in figures.items():
            rows.append({"task": kind, "data": str(name), "dim": dim, **metrics})

    for i, path in enumerate(args.retrieval):
        found = data["retrieval", i]
        qids = _limit(list(found.queries), args.limit)
        name = f"{path} (corpus {args.corpus_from})" if args.corpus_from and path.suffix == ".json" else path
        add("retrieval", name, tasks.evaluate_retrieval(model, found.corpus, {q: found.queries[q] for q in qids},
                                                        found.qrels, **common))
    for i, path in enumerate(args.sts):
        add("sts", path, tasks.evaluate_sts(model, _limit(data["sts", i], args.limit), **common))
    for i, folder in enumerate(args.classification):
        (xa, ya), (xb, yb) = data["classification", i]
        add("classification", folder, tasks.evaluate_classification(
            model, _sample(xa, ya, args.limit), _sample(xb, yb, args.limit), **common))
    for i, (src, tgt) in enumerate(args.bitext):
        a, b = data["bitext", i]
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


def check(args) -> tuple[dict, Optional[teacher.Plan]]:
    """(data sets, the --rerank plan): every problem of the flags, files, model and pipeline at once."""
    problems = Problems()
    if not (args.retrieval or args.sts or args.classification or args.bitext):
        problems.add("give at least one of --retrieval, --sts, --classification, --bitext")
    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--mcls", args.mcls)):
        if value is not None and value < 1:
            problems.add(f"{flag} {value}: expected a number >= 1")
    if args.dims is not None and (not args.dims or min(args.dims) < 1):
        problems.add(f"--dims {','.join(map(str, args.dims))}: expected numbers >= 1")
    if args.corpus_from is not None and not any(p.suffix == ".json" for p in args.retrieval):
        problems.add("--corpus-from needs a SQuAD/XQuAD --retrieval file (.json)")
    if args.json is not None and args.json.is_dir():
        problems.add(f"--json {args.json}: a folder, not a file")
    for flag, paths in (("--retrieval", args.retrieval), ("--sts", args.sts),
                        ("--classification", args.classification),
                        ("--bitext", [p for pair in args.bitext for p in pair]),
                        ("--corpus-from", [args.corpus_from] if args.corpus_from else [])):
        problems.extend(f"{flag} {p}: no such file or folder" for p in paths if not p.exists())
    problems.check(resolve_embedder, args.model, "--model")
    plan = problems.check(teacher.check, args)
    data = problems.check(read_all, args) if not problems.lines else None
    problems.raise_if_any()
    return data, plan


def run(argv: list[str]) -> int:
    """`fret eval` under the error contract of its caller (fret.cli or `main` below)."""
    args = parser().parse_args(argv)
    data, plan = check(args)
    if args.dims is None:
        args.dims = tasks.recorded_dims(args.model)
    formatting, which = choose_formatting(args.model, args.task, args.no_format)
    print(f"fret eval: formatting {which}", file=sys.stderr)
    model = tasks.load_model(args.model, args.device, args.mcls)
    rows = run_all(args, model, formatting, data)
    if plan is not None:
        rows += teacher.run(args, model, formatting, plan, data)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "formatting": which, "results": rows}, indent=2) + "\n")
    return 0


def main(argv: list[str]) -> int:
    """`fret eval` called as a function (tests, `python -m`): the same contract as the CLI."""
    return guarded(run, argv, "eval")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
