"""Batch plans: seeded, one source per batch, grouped by length; per-folder weights; auto batch size."""
import random

from fret.parts.formatting import gecko
from fret.parts.train.batching import auto_batch_size, example_length, plan_epoch
from fret.parts.train.data import Example, Pair, format_examples, parse_data_arg, reweight, task_summary


def examples(n=200):
    rng = random.Random(1)
    return [Example("q" * rng.randint(1, 400), "p" * rng.randint(1, 400), [], source=f"s{i % 3}") for i in range(n)]


def test_plan_is_seeded_and_covers_each_example_once():
    ex = examples()
    a = plan_epoch(ex, 16, seed=3, epoch=0)
    assert a == plan_epoch(ex, 16, seed=3, epoch=0)
    assert a != plan_epoch(ex, 16, seed=3, epoch=1) and a != plan_epoch(ex, 16, seed=4, epoch=0)
    flat = [i for b in a for i in b]
    assert len(flat) == len(set(flat)) == 12 * 16  # 200 // 16 complete batches
    assert all(len(b) == 16 for b in a)


def test_one_source_per_batch():
    ex = examples()
    plan = plan_epoch(ex, 8, seed=0, epoch=0, one_source_per_batch=True)
    assert all(len({ex[i].source for i in b}) == 1 for b in plan)
    assert len({ex[b[0]].source for b in plan}) == 3


def test_length_grouping_reduces_spread_within_batches():
    ex = examples(800)

    def spread(plan):
        return sum(max(example_length(ex[i]) for i in b) - min(example_length(ex[i]) for i in b) for b in plan)

    grouped = plan_epoch(ex, 16, seed=0, epoch=0, group_by_length=True)
    mixed = plan_epoch(ex, 16, seed=0, epoch=0, group_by_length=False)
    assert spread(grouped) * 5 < spread(mixed)


def test_batches_split_evenly_over_ranks():
    plan = plan_epoch(examples(10), 64, seed=0, epoch=0, multiple_of=4)
    assert [len(b) for b in plan] == [8]  # smaller than one batch: one batch, trimmed to a multiple of 4


def test_folder_weights_and_formatting():
    assert parse_data_arg("runs/a/export:0.5").weight == 0.5
    assert parse_data_arg("runs/a/export").weight == 1.0
    assert str(parse_data_arg("c:/x").path) == "c:/x"  # not a weight: the whole thing is the path
    ex = examples(10)
    assert len(reweight(ex, 2.5, random.Random(0))) == 25
    assert len(reweight(ex, 0.3, random.Random(0))) == 3
    f = gecko("Default")
    assert f.format_query("who?", "Find it") == "task: Find it | query: who?"
    assert f.format_query("who?") == "task: Default | query: who?"
    assert f.format_document("body", None) == "title: none | text: body"
    assert f.format_document("body", "T") == "title: T | text: body"
    assert f.format_document("body", "T", "Find it", symmetric=True) == "task: Find it | query: body"
    pairs = [Pair("A", "q1", "p1", "T1", ["n1", "n2"], ["N1"], task_type="qa"),
             Pair("A", "q2", "p2", task_type="qa"), Pair("B", "q3", "p3", symmetric=True, task_type="sts")]
    assert task_summary(pairs) == ("A", {"qa": "A", "sts": "B"})
    first, _, third = format_examples(pairs, f)
    assert first.negatives == ["title: N1 | text: n1", "title: none | text: n2"]  # missing titles: none
    assert third.positive == "task: B | query: p3"


def test_auto_batch_size_fits_memory_and_data():
    assert auto_batch_size(10**6, 384, 1, 0, 8 * 2**30) == 8192
    assert auto_batch_size(100, 384, 1, 0, 8 * 2**30) == 64  # capped by the data
    small = auto_batch_size(10**6, 384, 4, 1, 2**30)
    assert 4 * (4 * 4 * small * (2 * small + 1)) <= 2**29 < 4 * (4 * 4 * 2 * small * (4 * small + 1))
