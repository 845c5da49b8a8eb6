"""The Ray executor on a real local Ray (one cluster for the session: 2 CPUs, 2 logical GPUs).

Same output as the local executor, row for row; manifests equal but for timings and who made
each shard; a worker killed mid-shard; the driver killed and resumed; placement on (logical)
GPUs; sharded-index mining equal to one index. The LLM is the fake of tests/fakes.py (control
flow); workers import it because the executor ships the backend's module name to them.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import fakes  # noqa: E402,F401  (registers the fake backends in this process)
import e5_fakes  # noqa: E402,F401
from fret.core import shards  # noqa: E402
from fret.cli import main  # noqa: E402
from fret.core.executor_settings import ExecutorSettings  # noqa: E402
from fret.core.executors import make_executor  # noqa: E402
from fret.core.runner import open_run, run_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
FRET = ROOT / "pipelines" / "fret.yaml"
E5 = ROOT / "pipelines" / "e5.yaml"
# One thread per model worker (and in the local run): two 1-CPU actors fit the 2-CPU cluster.
SMALL = ["llm.backend=fake", "corpus.sources.0.limit=120", "sample.size=12", "sample.shard_size=4",
         "mine.top_n=5", "queries.max_attempts=2", "executor.threads=1"]
E5_SMALL = ["llm.backend=e5fake", "examples.languages={en: 2, fr: 1, de: 1}"]
WHO = ("seconds", "node", "host", "worker", "gpus", "retries", "lost")  # may differ between two runs


@pytest.fixture(scope="session")
def cluster():
    # Workers inherit this environment: they import fret from this tree and the fakes from tests/.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, num_gpus=2, resources={"accel": 2}, include_dashboard=False,
             logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def run(run_dir, pipeline, overrides, executor="local", stages=None):
    ctx = open_run(pipeline, run_dir, overrides)
    run_one, close = make_executor(ctx.config.executor, executor)
    try:
        return run_pipeline(ctx, stages, progress=False, run_one=run_one)
    finally:
        close()


def rows_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for _, rows in shards.iter_stage_rows(run_dir / stage) for r in rows]


def manifest_without_who(run_dir: Path, stage: str) -> dict:
    m = shards.load_manifest(run_dir / stage)
    m["shards"] = {k: {f: v for f, v in e.items() if f not in WHO} for k, e in m["shards"].items()}
    m["totals"] = {f: v for f, v in m["totals"].items() if f not in WHO}
    return m


def assert_same_run(a: Path, b: Path, stages, manifests: bool = True) -> None:
    """Rows equal; manifests too, but for timings and who made each shard (unless a crash made
    one run take some answers from the cache: then its LLM counts differ, as locally)."""
    for stage in stages:
        assert rows_of(a, stage) == rows_of(b, stage), stage
        if manifests:
            assert manifest_without_who(a, stage) == manifest_without_who(b, stage), stage


@pytest.fixture(scope="module")
def local_fret(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("local")
    run(run_dir, FRET, SMALL)
    return run_dir


FRET_STAGES = ("corpus", "sample", "queries", "embed", "mine", "rerank", "export")


@pytest.mark.slow  # a real Ray cluster: about a minute or two each on 2 cores
def test_fret_under_ray_equals_local(cluster, local_fret, tmp_path):
    results = run(tmp_path, FRET, SMALL + ["executor.stages.rerank={workers: 2}"], executor="ray")
    assert_same_run(local_fret, tmp_path, FRET_STAGES)
    rerank = shards.load_manifest(tmp_path / "rerank")["shards"]
    assert all(e["node"] and e["worker"] for e in rerank.values())
    # A pool of up to two actors: the second gets shards once built (none waits on a starting one).
    assert len({e["worker"] for e in rerank.values()}) <= 2
    # One actor made the model stages before it, one after the other, keeping its models.
    made_by = {s: {e["worker"] for e in shards.load_manifest(tmp_path / s)["shards"].values()}
               for s in ("queries", "embed", "mine")}
    assert len(made_by["queries"]) == 1 and made_by["queries"] == made_by["embed"] == made_by["mine"]
    assert made_by["mine"] <= {e["worker"] for e in rerank.values()}
    # export (no model) ran on those held actors instead of ending them for plain tasks.
    export = shards.load_manifest(tmp_path / "export")["shards"].values()
    assert {e["worker"] for e in export} <= {e["worker"] for e in rerank.values()}
    # One cache file per actor that asked the LLM.
    assert len(list((tmp_path / "_cache").glob("llm-*.sqlite"))) == len({e["worker"] for e in rerank.values()})
    assert results["export"]["totals"]["rows_out"] == 12
    # A rerun plans nothing: every shard is done under the same settings hash.
    before = (tmp_path / "rerank" / shards.MANIFEST).read_text()
    run(tmp_path, FRET, SMALL, executor="ray")
    assert (tmp_path / "rerank" / shards.MANIFEST).read_text() == before


@pytest.mark.slow  # a real Ray cluster: about a minute or two each on 2 cores
def test_e5_under_ray_equals_local(cluster, tmp_path):
    run(tmp_path / "local", E5, E5_SMALL)
    run(tmp_path / "ray", E5, E5_SMALL, executor="ray")
    assert rows_of(tmp_path / "local", "examples")
    assert_same_run(tmp_path / "local", tmp_path / "ray", ("brainstorm", "examples", "export"))


@pytest.mark.slow  # a real Ray cluster: about a minute or two each on 2 cores
def test_worker_killed_mid_shard_is_retried_and_output_identical(cluster, local_fret, tmp_path):
    marker = tmp_path / "killed"
    # The queries actor kills itself (SIGKILL) at its 6th request: in the middle of shard 1.
    kill = [f"llm.extra={{kill_once: {{marker: '{marker}', after: 6}}}}"]
    run(tmp_path / "run", FRET, SMALL + kill, executor="ray")
    assert marker.exists()
    assert_same_run(local_fret, tmp_path / "run", FRET_STAGES, manifests=False)
    workers = {e["worker"] for e in shards.load_manifest(tmp_path / "run" / "queries")["shards"].values()}
    assert len(workers) == 2  # shard 0 by the first actor process, the rest by its restart
    # No answered request was sent again: every answer is in exactly one worker's cache file
    # (the killed worker's file included), none twice.
    keys = []
    for path in (tmp_path / "run" / "_cache").glob("llm-*.sqlite"):
        with sqlite3.connect(path) as db:
            keys += [k for (k,) in db.execute("SELECT key FROM answers")]
    assert len(keys) == len(set(keys)) > 0
    # The killed worker's file is kept beside its restart's (which went on to rerank as well).
    assert len(list((tmp_path / "run" / "_cache").glob("llm-*.sqlite"))) == 2


@pytest.mark.slow  # a real Ray cluster: about a minute or two each on 2 cores
def test_actor_ended_by_ray_kill_is_replaced_and_output_identical(cluster, local_fret, tmp_path):
    run_dir = tmp_path / "run"
    killed = []

    def kill_the_rerank_actor():  # once it has made a shard: ray.kill, no restart
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            # The live actors of this driver: the one making rerank's shards, then.
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].startswith(f"fret-{os.getpid()}-")]
            if names and shards.load_manifest(run_dir / "rerank").get("shards"):
                ray.kill(ray.get_actor(names[0], namespace=None))
                killed.append(names[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_rerank_actor, daemon=True)
    killer.start()
    run(run_dir, FRET, SMALL + ["llm.extra={delay: 0.05}"], executor="ray")
    killer.join()
    assert killed
    assert_same_run(local_fret, run_dir, FRET_STAGES, manifests=False)
    workers = {e["worker"] for e in shards.load_manifest(run_dir / "rerank")["shards"].values()}
    assert len(workers) == 2  # the killed actor's shards, then its replacement's


@pytest.mark.slow  # a real Ray cluster: about a minute or two each on 2 cores
def test_app_error_fails_like_local_and_keeps_finished_shards(cluster, local_fret, tmp_path):
    # A word of a passage in the last queries shard: the fake backend raises on it (bad input).
    sample = rows_of(local_fret, "sample")
    earlier = " ".join(r["text"] for r in sample[:-1])
    word = max((w for w in sample[-1]["text"].split() if w not in earlier and "'" not in w), key=len)
    bad = [f"llm.extra={{fail_on: '{word}'}}"]
    with pytest.raises(ValueError) as local:
        run(tmp_path / "local", FRET, SMALL + bad)
    with pytest.raises(ValueError) as remote:
        run(tmp_path / "ray", FRET, SMALL + bad, executor="ray")
    assert str(remote.value) == str(local.value)
    done = shards.load_manifest(tmp_path / "ray" / "queries")["shards"]
    assert done and set(done) == set(shards.load_manifest(tmp_path / "local" / "queries")["shards"])


@pytest.mark.slow  # a real Ray cluster: about a minute or two each on 2 cores
def test_placement_on_logical_gpus_and_custom_resources(cluster, local_fret, tmp_path):
    placed = SMALL + ["executor.stages.rerank={num_gpus: 1, workers: 2}",
                      "executor.stages.embed={num_gpus: 1, resources: {accel: 1}}",
                      "executor.stages.export={workers: 3}"]
    run(tmp_path, FRET, placed, executor="ray")
    entries = shards.load_manifest(tmp_path / "rerank")["shards"].values()
    by_worker = {e["worker"]: tuple(e["gpus"]) for e in entries}
    # export asks for more workers than rerank's pool holds: plain tasks, no GPU.
    export = shards.load_manifest(tmp_path / "export")["shards"].values()
    assert not {e["worker"] for e in export} & set(by_worker) and not any("gpus" in e for e in export)
    assert len(by_worker) == 2
    assert sorted(g for gpus in by_worker.values() for g in gpus) == ["0", "1"]  # one GPU each
    assert all(len(e["gpus"]) == 1 for e in shards.load_manifest(tmp_path / "embed")["shards"].values())
    assert rows_of(tmp_path, "export") == rows_of(local_fret, "export")
    too_big = SMALL + ["executor.stages.corpus={num_gpus: 3}"]
    with pytest.raises(Exception, match="can hold a worker of 1 CPU, 3 GPU"):
        run(tmp_path / "big", FRET, too_big, executor="ray")


def test_executor_block_is_validated(tmp_path, capsys):
    code = main(["run", str(FRET), "--run-dir", str(tmp_path), "--quiet",
                 "--set", "executor.stages.nope={workers: 2}"])
    assert code == 2 and "executor.stages.nope: unknown stage" in capsys.readouterr().err
    code = main(["run", str(FRET), "--run-dir", str(tmp_path), "--quiet",
                 "--set", "executor.stages.rerank={workers: 0}"])
    assert code == 2 and "executor.stages.rerank.workers" in capsys.readouterr().err


def test_without_ray_one_line_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    code = main(["run", str(FRET), "--run-dir", str(tmp_path), "--quiet", "--executor", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'fret[ray]'" in err  # checked before work


def test_sharded_index_search_equals_one_index():
    from fret.parts.index import build_index
    from fret.parts.sharded_index import merge_topk, search_sharded
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    queries = rng.normal(size=(64, 32)).astype(np.float32)
    one = build_index(vectors).search(queries, 25)
    for rows in (7, 300, 1999, 5000):
        sharded = search_sharded(queries, 2000, rows, lambda lo, hi: vectors[lo:hi], 25)
        assert np.array_equal(one[1], sharded[1]) and np.array_equal(one[0], sharded[0]), rows
    # Ties go to the lower index; empty slots last.
    s, i = merge_topk([(np.array([[1.0, -np.inf]]), np.array([[5, -1]])),
                       (np.array([[1.0, 0.5]]), np.array([[2, 3]]))], 3)
    assert i.tolist() == [[2, 5, 3]]


@pytest.mark.slow
def test_mine_stage_with_a_sharded_index_equals_one_index(local_fret, tmp_path):
    # The mine stage itself, with a corpus index cut into shards of 17 passages.
    run(tmp_path, FRET, SMALL + ["mine.index_shard_rows=17"], stages=list(FRET_STAGES[:4]) + ["mine"])
    assert rows_of(tmp_path, "mine") == rows_of(local_fret, "mine")


@pytest.mark.slow
def test_driver_killed_then_same_command_resumes_identical(cluster, local_fret, tmp_path):
    sets = [a for s in SMALL + ["llm.extra={delay: 0.02}"] for a in ("--set", s)]
    cli = "import sys, fakes; from fret.cli import main; sys.exit(main(sys.argv[1:]))"  # + fake LLM
    cmd = [sys.executable, "-c", cli, "run", str(FRET), "--run-dir", str(tmp_path), "--quiet",
           "--executor", "ray", "--ray-address", cluster, *sets]
    env = dict(os.environ)
    driver = subprocess.Popen(cmd, cwd=TESTS, env=env)
    deadline = time.monotonic() + 300
    while not shards.load_manifest(tmp_path / "rerank").get("shards"):
        assert driver.poll() is None and time.monotonic() < deadline, "rerank never started"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not shards.load_manifest(tmp_path / "rerank").get("complete")
    subprocess.run(cmd, cwd=TESTS, env=env, check=True, timeout=600)
    assert_same_run(local_fret, tmp_path, FRET_STAGES, manifests=False)


def test_a_vllm_engine_is_released_before_a_stage_without_the_llm(tmp_path, monkeypatch):
    # An actor serving one stage after another keeps its models, except a vLLM engine, which
    # holds most of its GPU's memory: it goes before a stage that does not use the LLM.
    import torch
    from fret.core.ray_executor import worker_spec
    from fret.core.ray_worker import ShardWorker
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS",
                "TOKENIZERS_PARALLELISM"):  # the worker sizes threads for itself: restore ours after
        monkeypatch.setenv(var, os.environ.get(var, ""))
    threads = torch.get_num_threads()
    closed = []

    class LoadedEngine:  # stands in for the actor's vLLM backend: records its release
        def close(self):
            closed.append(True)

    try:
        worker = ShardWorker(worker_spec(open_run(FRET, tmp_path, SMALL + ["llm.backend=vllm"]), 1))
        worker.ctx._llm = LoadedEngine()
        entry = worker.process("corpus", 0)
    finally:
        torch.set_num_threads(threads)
    assert entry["rows_out"] > 0 and closed == [True] and worker.ctx._llm is None
