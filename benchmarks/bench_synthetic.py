"""Does the data fret *generates* (no human labels) make an embedding model better? An ablation.

FRet data is generated from the bundled Wikipedia extracts (English and Spanish by default) with
the embedded defaults (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) at each `--sizes` seed count; the
bundled MiniLM is trained on each arm's rows with `fret train` defaults and every model,
the untrained base included, is scored with `fret eval` on the shared held-out sets (XQuAD-en and
XQuAD-es retrieval, STS-B test, Banking77). Arms, same seeds, same number of training rows:

- `a`: the seed passage as positive, in-batch negatives only (the Promptagator / InPars baseline):
  `rerank.positive=seed`, `rerank.fusion={embed: 1}`, `rerank.num_negatives=0` (no LLM rerank);
- `b`: `a` + one hard negative mined by the seed embedder (its last of the top `mine.top_n`);
- `c`: full FRet, the pipeline's defaults: the LLM's rerank picks the positive and the hard negative;
- `d`: `c`'s rows mixed with E5 and MultiLongDoc rows (their demo pipelines) through the mixture,
  the mixture cut to `c`'s row count.

Every arm's rows pass through the mixture's `mix` stage with decontamination against the
evaluation sets (n-gram overlap of queries and positives), so no arm trains on a test text.
Arms `a` and `b` copy `c`'s upstream stages (corpus ... mine) and redo only `rerank` and `export`;
sizes share one request cache, so a smaller size is a subset of a larger one's LLM answers.

    python benchmarks/bench_synthetic.py [--sizes 256,1024] [--arms a,b,c,d] [--work DIR] [--models DIR]
        [--set KEY=VALUE ...]   # extra pipeline settings for the generation (a change to measure)

Prints one table (one row per arm and size, every set a column, the mean, CPU seconds) and the
data-quality figures of each arm's rows; writes RESULTS.json in --work. Trained models are kept in
--models/SIZE-ARM (load with SentenceTransformer(path), or `fret eval --model PATH` on your sets).
Not a test: on 2 CPU cores the generation alone takes about 40 minutes per 1,000 seed passages.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
EVALDATA = ROOT.parent / "shared" / "evaldata"
FRET = [sys.executable, "-m", "fret.cli"]
SETS = {  # column -> (fret eval option, path, metric)
    "xquad-en": ("--retrieval", EVALDATA / "xquad" / "xquad.en.json", "ndcg@10"),
    "xquad-es": ("--retrieval", EVALDATA / "xquad" / "xquad.es.json", "ndcg@10"),
    "sts-b": ("--sts", EVALDATA / "stsb" / "sts-test.csv", "spearman"),
    "banking77": ("--classification", EVALDATA / "banking77", "accuracy"),
}
DECONTAM = {"xquad-en": EVALDATA / "xquad" / "xquad.en.json", "xquad-es": EVALDATA / "xquad" / "xquad.es.json",
            "stsb-test": EVALDATA / "stsb" / "sts-test.csv", "banking77-test": EVALDATA / "banking77" / "test.csv"}
ARMS = {  # arm -> rerank settings on top of the pipeline's (c: none)
    "a": ["rerank.positive=seed", "rerank.fusion={embed: 1}", "rerank.num_negatives=0"],
    "b": ["rerank.positive=seed", "rerank.fusion={embed: 1}"],
    "c": [],
}
UPSTREAM = ("corpus", "sample", "queries", "embed", "mine")


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fret(*args: str, log: Path) -> float:
    """Run one fret command, its output to `log`; the CPU seconds it took (its process tree)."""
    before, started = cpu_children(), time.monotonic()
    with log.open("a") as out:
        out.write(f"$ fret {' '.join(args)}\n")
        out.flush()
        code = subprocess.run([*FRET, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"fret {' '.join(args[:2])} failed (exit {code}); see {log}")
    print(f"  fret {' '.join(args[:2])} ... {time.monotonic() - started:.0f} s", flush=True)
    return cpu_children() - before


def generation_settings(args) -> list[str]:
    return [f"corpus.sources.0.languages=[{args.languages}]", f"corpus.sources.0.limit={args.corpus_limit}",
            f"cache.path={args.work / 'llm.sqlite'}", *args.set]


def sets_flags(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def generate_fret(args, size: int, arm: str, log: Path) -> tuple[Path, float]:
    """Arm a/b/c's FRet run folder at one size (a and b start from c's upstream stages)."""
    run = args.work / f"{size}" / arm
    if arm != "c" and not (run / "rerank").exists():
        source = args.work / f"{size}" / "c"
        for name in (*UPSTREAM, "_cache"):
            if (source / name).exists() and not (run / name).exists():
                shutil.copytree(source / name, run / name)
    overrides = [*generation_settings(args), f"sample.size={size}", *ARMS[arm]]
    cpu = fret("run", "pipelines/fret.yaml", "--run-dir", str(run), "--quiet", *sets_flags(overrides), log=log)
    return run, cpu


def generate_other(args, pipeline: str, log: Path) -> tuple[Path, float]:
    """E5 or MultiLongDoc rows at their demo sizes, for arm d (once for every size)."""
    run = args.work / Path(pipeline).stem
    cpu = fret("run", pipeline, "--run-dir", str(run), "--quiet",
               "--set", f"cache.path={args.work / 'llm.sqlite'}", log=log)
    return run, cpu


def mix(args, name: str, inputs: dict[str, Path], total: int | None, log: Path) -> tuple[Path, float]:
    """The mixture's `mix` stage over unified folders, decontaminated against the evaluation sets."""
    run = args.work / "mix" / name
    entries = ", ".join(f"{{name: {k}, path: '{v}'}}" for k, v in inputs.items())
    sets = ", ".join(f"{k}: '{v}'" for k, v in DECONTAM.items())
    overrides = ["mix.use_convert=false", f"mix.inputs=[{entries}]", "mix.strategy=original",
                 f"mix.total={'null' if total is None else total}", f"mix.decontaminate.sets={{{sets}}}"]
    cpu = fret("generate", "mix", "pipelines/mixture.yaml", "--run-dir", str(run), "--quiet",
               *sets_flags(overrides), log=log)
    return run / "mix", cpu


def rows_of(folder: Path) -> int:
    import pyarrow.parquet as pq
    return sum(pq.read_metadata(p).num_rows for p in folder.glob("part-*.parquet"))


def data_key(folder: Path) -> str:
    """A fingerprint of a training set's shards: a rerun trains and evaluates again only if it changed."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("part-*.parquet")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train(args, data: Path, name: str, log: Path) -> tuple[str, float]:
    out = args.models / name
    stamp = out / "fret_bench_data.txt"
    if stamp.exists() and stamp.read_text() == data_key(data):
        print(f"  {out} was trained on these rows: kept", flush=True)
        return str(out), 0.0
    (args.work / "eval" / f"{name}.json").unlink(missing_ok=True)
    cpu = fret("train", "--data", str(data), "--model", "default", "--output", str(out), log=log)
    stamp.write_text(data_key(data))
    return str(out), cpu


def evaluate(args, model: str, name: str, log: Path) -> tuple[dict, float]:
    """{column: figure x100} from `fret eval` over every set in SETS (kept while the model is)."""
    out = args.work / "eval" / f"{name}.json"
    cpu = 0.0
    if not out.exists():
        flags = [x for opt, path, _ in SETS.values() for x in (opt, str(path))]
        limit = ["--limit", str(args.eval_limit)] if args.eval_limit else []
        cpu = fret("eval", "--model", model, *flags, *limit, "--json", str(out), log=log)
    results = json.loads(out.read_text())["results"]
    figures = {}
    for column, (_, path, metric) in SETS.items():
        hits = [r for r in results if path.name in str(r["data"]) and metric in r]
        if hits:
            top = max(hits, key=lambda r: r["dim"])  # the full dimension
            figures[column] = top[metric] if top[metric] > 1 else 100 * top[metric]  # all x100
    return figures, cpu


def quality_of(folder: Path) -> dict:
    import pyarrow.parquet as pq
    from fret.parts.quality import SERIES, quality
    rows = [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return {k: v for k, v in quality(rows).items() if k not in SERIES}


def table(results: list[dict]) -> str:
    cols = list(SETS)
    head = "| arm | size | rows | " + " | ".join(cols) + " | mean | CPU s (gen / train / eval) |"
    lines = [head, "|" + "---|" * (len(cols) + 5)]
    for r in results:
        figs = r["figures"]
        mean = sum(figs[c] for c in cols) / len(cols) if all(c in figs for c in cols) else float("nan")
        cpu = r.get("cpu", {})
        lines.append(f"| {r['arm']} | {r.get('size', '')} | {r.get('rows', '')} | "
                     + " | ".join(f"{figs.get(c, float('nan')):.2f}" for c in cols)
                     + f" | {mean:.2f} | {cpu.get('gen', 0):.0f} / {cpu.get('train', 0):.0f} / {cpu.get('eval', 0):.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="256,1024")
    p.add_argument("--arms", default="a,b,c,d")
    p.add_argument("--work", type=Path, default=Path("/tmp/fret-synthetic"))
    p.add_argument("--models", type=Path, default=ROOT / "models" / "synthetic")
    p.add_argument("--languages", default="en,es")
    p.add_argument("--corpus-limit", type=int, default=2500, help="articles per language")
    p.add_argument("--eval-limit", type=int, help="first N items of each evaluation set (default: all)")
    p.add_argument("--set", action="append", default=[], help="pipeline setting for the generation")
    args = p.parse_args()
    args.work = args.work.resolve()
    args.models = args.models.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench.log"
    sizes = sorted(int(s) for s in args.sizes.split(","))
    arms = args.arms.split(",")
    print(f"work {args.work}; log {log}", flush=True)

    base, cpu = evaluate(args, "default", "base", log)
    results = [{"arm": "base", "figures": base, "cpu": {"eval": cpu}}]
    others: dict[str, Path] = {}
    other_cpu = 0.0
    if "d" in arms:
        for pipeline in ("pipelines/e5.yaml", "pipelines/multilongdoc.yaml"):
            run, cpu = generate_other(args, pipeline, log)
            others[Path(pipeline).stem] = run / "export"
            other_cpu += cpu
    for size in sizes:
        exported: dict[str, int] = {}
        for arm in ["c", *[a for a in arms if a in ("a", "b")]] + (["d"] if "d" in arms else []):
            print(f"size {size}, arm {arm}", flush=True)
            cost = {}
            if arm == "d":
                data, cost["mix"] = mix(args, f"{size}-d", {"fret": args.work / f"{size}" / "c" / "export",
                                                            **others}, exported["c"], log)
                cost["gen"] = other_cpu
            else:
                run, cost["gen"] = generate_fret(args, size, arm, log)
                data, cost["mix"] = mix(args, f"{size}-{arm}", {"fret": run / "export"}, None, log)
            exported[arm] = rows_of(data)
            if arm not in arms:
                continue
            model, cost["train"] = train(args, data, f"{size}-{arm}", log)
            figures, cost["eval"] = evaluate(args, model, f"{size}-{arm}", log)
            results.append({"arm": arm, "size": size, "rows": exported[arm], "model": model,
                            "figures": figures, "cpu": cost, "quality": quality_of(data)})
            print(table(results), flush=True)
    (args.work / "RESULTS.json").write_text(json.dumps(
        {"settings": vars(args) | {"work": str(args.work), "models": str(args.models)}, "results": results},
        indent=2, default=str) + "\n")
    print(table(results))
    for r in results[1:]:
        q = r["quality"]
        print(f"{r['size']}-{r['arm']}: copied {q['copied']:.1%}, near-copy {q['near_copy']:.1%}, "
              f"wrong language {q['wrong_language']:.1%}, distinct tasks {q['distinct_tasks']}, "
              f"positive is seed {q['positive_is_seed'] if q['positive_is_seed'] is None else round(q['positive_is_seed'], 3)}, "
              f"duplicates {q['duplicate_queries']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
