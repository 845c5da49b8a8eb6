"""What the embedded default LLM yields in each pipeline's demo, with and without constrained decoding.

Runs the LLM stage of each shipped demo pipeline on the bundled SmolLM2-135M-Instruct twice, on the
same inputs: once as shipped (each stage sends its constraint: FRet `queries` and MultiLongDoc
`questions` a regular expression, E5 `brainstorm` and `examples` a JSON schema) and once with the
constraint off (`regex=null` / `json_schema=false`). Then it reads the stage's manifest and shards
and prints what issue 11 asks to see:

- fret: `task_defaulted` (answers without a task line), the share of answers rejected for copying
  the passage, queries kept;
- e5: valid examples per task group, the share of `examples` requests valid on the first attempt
  (brainstorm runs once, constrained, so both halves write examples for the same tasks);
- mld: the share of answers that are one question (valid on parsing), rejects by reason.

    python benchmarks/bench_demo_quality.py [--pipelines fret,e5,mld] [--work /tmp/fret-bench-demo]

Only the command line and the run folders are used, exactly as a user would. Not a test: it takes
minutes per pipeline on a CPU. Writes RESULTS.json in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
FRET = [sys.executable, "-m", "fret.cli"]

# pipeline -> (file, stages before the LLM stage, the LLM stage, the setting that turns its constraint off)
DEMOS = {
    "fret": ("fret.yaml", ["corpus", "sample"], "queries", ["queries.regex=null"]),
    "e5": ("e5.yaml", ["brainstorm"], "examples", ["examples.json_schema=false"]),
    "mld": ("multilongdoc.yaml", ["longdocs"], "questions", ["questions.regex=null"]),
}


def generate(pipeline: Path, stage: str, run: Path, sets: list[str]) -> None:
    cmd = [*FRET, "generate", stage, str(pipeline), "--run-dir", str(run), "--quiet"]
    subprocess.run(cmd + [x for s in sets for x in ("--set", s)], check=True)


def stage_rows(run: Path, stage: str) -> list[dict]:
    import pyarrow.parquet as pq
    return [r for shard in sorted((run / stage).glob("part-*.parquet")) for r in pq.read_table(shard).to_pylist()]


def stage_counts(run: Path, stage: str) -> tuple[Counter, int, int]:
    """(summed counts incl. rejects by reason, rows in, rows out) from the stage's manifest."""
    manifest = json.loads((run / stage / "_manifest.json").read_text())
    counts, rows_in, rows_out = Counter(), 0, 0
    for shard in manifest["shards"].values():
        counts.update(shard.get("counts", {}))
        counts.update({f"rejected_{k}": v for k, v in shard.get("rejected", {}).items()})
        rows_in += shard["rows_in"]
        rows_out += shard["rows_out"]
    return counts, rows_in, rows_out


def measure(name: str, run: Path, stage: str) -> dict:
    counts, rows_in, rows_out = stage_counts(run, stage)
    rows = stage_rows(run, stage)
    answers = counts.get("attempts", 0)
    retries = {k: v for k, v in counts.items() if k.startswith("retry_")}
    out = {"requests": rows_in, "kept": rows_out, "answers": answers,
           "valid_answers": answers - sum(retries.values()) - counts.get("prompt_too_long", 0),
           "first_attempt_valid": counts.get("first_valid", 0),
           "retries_by_reason": retries,
           "rejected_by_reason": {k[9:]: v for k, v in counts.items() if k.startswith("rejected_")}}
    if name == "fret":
        out["task_defaulted"] = counts.get("task_defaulted", 0)
        out["copies_passage"] = retries.get("retry_copies_passage", 0)
    if name == "e5":
        out["valid_by_group"] = dict(sorted(Counter(r["group"] for r in rows).items()))
        # First attempts that parsed and met the schema: the valid ones and those that failed
        # only the language check (the model's skill, counted apart).
        out["first_attempt_parsed"] = counts.get("first_valid", 0) + sum(
            n for k, n in counts.items() if k.startswith("first_invalid_wrong_language"))
        out["first_attempt_invalid_by_reason"] = {k[14:]: n for k, n in counts.items()
                                                  if k.startswith("first_invalid_")}
        out["language_retries"] = sum(n for k, n in retries.items() if "wrong_language" in k)
    return out


def run_demo(name: str, work: Path, kinds: list[str], before_results: dict) -> dict:
    file, before, stage, off = DEMOS[name]
    pipeline = ROOT / "pipelines" / file
    on_run, off_run = work / f"{name}-on", work / f"{name}-off"
    for s in before:
        generate(pipeline, s, on_run, [])
    if not (off_run / before[-1] / "_manifest.json").exists():
        shutil.rmtree(off_run, ignore_errors=True)
        shutil.copytree(on_run, off_run, ignore=shutil.ignore_patterns(stage, ".lock"))
    out = dict(before_results)
    if "constrained" in kinds:
        generate(pipeline, stage, on_run, [])
        out["constrained"] = measure(name, on_run, stage)
    if "free" in kinds:
        generate(pipeline, stage, off_run, off)
        out["free"] = measure(name, off_run, stage)
    return out


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f}%)" if whole else "0/0"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/fret-bench-demo"))
    p.add_argument("--pipelines", default="fret,e5,mld")
    p.add_argument("--kinds", default="free,constrained",
                   help="which halves to (re)run; the other's last result is kept")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "RESULTS.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.pipelines.split(","):
        results[name] = run_demo(name, args.work, args.kinds.split(","), results.get(name, {}))
        results_path.write_text(json.dumps(results, indent=2))
    for name, both in results.items():
        print(f"\n== {name} ({DEMOS[name][2]}) ==")
        for kind in ("free", "constrained"):
            if kind not in both:
                continue
            r = both[kind]
            line = (f"{kind:<12} kept {share(r['kept'], r['requests'])}, valid on first attempt "
                    f"{share(r['first_attempt_valid'], r['requests'])}, valid answers "
                    f"{share(r['valid_answers'], r['answers'])}")
            if name == "fret":
                line += f", task_defaulted {r['task_defaulted']}, copies passage {share(r['copies_passage'], r['answers'])}"
            print(line)
            if name == "e5":
                print(f"{'':<12} valid by group {r['valid_by_group']}; first attempt parsed and "
                      f"schema-valid: {share(r['first_attempt_parsed'], r['requests'])} (invalid by "
                      f"reason {r['first_attempt_invalid_by_reason']}); retries for the wrong "
                      f"language {r['language_retries']}")
            print(f"{'':<12} retries {r['retries_by_reason']} rejected {r['rejected_by_reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
