"""The error contract of every command (docs/errors.md), and hints that work when run as printed.

A table of bad inputs walks `run`, `generate`, `report`, `train`, `eval` and `export`: each ends
with the exit code the contract gives, one `fret: error:` line per problem, no traceback, and
nothing loaded or written before the check. The hint tests copy each printed remedy, run it as
it is, and check the command that failed then goes through.
"""
import contextlib
import io
import re
import shlex
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fret.cli import main
from fret.core import shards
from fuzzing import fuzz

ROOT = Path(__file__).resolve().parent.parent
FRET = str(ROOT / "pipelines" / "fret.yaml")
SNLI = ROOT / "tests" / "fixtures" / "convert" / "snli.jsonl"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    (tmp / "syntax.yaml").write_text("pipeline: fret\nsample:\n  size: [1\n")
    (tmp / "bad.yaml").write_text("pipeline: fret\nsample:\n  size: 0\n  sizee: 3\n")
    (tmp / "a_file").write_text("x")
    (tmp / "empty").mkdir()
    return tmp


# (argv with {tmp}, exit code, error lines, a piece of each line in order)
CASES = [
    # usage
    (["bogus"], 2, ["invalid choice: 'bogus'"]),
    (["run", FRET], 2, ["required: --run-dir", ]),
    (["generate", "nostage", FRET, "--run-dir", "{tmp}/r"], 2, ["has no stage 'nostage'"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--restart", "--restart-from", "sample"], 2,
     ["--restart and --restart-from"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--restart-from", "nope"], 2, ["--restart-from nope"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--ray-address", "auto"], 2, ["--ray-address needs"]),
    (["run", FRET, "--run-dir", "{tmp}/a_file"], 2, ["a file, not a folder"]),
    # pipeline files and --set: all problems at once, each with its origin
    (["run", "{tmp}/none.yaml", "--run-dir", "{tmp}/r"], 2, ["pipeline file not found"]),
    (["run", "{tmp}/syntax.yaml", "--run-dir", "{tmp}/r"], 2, ["syntax.yaml:4:1: not valid YAML"]),
    (["run", "{tmp}/bad.yaml", "--run-dir", "{tmp}/r"], 2,
     ["sample.sizee: unknown key (from {tmp}/bad.yaml, line 4)"]),
    (["run", "{tmp}/bad.yaml", "--run-dir", "{tmp}/r", "--set", "sample.sizee=null", "--set", "sample.sizee"], 2,
     ["--set 'sample.sizee': expected dotted.key=value"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--set", "mine.top_n=-1", "--set", "rerank.rrf_k=x"], 2,
     ["mine.top_n: Input should be greater than or equal to 2 (got -1) (from --set mine.top_n=-1)",
      "rerank.rrf_k: Input should be a valid number"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--set", "sample.size=0", "--set", "llm.backend=nope", "--set", "queries.template=nope.jinja", "--set", "embed.model=/no/model"], 2,
     ["queries.template: prompt template 'nope.jinja' not found",
      "embed.model: /no/model: no such file or folder",
      "llm.backend: unknown backend 'nope'"]),
    (["generate", "sample", FRET, "--run-dir", "{tmp}/r", "--set", "sample.size=0"], 2,
     ["sample.size: must be at least 1 (got 0) (from --set sample.size=0)"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--set", "llm.backend=openai"], 2,
     ["llm.base_url: the openai backend needs the server's address"]),
    (["run", FRET, "--run-dir", "{tmp}/r", "--set", "llm.model=/no/llm"], 2, ["llm.model: /no/llm: no such file"]),
    # report
    (["report", "{tmp}/nothing"], 2, ["no stage output found"]),
    (["report", "{tmp}/empty", "--examples", "-1"], 2, ["--examples -1"]),
    # train: every problem before the model loads
    (["train", "--output", "{tmp}/m"], 2, ["required: --data"]),
    (["train", "--data", "{tmp}/none", "--data", "{tmp}/empty", "--model", "/no/model", "--output", "{tmp}/a_file",
      "--set", "lr=0"], 2,
     ["lr must be > 0 (got 0.0)", "--data {tmp}/none: no such folder", "--data {tmp}/empty: no part-*.parquet",
      "--model /no/model: no such file", "--output {tmp}/a_file: a file"]),
    (["train", "--data", "{tmp}/empty", "--output", "{tmp}/m", "--set", "bogus=1", "--set", "epochs"], 2,
     ["--set bogus: unknown training setting", "--set 'epochs': expected key=value", "--data {tmp}/empty"]),
    # eval
    (["eval", "--model", "default"], 2, ["give at least one of"]),
    (["eval", "--model", "default", "--sts", "{tmp}/none.csv", "--limit", "0", "--top-n", "3"], 2,
     ["--limit 0", "--sts {tmp}/none.csv: no such file", "--top-n works only with --rerank"]),
    (["eval", "--model", "/no/model", "--retrieval", "{tmp}/none", "--rerank", "{tmp}/bad.yaml"], 2,
     ["--retrieval {tmp}/none: no such file", "--model /no/model", "--rerank needs --run-dir",
      "sample.sizee: unknown key"]),
    (["eval", "--model", "default", "--retrieval", "{tmp}/empty", "--rerank", FRET, "--run-dir", "{tmp}/t",
      "--set", "llm.backend=nope"], 2, ["llm.backend: unknown backend 'nope'; known: "]),
    (["eval", "--model", "default", "--dims", "a"], 2, ["--dims 'a'"]),
    # export
    (["export", "{tmp}/none", "--push-to-hub", "me/x"], 2, ["no such folder"]),
    (["export", "{tmp}/empty", "--push-to-hub", "no-slash"], 2, ["no part-*.parquet", "form user/name"]),
]


@pytest.mark.parametrize("argv, code, expected", CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_bad_inputs_exit_with_one_line_per_problem(argv, code, expected, files, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fill = lambda text: text.replace("{tmp}", str(files))  # noqa: E731
    assert main([fill(a) for a in argv]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err and all(line.startswith("fret: error: ") for line in err), err
    lines = iter(err)
    for piece in expected:  # each expected problem on a line of its own, in order
        assert any(fill(piece) in line for line in lines), (piece, err)
    assert not (files / "r").exists() and not (files / "m").exists()  # refused before any write


def test_help_lists_commands_and_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "generate", "report", "train", "eval", "export"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), command
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "fret:" in out and "corpus -> sample -> queries -> embed -> mine -> rerank -> export" in out
    assert "multilongdoc:" in out and "recipe:" in out


def test_no_help_or_docstring_points_at_a_missing_file():
    for path in [*(ROOT / "fret").rglob("*.py"), ROOT / "README.md", ROOT / "ARCHITECTURE.md"]:
        for name in re.findall(r"\b([A-Z][A-Za-z_]*\.md)\b", path.read_text()):
            assert (ROOT / name).exists() or (ROOT / "docs" / name).exists(), (path, name)


# --- hints that work -------------------------------------------------------------------------------

def hint_of(err: str) -> list[str]:
    """The command a message tells the user to run: between backticks, or after 'with: '."""
    found = re.search(r"`(fret [^`]+)`", err) or re.search(r"with: (fret .+?)(?: \(|$)", err)
    assert found, err
    return shlex.split(found.group(1))[1:]


def run_hint(capsys, argv: list[str], code: int = 2) -> list[str]:
    """Run argv, expect it refused with a hint, run the hint as printed; return the hint."""
    assert main(argv) == code
    err = [line for line in capsys.readouterr().err.splitlines() if "fret: " in line]  # not the stage bars
    assert len(err) == 1 and err[0].startswith("fret: error: "), err
    hint = hint_of(err[0])
    assert main(hint) == 0, capsys.readouterr().err
    capsys.readouterr()
    return hint


@pytest.fixture
def mixture(tmp_path):
    """A pipeline without an LLM (converted SNLI, mixed), so that hints run in seconds."""
    path = tmp_path / "mix.yaml"
    path.write_text(f"pipeline: mixture\nconvert:\n  datasets:\n    - {{converter: snli, path: {SNLI}}}\n"
                    f"mix:\n  strategy: original\n  decontaminate: {{sets: {{}}}}\n")
    return str(path)


def test_each_printed_remedy_runs_as_printed(mixture, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    first = ["--set", "convert.datasets.0.limit=6"]
    changed = ["--set", "convert.datasets.0.limit=4"]
    # a stage that needs an earlier one: the hint makes it, with the user's --set
    hint = run_hint(capsys, ["generate", "mix", mixture, "--run-dir", run_dir, *first])
    assert hint == ["generate", "convert", mixture, "--run-dir", run_dir, *first]
    assert main(["generate", "mix", mixture, "--run-dir", run_dir, *first]) == 0
    # changed settings under `fret run`: one command starts the stage and the later ones over
    hint = run_hint(capsys, ["run", mixture, "--run-dir", run_dir, *changed])
    assert hint == ["run", mixture, "--run-dir", run_dir, *changed, "--restart-from", "convert"]
    assert main(["run", mixture, "--run-dir", run_dir, *changed]) == 0  # the folder is consistent
    assert len(shards.load_manifest(tmp_path / "run" / "convert")["shards"]) >= 1
    # a changed setting of a late stage stops `fret run` before the first stage works
    manifest = tmp_path / "run" / "convert" / "_manifest.json"
    written = manifest.stat().st_mtime_ns
    hint = run_hint(capsys, ["run", mixture, "--run-dir", run_dir, *changed, "--set", "mix.total=2"])
    assert hint[-2:] == ["--restart-from", "mix"] and manifest.stat().st_mtime_ns != written  # the hint ran
    written = manifest.stat().st_mtime_ns
    assert main(["run", mixture, "--run-dir", run_dir, *changed, "--set", "mix.total=1"]) == 2
    assert manifest.stat().st_mtime_ns == written  # refused before `convert` was even looked at
    capsys.readouterr()
    # under `fret generate`: that stage, with --restart
    hint = run_hint(capsys, ["generate", "convert", mixture, "--run-dir", run_dir, *first])
    assert hint == ["generate", "convert", mixture, "--run-dir", run_dir, *first, "--restart"]
    # a damaged shard of an earlier stage: the hint redoes it
    shard = tmp_path / "run" / "convert" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:-20])
    hint = run_hint(capsys, ["generate", "mix", mixture, "--run-dir", run_dir, *first, "--restart"], code=1)
    assert hint == ["generate", "convert", mixture, "--run-dir", run_dir, *first]
    assert main(["generate", "mix", mixture, "--run-dir", run_dir, *first, "--restart"]) == 0
    # `fret report` has no pipeline file on its line: its hint takes the run's own from _settings.json
    capsys.readouterr()
    shard.write_bytes(shard.read_bytes()[:-20])
    assert main(["report", run_dir]) == 1
    err = capsys.readouterr().err
    hint = hint_of(err)
    assert hint == ["generate", "convert", mixture, "--run-dir", run_dir, *first]
    shard.unlink()  # "delete it and run ..."
    assert main(hint) == 0 and main(["report", run_dir]) == 0
    # a corrupt manifest: the hint starts that stage over, with the run's own settings
    (tmp_path / "run" / "convert" / "_manifest.json").write_text("{not json")
    capsys.readouterr()
    hint = run_hint(capsys, ["generate", "mix", mixture, "--run-dir", run_dir, *first], code=1)
    assert hint == ["generate", "convert", mixture, "--run-dir", run_dir, *first, "--restart"]


def test_a_stage_with_0_rows_names_its_rejects_and_allow_empty_goes_on(mixture, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    argv = ["run", mixture, "--run-dir", str(tmp_path / "run"), "--set", f"convert.datasets.0.path={empty}"]
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage 'convert' ended with 0 rows" in err[0] and "--allow-empty" in err[0]
    assert not (tmp_path / "run" / "mix").exists()
    assert main([*argv, "--quiet", "--allow-empty"]) in (0, 1)  # on to mix, which may stop on its own


# --- generated bad command lines ------------------------------------------------------------------

WORDS = st.sampled_from(["--set", "--run-dir", "--restart", "--restart-from", "--quiet", "--data", "--model",
                         "--output", "--limit", "--top-n", "--rerank", "--sts", "--dims", "--json", "-x", "--",
                         "sample.size=0", "=", "x=1", FRET, "/no/such", "0", "-1", "llm.backend=", "--set=a"])
COMMANDS = st.sampled_from([["run"], ["generate", "sample"], ["generate", "bogus"], ["train"], ["eval"],
                            ["export"], ["report"], []])


@fuzz(40)
@given(COMMANDS, st.lists(WORDS | st.text(max_size=8).filter(lambda w: not w.startswith("-")), max_size=6))
def test_generated_bad_command_lines_keep_the_contract(command, words):
    """Whatever the words, a command line that cannot run (it always carries a bad --set or a
    missing path) exits 2 with only `fret: error:` lines and no traceback, and writes nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        bad = {"run": ["--set", "nosuch.key=1"], "generate": ["--set", "nosuch.key=1"],
               "train": ["--data", f"{tmp}/none"], "eval": ["--sts", f"{tmp}/none"],
               "export": [f"{tmp}/none"], "report": [f"{tmp}/none"]}.get(command[0] if command else "", ["bogus"])
        argv = [*command, *words, *bad, "--run-dir", f"{tmp}/r", "--output", f"{tmp}/m"]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        lines = err.getvalue().strip().splitlines()
        assert code == 2, (argv, lines)
        assert lines and all(line.startswith("fret: error: ") for line in lines), (argv, lines)
        assert sorted(p.name for p in Path(tmp).iterdir()) == []  # nothing written
