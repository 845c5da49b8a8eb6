"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py): the settings profile, byte-level and
tree-level mutations of a valid input, and random JSON values.

A property run draws `FRET_FUZZ_EXAMPLES` cases (default: the number the test names, sized so the
fuzz files take well under a minute in the default suite); set it to e.g. 5000 for a long
campaign. Case counts per property: `pytest tests/test_fuzz_*.py --hypothesis-show-statistics`.
"""
from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz(default_examples: int):
    """The settings of one property: its case count (or FRET_FUZZ_EXAMPLES), no deadline (the
    machine is shared, timings vary), no example database (the shrunk cases live as @example)."""
    n = int(os.environ.get("FRET_FUZZ_EXAMPLES") or default_examples)
    return settings(max_examples=n, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# Bytes that break parsers most often: NUL, invalid and partial UTF-8, BOMs, JSON punctuation,
# line breaks (also Unicode's), an escaped lone surrogate, huge numbers.
SPICY = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b'"', b"{", b"}", b"[", b"]",
         b":", b",", b"\n", b"\r\n", b"\t", b"\\", b"\\ud800", "\u2028".encode(), "é".encode(),
         "日本".encode(), b"null", b"1e999", b"-", b"#", b"'", b"=", b"\x85"]


@st.composite
def mutated(draw, data: bytes, max_ops: int = 4) -> bytes:
    """`data` after 1..max_ops random edits: a flipped bit, a deleted or repeated run, inserted
    random or SPICY bytes, a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "repeat"]))
        at = draw(st.integers(0, len(out)))
        if op == "flip" and at < len(out):
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            out[at:at] = draw(st.sampled_from(SPICY) | st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del out[at:]
        elif op == "repeat":
            out[at:at] = out[at:at + draw(st.integers(1, 32))]
    return bytes(out)


def json_values(max_leaves: int = 8):
    """Any JSON value: scalars (NaN and infinities too), lists and objects of them."""
    scalars = (st.none() | st.booleans() | st.integers() | st.floats()
               | st.text(max_size=12) | st.sampled_from(["", " ", "\x00", "\ud800", "日本語 テキスト"]))
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=max_leaves)


def _paths(node, path=()):
    """Every place in a JSON tree: _paths({'a': [1]}) -> [(), ('a',), ('a', 0)]"""
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


@st.composite
def mutated_tree(draw, value, max_ops: int = 3):
    """A JSON tree after 1..max_ops edits at random places: a value replaced by any JSON value (a
    changed type), a key or element dropped, a key added."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(_paths(value)))
        if not path:
            value = draw(json_values())
            continue
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "drop", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(json_values())
        elif op == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(json_values())
        else:
            parent.insert(path[-1], draw(json_values()))
    return value
