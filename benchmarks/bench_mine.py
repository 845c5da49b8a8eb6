"""Hard-negative mining: fret's embed + mine stages vs sentence-transformers' `mine_hard_negatives`.

    python benchmarks/bench_mine.py                          # ~20k passages, 2000 queries, top 20
    python benchmarks/bench_mine.py --queries 500 --repeats 1 --languages en   # a quick look

Both sides get the same texts and the same model (the bundled all-MiniLM-L6-v2, max 256 tokens):
the corpus passages of a FRet run folder (the `corpus` stage over the bundled Wikipedia extracts,
formatted as the `embed` stage formats them) and its queries (the `queries` stage with the tests'
fake LLM, which asks the passage's words back, formatted with `embed.query_format`). Set-up
(corpus, sample, queries) is not timed.

Timed, each in its own fresh subprocess with the same OMP_NUM_THREADS, end to end from texts to
mined neighbours, embedding included:
  fret: `fret run ... embed mine` as a user runs it (runner.run_pipeline over the two stages on a
        copy of the run folder, no embedding cache), top-N = mine.top_n, default settings;
  fret-onnx: the same with `embed.engine=onnx`, default settings otherwise (the model exported
        once before the rounds, untimed, into the run folder every round copies; its time and
        peak RSS are printed apart);
  st:   `mine_hard_negatives(dataset(query, positive), model, corpus=passages,
        num_negatives=top_n - 1, range_max=top_n, output_format="n-tuple")` with its defaults
        otherwise (batch 32; `--st-faiss` adds a run with use_faiss=True).
Wall time is the child's whole life (interpreter, imports, model load); peak RSS is the child's
ru_maxrss from os.wait4. Contenders are interleaved and each figure is the best of --repeats.
Agreement: for every query, fret's top-N minus the positive against st's negatives (as passage
ids), as the mean overlap of the two sets.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "fret.yaml"
TESTS = ROOT / "tests"


def overrides(args, who: str = "fret") -> list[str]:
    langs = "[" + ", ".join(args.languages.split(",")) + "]"
    engine = ["embed.engine=onnx"] + ([f"embed.batch_size={args.onnx_batch}"] if args.onnx_batch else [])
    engine = engine if who == "fret-onnx" else []
    return engine + ["llm.backend=fake", f"corpus.sources.0.languages={langs}", f"corpus.sources.0.limit={args.docs or 'null'}",
            f"sample.size={args.queries}", f"sample.shard_size={args.queries}",
            f"mine.top_n={args.top_n}", "queries.max_attempts=1"]


def prepare(run_dir: Path, args) -> None:
    """corpus, sample and queries (fake LLM): the inputs both contenders start from."""
    import fakes  # noqa: F401  registers the fake LLM backend
    from fret.core.runner import open_run, run_pipeline
    run_pipeline(open_run(PIPELINE, run_dir, overrides(args)), ["corpus", "sample", "queries"],
                 progress=False)


def texts(run_dir: Path, args) -> tuple[list[dict], list[dict]]:
    """(passages as {id, text}, queries as {id, passage_id, text}) exactly as fret embeds them."""
    from fret.core import shards
    from fret.core.runner import open_run
    from fret.stages.shared.embed import format_passage
    cfg = open_run(PIPELINE, run_dir, overrides(args)).config.embed
    passages = [{"id": r["id"], "text": format_passage(cfg.passage_format, r)}
                for _, rows in shards.iter_stage_rows(run_dir / "corpus") for r in rows]
    queries = [{"id": q["id"], "passage_id": q["passage_id"],
                "text": cfg.query_format.format(task=q["task"], query=q["query"])}
               for _, rows in shards.iter_stage_rows(run_dir / "queries") for q in rows]
    return passages, queries


# ---------------------------------------------------------------- the contenders (child processes)


def export_onnx(run_dir: Path, args) -> None:
    """The one-time export `embed.engine=onnx` does on first use, into the run folder."""
    import resource
    from fret.parts import bundled, onnx_embed
    from fret.parts.embed import fingerprint_dir
    path = bundled.resolve_embedder("default")
    started = time.perf_counter()
    onnx_embed.ensure_exported(path, fingerprint_dir(Path(path)), 256, run_dir / "_cache" / "onnx")
    print(f"onnx export (once, untimed in the rounds): {time.perf_counter() - started:.1f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB "
          f"(a child process)", flush=True)


def child_fret(run_dir: Path, out: Path, args, who: str) -> None:
    from fret.core.runner import open_run, run_pipeline
    started = time.perf_counter()
    run_pipeline(open_run(PIPELINE, run_dir, overrides(args, who)), ["embed", "mine"], progress=False)
    out.write_text(json.dumps({"seconds": time.perf_counter() - started}))


def child_st(run_dir: Path, out: Path, args, use_faiss: bool) -> None:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives
    from fret.parts import bundled
    started = time.perf_counter()
    passages, queries = texts(run_dir, args)
    by_id = {p["id"]: p["text"] for p in passages}
    model = SentenceTransformer(str(bundled.minilm_dir()), device="cpu")
    model.max_seq_length = 256  # what fret's embed stage uses
    data = Dataset.from_dict({"query": [q["text"] for q in queries],
                              "positive": [by_id[q["passage_id"]] for q in queries]})
    mined = mine_hard_negatives(data, model, corpus=[p["text"] for p in passages],
                                num_negatives=args.top_n - 1, range_max=args.top_n,
                                output_format="n-tuple", use_faiss=use_faiss, verbose=False)
    seconds = time.perf_counter() - started
    id_of = {}
    for p in passages:  # duplicate texts: st dedups the corpus, so keep the first id
        id_of.setdefault(p["text"], p["id"])
    columns = [c for c in mined.column_names if c.startswith("negative")]
    # st mines once per distinct query text (all its positives excluded) and drops rows it cannot
    # fill: its rows are matched by their anchor text, not by position
    negatives = {row["query"]: [id_of[row[c]] for c in columns] for row in mined}
    out.write_text(json.dumps({"seconds": seconds, "negatives": negatives}))


# ---------------------------------------------------------------- the parent


def measure(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[3]} child failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def fret_candidates(run_dir: Path, queries: list[dict]) -> dict[str, list[str]]:
    """Query text -> fret's neighbours without any positive of that text (as st counts them)."""
    from fret.core import shards
    text_of = {q["id"]: q["text"] for q in queries}
    positives: dict[str, set] = {}
    for q in queries:
        positives.setdefault(q["text"], set()).add(q["passage_id"])
    out = {}
    for _, rows in shards.iter_stage_rows(run_dir / "mine"):
        for r in rows:
            text = text_of[r["id"]]
            out.setdefault(text, [c for c in r["candidate_ids"] if c not in positives[text]])
    return out


def overlap(fret: dict, st: dict, k: int) -> tuple[float, float]:
    """(mean |fret's first k & st's k| / k, share of identical lists) over st's queries."""
    sets = sum(len(set(fret[q][:k]) & set(ids)) / k for q, ids in st.items()) / len(st)
    return sets, sum(fret[q][:k] == ids for q, ids in st.items()) / len(st)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--languages", default="en,es,fr", help="bundled Wikipedia extracts (~20k passages)")
    ap.add_argument("--docs", type=int, default=None, help="documents per language (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of both contenders")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--st-faiss", action="store_true", help="also time st with use_faiss=True")
    ap.add_argument("--who", default="fret,fret-onnx,st",
                    help="contenders, comma-separated, of fret, fret-onnx, st (the first is the reference)")
    ap.add_argument("--onnx-batch", type=int, default=None,
                    help="embed.batch_size of fret-onnx (default: the stage's, with its 512-token bound)")
    ap.add_argument("--child", nargs=3, metavar=("WHO", "RUN_DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(TESTS))
    if args.child:
        who, run_dir, out = args.child[0], Path(args.child[1]), Path(args.child[2])
        if who.startswith("fret"):
            return child_fret(run_dir, out, args, who)
        return child_st(run_dir, out, args, use_faiss=who == "st-faiss")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    os.environ.update(env)
    who_all = args.who.split(",") + (["st-faiss"] if args.st_faiss else [])
    best: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        prepare(base, args)
        if "fret-onnx" in who_all:
            export_onnx(base, args)
        passages, queries = texts(base, args)
        print(f"{len(passages)} passages, {len(queries)} queries, top {args.top_n}, "
              f"{args.threads} threads; load: {os.getloadavg()[0]:.2f}", flush=True)
        results = {}
        for rep in range(args.repeats):
            for who in (who_all if rep % 2 == 0 else who_all[::-1]):  # interleaved
                run_dir = tmp / f"{who}-{rep}"
                shutil.copytree(base, run_dir)  # fresh: no embed stage, no embedding cache
                out = tmp / f"{who}-{rep}.json"
                argv = [sys.executable, __file__, "--child", who, str(run_dir), str(out),
                        *sys.argv[1:]]
                wall, rss = measure(argv, env)
                inner = json.loads(out.read_text())
                results[who] = (fret_candidates(run_dir, queries) if who.startswith("fret")
                                else inner["negatives"])
                print(f"  round {rep + 1} {who:>8}: wall {wall:7.1f} s (work {inner['seconds']:6.1f} s), "
                      f"peak RSS {rss:7.0f} MiB", flush=True)
                old = best.get(who, (float("inf"),) * 3)
                best[who] = (min(old[0], wall), min(old[1], inner["seconds"]), min(old[2], rss))
                shutil.rmtree(run_dir)
    print(f"\nbest of {args.repeats}     wall s   work s   peak RSS MiB   (load now "
          f"{os.getloadavg()[0]:.2f})")
    for who, (wall, work, rss) in best.items():
        print(f"  {who:>8}   {wall:8.1f} {work:8.1f} {rss:14.0f}")
    frets = [w for w in who_all if w.startswith("fret")]
    for f in frets:
        for o in (w for w in who_all if not w.startswith("fret")):
            print(f"  {o} / {f}: wall {best[o][0] / best[f][0]:.2f}x faster (target >= 1.5), "
                  f"peak RSS {f} / {o} {best[f][2] / best[o][2]:.2f} (target <= 0.5)")
    for i, f in enumerate(frets):
        for o in who_all[i + 1:]:
            sets, same = overlap(results[f], results[o], args.top_n - 1)
            print(f"  agreement of {f} and {o} over {len(results[o])} distinct queries: mean "
                  f"overlap of the {args.top_n - 1} neighbours {sets:.4f}, identical lists {same:.1%}")

if __name__ == "__main__":
    main()
