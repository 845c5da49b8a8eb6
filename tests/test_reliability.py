"""The run machinery under damage and misuse: corrupt shards and manifests, two writers on one
run folder, errors and exit codes of the command line, empty stages, refused settings.

Real Parquet files and real `fret` processes on a tiny corpus + sample pipeline (no LLM, no
model); fakes only to inject a failure (an exception at a chosen point).
"""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fret import __version__
from fret.core import shards
from fret.cli import main

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "fret.yaml"
TINY = ["corpus.sources.0.limit=90", "corpus.docs_per_shard=30", "sample.size=6", "sample.shard_size=3"]


def fret(*args, overrides=TINY) -> int:
    """`fret ARGS --set ...` in this process (as the console script calls it)."""
    return main([*map(str, args), "--quiet", *sum((["--set", s] for s in overrides), [])])


def gen(stage, run_dir, *extra, overrides=TINY) -> int:
    return fret("generate", stage, PIPELINE, "--run-dir", run_dir, *extra, overrides=overrides)


def err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def stage_rows(run_dir: Path, stage: str) -> list[dict]:
    return [r for _, rows in shards.iter_stage_rows(run_dir / stage) for r in rows]


@pytest.fixture
def run_dir(tmp_path, capsys):
    """A finished corpus (3 shards) and sample stage."""
    assert gen("corpus", tmp_path) == 0 and gen("sample", tmp_path) == 0
    capsys.readouterr()
    return tmp_path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def fewer_rows(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)


def flip_byte(path: Path) -> None:
    """One byte flipped inside the first data page: same size, footer intact."""
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate, "deleted": Path.unlink, "one row short": fewer_rows}
# What only the checksum sees; verified once per command for every stage it plans or reads, and
# in `fret report`.
ALTERED = {**DAMAGE, "byte flipped": flip_byte}


# --- corrupt shards -------------------------------------------------------------------------------

def test_manifest_records_size_and_checksum_of_every_shard(run_dir):
    for stage in ("corpus", "sample"):
        entries = shards.load_manifest(run_dir / stage)["shards"]
        assert len(entries) >= 2
        for name, entry in entries.items():
            assert (entry["bytes"], entry["sha256"]) == shards.file_digest(run_dir / stage / name)


@pytest.mark.parametrize("damage", ALTERED)
def test_damaged_shard_of_the_resumed_stage_is_redone(run_dir, capsys, damage):
    before = stage_rows(run_dir, "corpus")
    shard = run_dir / "corpus" / "part-00001.parquet"
    ALTERED[damage](shard)
    assert gen("corpus", run_dir) == 0
    err = err_lines(capsys)
    assert len(err) == 1 and "warning" in err[0] and str(shard) in err[0] and "redoing" in err[0]
    assert stage_rows(run_dir, "corpus") == before  # the same rows, nothing lost or duplicated
    assert shards.load_manifest(run_dir / "corpus")["complete"]


def test_temporary_files_of_a_killed_attempt_are_swept_on_resume(run_dir):
    """A kill during a write leaves NAME.PID-RANDOM.tmp; the next command removes it."""
    stray = [run_dir / "corpus" / "part-00001.parquet.4242-deadbeef.tmp",
             run_dir / "corpus" / shards.REJECTS / "part-00001.parquet.4242-deadbeef.tmp"]
    for path in stray:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a shard")
    before = stage_rows(run_dir, "corpus")
    assert gen("corpus", run_dir) == 0
    assert not any(path.exists() for path in stray) and stage_rows(run_dir, "corpus") == before


@pytest.mark.parametrize("damage", ALTERED)
def test_damaged_upstream_stops_before_restart_deletes_anything(run_dir, capsys, damage):
    sample_before = stage_rows(run_dir, "sample")
    shard = run_dir / "corpus" / "part-00002.parquet"
    ALTERED[damage](shard)
    assert gen("sample", run_dir, "--restart") == 1
    err = err_lines(capsys)
    assert len(err) == 1 and str(shard) in err[0] and f"fret generate corpus {PIPELINE}" in err[0]
    assert "Traceback" not in err[0]
    assert stage_rows(run_dir, "sample") == sample_before  # the good output is still there
    # The fix the message gives: redo the damaged corpus shard; sample is then sound as it was.
    assert gen("corpus", run_dir) == 0 and gen("sample", run_dir) == 0
    assert stage_rows(run_dir, "sample") == sample_before


def test_shard_damaged_inside_a_data_page_is_named_when_read(run_dir, capsys):
    """The footer check cannot see flipped bytes in a data page; the read names the file."""
    shard = run_dir / "corpus" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[4:200] = os.urandom(196)  # the first column chunk, footer intact
    shard.write_bytes(bytes(data))
    with pytest.raises(shards.ShardError, match="part-00000.parquet: cannot read this shard"):
        shards.read_rows(shard)


def test_corrupt_manifest_is_one_line_naming_it(run_dir, capsys):
    manifest = run_dir / "corpus" / shards.MANIFEST
    manifest.write_text(manifest.read_text()[:100])
    for command in (lambda: gen("sample", run_dir), lambda: main(["report", str(run_dir)])):
        code, err = command(), err_lines(capsys)
        assert code == 1 and len(err) == 1 and str(manifest) in err[0] and "--restart" in err[0]
    assert gen("corpus", run_dir, "--restart") == 0 and gen("sample", run_dir) == 0


@pytest.mark.parametrize("damage", ALTERED)
def test_report_names_a_damaged_shard(run_dir, capsys, damage):
    shard = run_dir / "sample" / "part-00001.parquet"
    ALTERED[damage](shard)
    assert main(["report", str(run_dir)]) == 1
    err = err_lines(capsys)
    assert len(err) == 1 and str(shard) in err[0] and "fret generate sample" in err[0]


# --- one writer per run folder --------------------------------------------------------------------

HOLDER = """
import sys, time
import fret.core.runner
def hold(ctx, *args, **kwargs):  # injected: the command holds the folder and does no work
    print("holding", flush=True)
    time.sleep(60)
fret.core.runner.run_pipeline = hold
from fret.cli import main
sys.exit(main(sys.argv[1:]))
"""


def fret_process(*args, holder=False) -> subprocess.Popen:
    cmd = [sys.executable, "-c", HOLDER] if holder else [sys.executable, "-m", "fret.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([*cmd, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def test_second_writer_stops_at_once_naming_the_holder_and_kill_9_leaves_no_lock(run_dir):
    sets = sum((["--set", s] for s in TINY), [])
    holder = fret_process("run", PIPELINE, "--run-dir", run_dir, *sets, holder=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        second = fret_process("generate", "corpus", PIPELINE, "--run-dir", run_dir, *sets)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1 and time.monotonic() - started < 30
        assert err.strip().splitlines() == [
            f"fret: error: run folder {run_dir} is in use by another fret command (pid {holder.pid}); "
            "wait for it to finish (or stop it), then run this again"]
        report = fret_process("report", run_dir)  # read-only: works while the run holds the folder
        out, err = report.communicate(timeout=60)
        assert report.returncode == 0 and "corpus" in out, err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    after = fret_process("generate", "sample", PIPELINE, "--run-dir", run_dir, *sets, "--quiet")
    out, err = after.communicate(timeout=60)
    assert after.returncode == 0, err  # the lock died with its holder


LOCK_HOLDER = """
import sys, time
from fret.core.lock import folder_lock
with folder_lock(sys.argv[1], "output folder"):  # what a running `fret train` holds
    print("holding", flush=True)
    time.sleep(60)
"""


def test_second_train_on_one_output_stops_at_once_and_a_killed_holders_lock_is_taken_over(tmp_path):
    from test_train_cli import FAST, wiki_articles, write_unified
    data, out = write_unified(tmp_path / "export", wiki_articles(n=16)), tmp_path / "model"
    argv = ["train", "--data", data, "--output", out, *sum((["--set", s] for s in [*FAST, "max_steps=1"]), [])]
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        second = fret_process(*argv)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1 and time.monotonic() - started < 30
        assert err.strip().splitlines() == [
            f"fret: error: output folder {out} is in use by another fret command (pid {holder.pid}); "
            "wait for it to finish (or stop it), then run this again"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    after = fret_process(*argv)  # the killed holder's lock is taken over
    _, err = after.communicate(timeout=600)
    assert after.returncode == 0, err
    assert (out / "fret_training.json").is_file()


# --- disk full, unwritable -----------------------------------------------------------------------

def stage_files(stage_dir: Path) -> dict[str, bytes]:
    """Every file of a stage but its manifest (which holds timings), and the sizes and checksums
    the manifest recorded."""
    files = {str(p.relative_to(stage_dir)): p.read_bytes() for p in sorted(stage_dir.rglob("*"))
             if p.is_file() and p.name != shards.MANIFEST}
    entries = shards.load_manifest(stage_dir)["shards"]
    return {**files, "checks": {n: (e["bytes"], e["sha256"]) for n, e in entries.items()}}


def file_size_limit(limit: int):
    """preexec_fn: a write past `limit` bytes fails with EFBIG (SIGXFSZ ignored, as a shell's
    `ulimit -f` with the signal trapped) instead of killing the process."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_stops_the_stage_in_one_line_and_the_rerun_finishes_identically(tmp_path):
    assert gen("corpus", tmp_path / "ref") == 0  # uninterrupted
    run_dir, sets = tmp_path / "run", sum((["--set", s] for s in TINY), [])
    argv = [sys.executable, "-m", "fret.cli", "generate", "corpus", PIPELINE, "--run-dir", run_dir,
            *sets, "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # 10 kB: the settings files (< 4 kB) are written, every corpus shard (> 15 kB) is not.
    limited = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env,
                             preexec_fn=file_size_limit(10_000), timeout=300)
    assert limited.returncode == 1, limited.stderr
    assert limited.stderr.strip().splitlines() == [
        f"fret: error: cannot write {run_dir / 'corpus' / 'part-00000.parquet'} (file too large: a "
        "file-size limit (ulimit -f)?); nothing half-written was kept: fix this, then run the same "
        "command again to go on from there"]
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob("*.parquet"))
    assert not shards.load_manifest(run_dir / "corpus").get("shards")
    again = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert stage_files(run_dir / "corpus") == stage_files(tmp_path / "ref" / "corpus")


def test_unwritable_shard_path_stops_the_stage_and_the_rerun_finishes_identically(tmp_path, capsys):
    """A folder where shard 1 must go (as root, chmod cannot make a folder unwritable): the rename
    fails after shard 0 is done."""
    assert gen("corpus", tmp_path / "ref") == 0
    blocked = tmp_path / "run" / "corpus" / "part-00001.parquet"
    blocked.mkdir(parents=True)
    assert gen("corpus", tmp_path / "run") == 1
    assert err_lines(capsys) == [
        f"fret: error: cannot write {blocked} (not writable: a folder stands where the file must be); "
        "nothing half-written was kept: fix this, then run the same command again to go on from there"]
    assert not list(blocked.parent.rglob("*.tmp"))
    assert list(shards.load_manifest(blocked.parent)["shards"]) == ["part-00000.parquet"]
    blocked.rmdir()
    assert gen("corpus", tmp_path / "run") == 0
    assert stage_files(blocked.parent) == stage_files(tmp_path / "ref" / "corpus")


# --- errors and exit codes ------------------------------------------------------------------------

def test_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"fret {__version__}"


def raiser(exc):
    def f(*args, **kwargs):
        raise exc
    return f


@pytest.mark.parametrize("where, argv", [
    ("fret.core.runner.run_pipeline", ["run", str(PIPELINE), "--run-dir", "{tmp}"]),
    ("fret.report.report", ["report", "{tmp}"]),
    ("fret.parts.train.cli.run", ["train", "--data", "x"]),
    ("fret.parts.evaluation.cli.run", ["eval", "--model", "x"]),
])
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(where, argv, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(where, raiser(ZeroDivisionError("boom\nsecond line")))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 1
    err = err_lines(capsys)
    assert err == ["fret: error: unexpected ZeroDivisionError: boom second line "
                   "(run with --debug (or FRET_DEBUG=1) for the traceback)"]
    assert main([*argv, "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("FRET_DEBUG", "1")
    assert main(argv) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("where, argv, resumable", [
    ("fret.core.runner.run_pipeline", ["generate", "corpus", str(PIPELINE), "--run-dir", "{tmp}"], True),
    ("fret.parts.train.cli.run", ["train", "--data", "x"], True),
    ("fret.parts.evaluation.cli.run", ["eval", "--model", "x"], False),
    ("fret.report.report", ["report", "{tmp}"], False),
])
def test_ctrl_c_exits_130_in_one_line(where, argv, resumable, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(where, raiser(KeyboardInterrupt()))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 130
    err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("fret: interrupted")
    assert ("run the same command again to resume" in err[0]) == resumable


def test_os_errors_name_the_path(tmp_path, capsys, monkeypatch):
    target = tmp_path / "no" / "such" / "folder" / "settings.yaml"
    monkeypatch.setattr("fret.core.runner.save_settings", raiser(FileNotFoundError(2, "No such file", str(target))))
    assert gen("corpus", tmp_path) == 1
    assert err_lines(capsys) == [f"fret: error: [Errno 2] No such file: '{target}'"]


# --- bad model paths, bad report paths, unreachable servers: one line each -----------------------

NO_MODEL = "/no/such/model"
FIX = "give a model folder, a Hugging Face model name, or 'default'"
IN_RUN = ["--quiet", *sum((["--set", s] for s in TINY), [])]
BAD_PATHS = {  # case: (argv, exit code, what each line of stderr says)
    "eval --model missing": (["eval", "--model", NO_MODEL, "--sts", "{run}/sts.tsv"], 2,
                             ["fret: error: --sts {run}/sts.tsv: no such file or folder",  # both at once
                              f"fret: error: --model {NO_MODEL}: no such file or folder; {FIX}"]),
    "eval --model not a model": (["eval", "--model", "{run}/notes", "--sts", "{run}/sts.tsv"], 2,
                                 ["fret: error: --sts {run}/sts.tsv: no such file or folder",
                                  "fret: error: --model {run}/notes: this folder holds no model "
                                  f"(no config.json or modules.json); {FIX}"]),
    "train --model missing": (["train", "--data", "{data}", "--model", NO_MODEL, "--output", "{run}/m"], 2,
                              [f"fret: error: --model {NO_MODEL}: no such file or folder; {FIX}"]),
    "train --model not a model": (["train", "--data", "{data}", "--model", "{run}/notes", "--output",
                                   "{run}/m"], 2,
                                  ["fret: error: --model {run}/notes: this folder holds no model "
                                   f"(no config.json or modules.json); {FIX}"]),
    "embed.model missing": (["generate", "embed", PIPELINE, "--run-dir", "{run}", *IN_RUN,
                             "--set", f"embed.model={NO_MODEL}"], 2,
                            [f"fret: error: embed.model: {NO_MODEL}: no such file or folder; {FIX} "
                             f"(from --set embed.model={NO_MODEL})"]),
    "llm.model missing (transformers)": (["generate", "queries", PIPELINE, "--run-dir", "{run}", *IN_RUN,
                                          "--set", f"llm.model={NO_MODEL}"], 2,
                                         [f"fret: error: llm.model {NO_MODEL}: no such file or folder; {FIX}"]),
    "llm.base_url unreachable, api_key_env unset": (
        ["generate", "queries", PIPELINE, "--run-dir", "{run}", *IN_RUN, "--set", "llm.backend=openai",
         "--set", "llm.base_url=http://127.0.0.1:9/v1", "--set", "llm.api_key_env=FRET_UNSET_KEY",
         "--set", "llm.max_retries=1"], 1,
        ["fret: warning: llm.api_key_env names $FRET_UNSET_KEY, which is not set: sending no key to "
         "http://127.0.0.1:9/v1",
         "fret: error: the server at http://127.0.0.1:9/v1 failed 2 attempts (connection error); when it "
         "answers again, run the same command: answered requests are not sent again"]),
    "report --html in a missing folder": (["report", "{run}", "--html", "/no/such/report.html"], 2,
                                          ["fret: error: --html /no/such/report.html: folder /no/such does "
                                           "not exist; create it or give another path"]),
    "report --html a folder": (["report", "{run}", "--html", "{run}"], 2,
                               ["fret: error: --html {run} is a folder; give a file path, e.g. "
                                "{run}/report.html"]),
}


@pytest.mark.parametrize("case", BAD_PATHS)
def test_bad_paths_and_servers_are_one_clear_line(run_dir, case):
    from test_train_cli import wiki_articles, write_unified
    (run_dir / "notes").mkdir()
    (run_dir / "notes" / "README.txt").write_text("not a model\n")
    data = write_unified(run_dir / "export", wiki_articles(n=16)) if "{data}" in BAD_PATHS[case][0] else ""
    argv, code, lines = BAD_PATHS[case]
    fill = lambda a: str(a).replace("{run}", str(run_dir)).replace("{data}", str(data))  # noqa: E731
    process = fret_process(*map(fill, argv))
    out, err = process.communicate(timeout=300)
    assert "Traceback" not in err
    assert err.strip().splitlines() == [fill(line) for line in lines]
    assert process.returncode == code
    assert not (run_dir / "m").exists()  # fret train named the model before making its output


# --- empty stages, refused settings ---------------------------------------------------------------

@pytest.mark.parametrize("content, cause", [
    (b"", "it read 0 rows: is the source empty or binary"),
    (bytes(range(256)) * 20, "every row was rejected (top reasons: invalid_utf8"),
])
def test_a_stage_with_0_rows_stops_the_run_unless_allowed(tmp_path, capsys, content, cause):
    source = tmp_path / "corpus.jsonl"
    source.write_bytes(content)
    overrides = [f"corpus.sources=[{{type: jsonl, path: {source}}}]"]
    assert fret("run", PIPELINE, "--run-dir", tmp_path / "run", overrides=overrides) == 1
    err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("fret: error: ")
    assert f"stage 'corpus' ended with 0 rows in {tmp_path / 'run' / 'corpus'}" in err[0]
    assert cause in err[0] and "--allow-empty" in err[0]
    assert not (tmp_path / "run" / "sample").exists()  # stopped there
    assert gen("corpus", tmp_path / "run", "--allow-empty", overrides=overrides) == 0


def test_refused_command_leaves_the_settings_files_alone(run_dir, capsys):
    saved = {name: (run_dir / name).read_bytes() for name in ("settings.yaml", "_settings.json")}
    changed_corpus = [s.replace("limit=90", "limit=60") for s in TINY]
    changed_sample = [s.replace("size=6", "size=5") for s in TINY]
    for argv, changed in ((["generate", "corpus", PIPELINE, "--run-dir", run_dir], changed_corpus),
                          (["run", PIPELINE, "--run-dir", run_dir], changed_sample)):  # corpus: no-op
        assert fret(*argv, overrides=changed) == 2
        assert "--restart" in err_lines(capsys)[0]
        assert {name: (run_dir / name).read_bytes() for name in saved} == saved
    assert gen("corpus", run_dir, "--restart", overrides=changed_corpus) == 0  # accepted: written
    assert b"limit: 60" in (run_dir / "settings.yaml").read_bytes()
