"""kill -9 trials: `fret run` killed at random moments on every pipeline, then the same command again.

    python benchmarks/killtrials.py                       # 10 timed + 1 aimed kill of each kind
    python benchmarks/killtrials.py --pipelines fret,recipe --trials 3 --json out.json

Per pipeline: one uninterrupted reference run, timed; then each trial starts the same `fret run`
in a fresh run folder at the same path, sends SIGKILL at a seeded random moment (trial i of N
draws from the i-th N-th of the reference's duration, so the moments spread over every stage)
and runs the same command again until it exits 0. Aimed trials (one of each kind by default) go where a timer
rarely lands (the fake LLM answers in microseconds): the process kills itself (a) right after the
backend answered its k-th LLM request, before the batch is committed to the request cache, and
(b) after a shard was renamed into place and before the manifest records it (the k-th shard
record of the run), and in the recipe (c) right after `train` saved its k-th checkpoint; k is
seeded. Every trial then compares with the reference:

- output: every stage's manifest (shard timings and the calls/cached split of LLM usage aside: a
  resumed shard finds some answers in the cache) and every shard's rows, row for row (ids, order,
  all columns), rejects included; every other file of the run folder byte for byte; for `train`,
  the model's tensors with torch.equal;
- rows lost / duplicated: per stage, the reference's row ids missing from the trial / in excess;
- repeated LLM requests, counted at the backend: the tests' fake LLMs (tests/fakes.py,
  tests/e5_fakes.py) append the cache key of every request they answer to a log file. A request
  is *answered* once its answer is committed to the run's request cache; the keys committed at
  the moment of the kill are read from a copy of the cache files. A repeated request is one
  answered by the backend after the kill whose key was committed before it: must be 0. A request
  answered by the backend but killed before its batch was committed is sent again legitimately
  (the answer never reached the run); those are counted apart, as "in flight" (at most one batch
  per kill).

The fakes stand in for the LLM because a trial is about control flow and a real model makes each
run minutes long on 2 CPU cores; tests/test_faults.py runs the real llama.cpp server under faults.
Embedding, FAISS, training (bundled MiniLM) and evaluation are the real ones.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVALDATA = ROOT.parent / "shared" / "evaldata"
REQUEST_LOG = "FRET_FAKE_LLM_LOG"  # read by tests/fakes.py
RERUN_TIMEOUT_S = 1800  # a rerun that hangs is a failed trial, not a stuck campaign
AIM = "KILLTRIALS_AIM"  # an aimed trial: "record K", "request K" or "checkpoint K" (see LAUNCH)

# `fret run` with the tests' fake LLMs registered. An aimed trial wraps one function to SIGKILL the
# process at its k-th call: `record_shard` (the runner's "done" marker, called after the shard's
# rename) before it writes; the fakes' `log_answered` (the backend has answered, the request
# cache has not committed the batch yet) after it logs; the trainer's checkpoint `save` after it
# (in the middle of `train`, which resumes from that checkpoint).
LAUNCH = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
import fakes, e5_fakes
import fret.core.runner as runner
where, _, k = os.environ.get({AIM!r}, "").partition(" ")
calls = []
def die_at_k(call, before):
    def wrapped(*args):
        calls.append(1)
        if before and len(calls) == int(k):
            os.kill(os.getpid(), signal.SIGKILL)
        out = call(*args)
        if not before and len(calls) == int(k):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapped
if where == "record":
    runner.record_shard = die_at_k(runner.record_shard, before=True)
if where == "request":
    fakes.log_answered = e5_fakes.log_answered = die_at_k(fakes.log_answered, before=False)
if where == "checkpoint":
    import fret.parts.train.checkpoint as checkpoint
    checkpoint.save = die_at_k(checkpoint.save, before=False)
from fret.cli import main
sys.exit(main(sys.argv[1:]))
"""

FRET = ["llm.backend=fake", "llm.batch_size=4", "corpus.sources.0.limit=40", "corpus.docs_per_shard=20",
        "sample.size=6", "sample.shard_size=2", "mine.top_n=4", "queries.max_attempts=2"]
E5 = ["llm.backend=e5fake", "llm.batch_size=2", "brainstorm.groups=[short_long,sts,bitext]",
      "examples.languages={en: 2, fr: 1, de: 1}", "examples.max_tasks_per_group=2"]
MLD = ["llm.backend=e5fake", "llm.batch_size=2", "longdocs.min_tokens=3000", "longdocs.docs_per_shard=8",
       "mine.top_n=4"]
MIXTURE = ["convert.datasets.4.limit=200"]


def _list(items: list[str]) -> str:
    """_list(['a=1', 'b=2']) -> '["a=1", "b=2"]' (a --set value holding --set items)"""
    return json.dumps(items)


RECIPE = [f"fret.overrides={_list(FRET)}", f"e5.overrides={_list(E5)}",
          f"multilongdoc.overrides={_list(MLD)}", "convert.datasets.3.limit=100",
          "train.settings.max_steps=4", "train.settings.batch_size=8", "train.settings.mini_batch_size=8",
          "train.settings.checkpoint_every=2",  # a kill in train after step 2 resumes from a checkpoint
          # STS: a retrieval set would encode its whole corpus, the most of a trial's time
          "eval.retrieval=[]", f"eval.sts=[{EVALDATA / 'stsb' / 'sts-test.csv'}]",
          "eval.classification=[]", "eval.limit=40"]
PIPELINES = {"fret": FRET, "e5": E5, "multilongdoc": MLD, "mixture": MIXTURE, "recipe": RECIPE}


def command(pipeline: str, run_dir: Path) -> list[str]:
    argv = [sys.executable, "-c", LAUNCH, "run", str(ROOT / "pipelines" / f"{pipeline}.yaml"),
            "--run-dir", str(run_dir), "--quiet"]
    return argv + [a for s in PIPELINES[pipeline] for a in ("--set", s)]


def environment(log: Path, aim: str = "") -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", REQUEST_LOG: str(log)}
    env.pop(AIM, None)
    if aim:
        env[AIM] = aim
    return env


# --- what is on disk -------------------------------------------------------------------------------

def where(run_dir: Path, pipeline: str) -> str:
    """The stage a run is in (the first not complete), e.g. 'rerank' or 'fret/queries' in a recipe."""
    from fret.core import shards
    from fret.stages import PIPELINES as STAGES
    for stage in STAGES[pipeline]:
        if not shards.load_manifest(run_dir / stage).get("complete"):
            sub = run_dir / "runs" / stage
            if pipeline == "recipe" and sub.is_dir():
                return f"{stage}/{where(sub, stage)}"
            return stage
    return "done"


def committed_keys(run_dir: Path) -> set[str]:
    """Request keys whose answers are committed in the run's request caches (sub-runs' too).

    Read from a copy, so the run folder is left as the kill left it (a WAL file included)."""
    keys: set[str] = set()
    for db in sorted(run_dir.rglob("_cache/*.sqlite")):
        with tempfile.TemporaryDirectory() as tmp:
            for part in db.parent.glob(db.name + "*"):
                shutil.copy(part, tmp)
            con = sqlite3.connect(Path(tmp) / db.name)
            try:
                tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "answers" in tables:  # killed before the cache made its table: nothing committed
                    keys.update(k for (k,) in con.execute("SELECT key FROM answers"))
            finally:
                con.close()
    return keys


def read_log(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _canonical(rows: list[dict]) -> list[str]:
    """Rows as JSON text, so that NaN equals NaN and every column counts."""
    return [json.dumps(r, sort_keys=True, default=str) for r in rows]


def _manifest_view(manifest: dict) -> dict:
    """A manifest without what legitimately changes on a resume: shard timings, and which LLM
    answers came from the cache, with the tokens they cost (a cached answer costs none): of LLM
    usage, `calls` + `cached` is kept as `requests`, and the retries."""
    def entry(e: dict) -> dict:
        e = {k: v for k, v in e.items() if k != "seconds"}
        if "llm" in e:
            llm = e["llm"]
            e["llm"] = {"requests": llm.get("calls", 0) + llm.get("cached", 0), "retries": llm.get("retries", 0)}
        return e
    view = {k: v for k, v in manifest.items() if k not in ("shards", "totals")}
    view["shards"] = {name: entry(e) for name, e in manifest.get("shards", {}).items()}
    view["totals"] = entry(manifest.get("totals", {}))
    return view


def _row_keys(rows: list[dict]) -> Counter:
    return Counter(r["id"] if "id" in r else json.dumps(r, sort_keys=True, default=str) for r in rows)


def _files(run_dir: Path) -> set[str]:
    """Files of a run folder that are output (not the caches, the lock or the shards)."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and "_cache" not in p.parts and p.name != ".lock"}


def _weights_equal(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    if not files:
        return False
    for rel in files:
        x, y = load_file(a / rel), load_file(b / rel) if (b / rel).exists() else {}
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


@dataclass
class Comparison:
    stages: int = 0
    differing: list[str] = field(default_factory=list)  # stages or files that differ
    rows_lost: int = 0
    rows_duplicated: int = 0
    leftovers: list[str] = field(default_factory=list)  # files the reference does not have
    weights_equal: bool | None = None  # the trained model's tensors (recipe only)


def compare(reference: Path, trial: Path) -> Comparison:
    from fret.core import shards
    out = Comparison()
    manifests = {p.parent.relative_to(reference) for p in reference.rglob(shards.MANIFEST)
                 if "_cache" not in p.parts}
    for stage in sorted(manifests):
        out.stages += 1
        ref_m, got_m = shards.load_manifest(reference / stage), shards.load_manifest(trial / stage)
        ref_rows, got_rows, same = [], [], _manifest_view(ref_m) == _manifest_view(got_m)
        for name in sorted(ref_m.get("shards", {})):
            for sub in (Path(name), Path(shards.REJECTS) / name):
                if not (reference / stage / sub).exists():
                    same &= not (trial / stage / sub).exists()
                    continue
                a = shards.read_rows(reference / stage / sub)
                b = shards.read_rows(trial / stage / sub) if (trial / stage / sub).exists() else []
                same &= _canonical(a) == _canonical(b)
                if sub == Path(name):
                    ref_rows += a
                    got_rows += b
        got_rows += [r for name in sorted(set(got_m.get("shards", {})) - set(ref_m.get("shards", {})))
                     for r in shards.read_rows(trial / stage / name)]
        ref_keys, got_keys = _row_keys(ref_rows), _row_keys(got_rows)
        out.rows_lost += sum((ref_keys - got_keys).values())
        out.rows_duplicated += sum((got_keys - ref_keys).values())
        if not same:
            out.differing.append(str(stage))
    ref_files, got_files = _files(reference), _files(trial)
    out.leftovers = sorted(got_files - ref_files)
    for rel in sorted(ref_files):
        if rel.endswith((".parquet", shards.MANIFEST)):
            continue  # compared above, as rows and as manifests
        if rel not in got_files or (reference / rel).read_bytes() != (trial / rel).read_bytes():
            out.differing.append(rel)
    model = reference / "train" / "model"
    if model.is_dir():
        out.weights_equal = _weights_equal(model, trial / "train" / "model")
    return out


# --- the trials ------------------------------------------------------------------------------------

@dataclass
class Trial:
    pipeline: str
    kind: str  # "timed" (SIGKILL from outside at `moment`); aimed: "request", "record", "checkpoint"
    moment: float  # seconds after start (timed), or k: the request or shard record it died at
    killed: bool = False  # False: the run ended before the moment came
    at: str = ""  # the stage it was in when killed
    reruns: list = field(default_factory=list)  # exit codes of the same command, run again ("timeout")
    completed: bool = False
    identical: bool = False
    differing: list[str] = field(default_factory=list)
    rows_lost: int = 0
    rows_duplicated: int = 0
    repeated_requests: int = 0  # committed before the kill, answered again after it
    in_flight_resent: int = 0  # answered by the backend, killed before the commit, sent again
    leftovers: list[str] = field(default_factory=list)
    weights_equal: bool | None = None
    seconds: float = 0.0


@dataclass
class Reference:
    seconds: float
    requests: int
    records: int  # shards recorded in manifests (what a "record" kill picks from)
    checkpoints: int  # training checkpoints saved (what a "checkpoint" kill picks from)


def reference_run(pipeline: str, work: Path) -> Reference:
    run, log = work / "run", work / "reference.log"
    shutil.rmtree(run, ignore_errors=True)
    log.unlink(missing_ok=True)
    started = time.monotonic()
    done = subprocess.run(command(pipeline, run), env=environment(log), cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"reference run of {pipeline} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    keys = read_log(log)
    if len(set(keys)) != len(keys):  # the counting itself: an uninterrupted run asks each request once
        raise RuntimeError(f"{pipeline}: the reference run sent a request twice; repeats cannot be counted")
    from fret.core import shards
    records = sum(len(shards.load_manifest(p.parent).get("shards", {}))
                  for p in run.rglob(shards.MANIFEST) if "_cache" not in p.parts)
    shutil.rmtree(work / "reference", ignore_errors=True)
    run.rename(work / "reference")
    checkpoints = 0
    if pipeline == "recipe":  # `checkpoint_every` steps, the last step aside
        steps = {s.split("=")[0]: int(s.split("=")[1]) for s in RECIPE if s.startswith("train.settings.")}
        checkpoints = (steps["train.settings.max_steps"] - 1) // steps["train.settings.checkpoint_every"]
    return Reference(round(seconds, 1), len(keys), records, checkpoints)


def run_trial(pipeline: str, work: Path, kind: str, moment: float) -> Trial:
    """One kill (timed: SIGKILL after `moment` s; aimed: at the `moment`-th event of its kind), then
    the same command until it exits 0 (at most 3 times), then the comparison."""
    run, log = work / "run", work / "trial.log"
    shutil.rmtree(run, ignore_errors=True)
    log.unlink(missing_ok=True)
    trial = Trial(pipeline, kind, moment)
    argv, started = command(pipeline, run), time.monotonic()
    env = environment(log, aim="" if kind == "timed" else f"{kind} {int(moment)}")
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if kind == "timed":
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            trial.at = where(run, pipeline)  # read before the kill: the stage in progress
            proc.send_signal(signal.SIGKILL)
    proc.communicate()
    trial.killed = proc.returncode == -signal.SIGKILL
    if kind != "timed" and trial.killed:
        trial.at = where(run, pipeline)
    if not trial.killed and proc.returncode != 0:
        trial.reruns.append(proc.returncode)
    committed, before = committed_keys(run), len(read_log(log))
    while len(trial.reruns) < 3 and not trial.completed:
        try:
            done = subprocess.run(argv, env=environment(log), cwd=ROOT, capture_output=True, text=True,
                                  timeout=RERUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            trial.reruns.append("timeout")
            continue
        trial.reruns.append(done.returncode)
        trial.completed = done.returncode == 0
    trial.seconds = round(time.monotonic() - started, 1)
    answered = read_log(log)
    trial.repeated_requests = sum(k in committed for k in answered[before:])
    trial.in_flight_resent = len(answered) - len(set(answered)) - trial.repeated_requests
    if trial.completed:
        c = compare(work / "reference", run)
        trial.differing, trial.leftovers, trial.weights_equal = c.differing, c.leftovers, c.weights_equal
        trial.rows_lost, trial.rows_duplicated = c.rows_lost, c.rows_duplicated
        trial.identical = not c.differing
    return trial


def _children_cpu() -> float:
    """CPU seconds of the finished `fret` processes (wall time on a shared machine says little)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def moments(duration: float, n: int, rng: random.Random) -> list[float]:
    """n moments in (0, duration), the i-th drawn from the i-th n-th: spread, and seeded."""
    return [round(duration * (i + rng.random()) / n, 2) for i in range(n)]


def campaign(pipelines: list[str], trials: int, aimed: int, seed: int, work: Path,
             echo=print, save=lambda results: None) -> dict:
    """Every pipeline's reference run and trials; `save(results)` after each trial."""
    results = {"seed": seed, "trials": trials, "aimed": aimed, "pipelines": {}}
    for pipeline in pipelines:
        rng = random.Random(f"{seed}-{pipeline}")
        pdir = work / pipeline
        pdir.mkdir(parents=True, exist_ok=True)
        started, cpu = time.monotonic(), _children_cpu()
        ref = reference_run(pipeline, pdir)
        echo(f"{pipeline}: reference {ref.seconds} s, {ref.requests} LLM requests, {ref.records} shard records")
        # aimed kills first (a campaign cut short has them), each kind where the run has its event
        counts = {"request": ref.requests, "record": ref.records, "checkpoint": ref.checkpoints}
        plan = [(kind, rng.randint(1, n)) for kind, n in counts.items() if n for _ in range(aimed)]
        plan += [("timed", t) for t in moments(ref.seconds, trials, rng)]
        entry = results["pipelines"][pipeline] = {"reference": asdict(ref), "trials": [], "seconds": ref.seconds,
                                                  "cpu_seconds": round(_children_cpu() - cpu, 1)}
        for kind, moment in plan:
            t = run_trial(pipeline, pdir, kind, moment)
            entry["trials"].append(asdict(t))
            echo(f"  {kind:>7} {moment:>7}: killed={t.killed!s:5} at={t.at or '-':22} reruns={t.reruns} "
                 f"identical={t.identical} lost={t.rows_lost} dup={t.rows_duplicated} "
                 f"repeated={t.repeated_requests} in_flight={t.in_flight_resent}"
                 + (f" weights_equal={t.weights_equal}" if t.weights_equal is not None else "")
                 + (f" differing={t.differing}" if t.differing else "")
                 + (f" leftovers={len(t.leftovers)}" if t.leftovers else ""))
            entry.update(seconds=round(time.monotonic() - started, 1),
                         cpu_seconds=round(_children_cpu() - cpu, 1))
            save(results)  # after every trial: a long campaign cut short keeps what it measured
    return results


def summary(results: dict) -> list[dict]:
    rows = []
    for pipeline, r in results["pipelines"].items():
        trials = r["trials"]
        weights = [t["weights_equal"] for t in trials if t["weights_equal"] is not None]
        rows.append({
            "pipeline": pipeline, "trials": len(trials), "kills": sum(t["killed"] for t in trials),
            "completed": sum(t["completed"] for t in trials),
            "identical": sum(t["identical"] for t in trials),
            "rows_lost": sum(t["rows_lost"] for t in trials),
            "rows_duplicated": sum(t["rows_duplicated"] for t in trials),
            "repeated_requests": sum(t["repeated_requests"] for t in trials),
            "in_flight_resent": sum(t["in_flight_resent"] for t in trials),
            "leftover_files": sum(len(t["leftovers"]) for t in trials),
            "weights_equal": f"{sum(weights)}/{len(weights)}" if weights else "",
            "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]})
    return rows


def table(rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else []
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def doc_rows(rows: list[dict]) -> str:
    """The summary as rows of docs/reliability.md's table of every test."""
    lines = []
    for r in rows:
        weights = f"; trained weights equal (torch.equal) in {r['weights_equal']}" if r["weights_equal"] else ""
        lines.append(
            f"| kill -9 trials: {r['pipeline']} (*slow*) | {r['trials']} ({r['kills']} killed) | SIGKILL at a "
            f"random moment, after an answered LLM request, between a shard's rename and its record | "
            f"{r['completed']}/{r['trials']}, {r['identical']} identical to uninterrupted{weights} | "
            f"{r['rows_lost']} | {r['rows_duplicated']} | {r['repeated_requests']} ({r['in_flight_resent']} in "
            f"flight, resent legitimately) | `python benchmarks/killtrials.py --pipelines {r['pipeline']}` |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated, of " + ", ".join(PIPELINES))
    ap.add_argument("--trials", type=int, default=10, help="timed kills per pipeline")
    ap.add_argument("--aimed", type=int, default=1, help="aimed kills of each kind: after an answered LLM "
                    "request, between a shard's rename and its record, after a training checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="a scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write every trial and the table here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fret-killtrials-"))
    started = time.monotonic()

    def save(results: dict) -> None:
        results.update(summary=summary(results), seconds=round(time.monotonic() - started, 1))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    results = campaign(args.pipelines.split(","), args.trials, args.aimed, args.seed, work,
                       echo=lambda line: print(line, flush=True), save=save)
    save(results)
    print(table(results["summary"]))
    print(doc_rows(results["summary"]))
    print(f"{results['seconds']} s in all; work folder {work}")
    bad = [r for r in results["summary"] if r["identical"] != r["trials"] or r["rows_lost"]
           or r["rows_duplicated"] or r["repeated_requests"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
