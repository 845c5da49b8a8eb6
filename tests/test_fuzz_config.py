"""Fuzzed pipeline files (YAML, TOML) and `--set` overrides: whatever the bytes, load_pipeline
returns a validated config or raises ConfigError with a message naming the file or the --set;
never another exception."""
import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from fret.core.config import ConfigError, load_pipeline
from fuzzing import SPICY, fuzz, json_values, mutated, mutated_tree

PIPELINES = sorted((Path(__file__).parent.parent / "pipelines").glob("*.yaml"))
SEEDS = {p.name: p.read_bytes() for p in PIPELINES}
TOML = b"""pipeline = "fret"
seed = 0
[llm]
backend = "transformers"
batch_size = 8
[corpus]
passage_words = 120
[[corpus.sources]]
type = "wiki"
languages = ["en"]
limit = 20
[sample]
size = 16
"""


def _load(data: bytes, suffix: str = ".yaml", overrides=()) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"p{suffix}"
        path.write_bytes(data)
        try:
            load_pipeline(path, list(overrides))
        except ConfigError as err:
            assert str(path) in str(err) or "--set" in str(err), err
            assert str(err).strip()


@fuzz(120)
@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda name: mutated(SEEDS[name])))
@example(b"pipeline: fret\nseed: \xff\n")  # not UTF-8
@example(b"a: " + b"[" * 3000)  # nested past Python's recursion limit
def test_yaml_bytes(data):
    _load(data)


@fuzz(100)
@given(mutated(TOML) | st.binary(max_size=64))
@example(b"a = " + b"[" * 3000)
def test_toml_bytes(data):
    _load(data, ".toml")


@fuzz(50)
@given(st.sampled_from(PIPELINES).flatmap(lambda p: mutated_tree(yaml.safe_load(p.read_text()))))
@example({"pipeline": ["fret"]})  # a list where a name belongs
@example({"pipeline": "fret", "corpus": {"sources": [{"type": {}}]}})
def test_yaml_tree(tree):
    _load(yaml.safe_dump(tree, allow_unicode=True).encode("utf-8", "surrogatepass"))


def _keys(node, prefix=""):
    """Dotted keys of a settings tree: _keys({'a': {'b': 1}, 'c': [2]}) -> ['a', 'a.b', 'c', 'c.0']"""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out += [f"{prefix}{k}"] + _keys(v, f"{prefix}{k}.")
    return out


KEYS = sorted({k for p in PIPELINES for k in _keys(yaml.safe_load(p.read_text()))})
VALUES = st.sampled_from([s.decode("utf-8", "replace") for s in SPICY] + ["", "null", "[1, 2]", "{a: 1}",
                                                                          "!!python/object:os.system"])
ITEMS = (st.tuples(st.sampled_from(KEYS) | st.text(max_size=12), VALUES | st.text(max_size=12)
                   | json_values().map(yaml.safe_dump)).map("=".join) | st.text(max_size=12))


@fuzz(60)
@given(st.sampled_from(sorted(SEEDS)), st.lists(ITEMS, min_size=1, max_size=3))
@example("fret.yaml", ["corpus.sources.0.type.x=1"])
@example("fret.yaml", ["llm.model=" + "[" * 3000])
def test_set_overrides(name, items):
    _load(SEEDS[name], overrides=items)
