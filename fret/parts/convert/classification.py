"""Generic (text, label) classification sets, Instructor-style pairs.

Schema: any rows with a text field and a label field (`text_field`, `label_field`; HF sets such as
`banking77`, `emotion`, `tweet_eval` use text/label). Labels may be ints (with `label_names`, a
list or {id: name}, for the meta) or strings.

For a text x with label y: query = x, positive = another text with label y, negative = a text with
a different label, both drawn with a generator seeded by (seed, source, row index), so the pairs
do not change when the run is repeated. Symmetric: both sides are texts of the same kind.
Rejected: empty text, missing label, a label that is not a string or number, a label with no other distinct text, a set with one label.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from fret.parts.convert.base import Context, text_of


def _name(label, names) -> str | None:
    """_name(1, ['neg', 'pos']) -> 'pos'; _name('1', ['neg', 'pos']) -> 'pos'; _name('pos', None) -> 'pos'"""
    if isinstance(names, dict):
        return names.get(label, names.get(str(label)))
    if isinstance(label, str) and label.lstrip("-").isdigit() and names is not None:
        label = int(label)  # CSV files give "1" where the names list means 1
    if isinstance(names, (list, tuple)) and isinstance(label, int) and 0 <= label < len(names):
        return names[label]
    return label if isinstance(label, str) else None


def classification(rows: Iterable[dict], ctx: Context) -> Iterator:
    tf, lf, names = ctx.options["text_field"], ctx.options["label_field"], ctx.options["label_names"]
    items: list[tuple[object, str, object]] = []  # (oid, text, label)
    for i, row in enumerate(rows):
        oid = row.get("id", i)
        if tf not in row or lf not in row:
            raise KeyError(f"converter 'classification': row {i} has no {tf!r}/{lf!r} field "
                           f"(fields: {sorted(row, key=str)}); set text_field/label_field")
        text, label = text_of(row[tf]), row[lf]
        if not text:
            yield ctx.reject(oid, "empty_text", row)
        elif label is None or label == "" or label == -1:
            yield ctx.reject(oid, "missing_label", row)
        elif not isinstance(label, (str, int, float)):  # a list or object cannot name a class
            yield ctx.reject(oid, "bad_label", row, f"label {label!r}")
        else:
            items.append((oid, text, label))
    by_label: dict[object, list[int]] = {}
    for k, (_, _, label) in enumerate(items):
        by_label.setdefault(label, []).append(k)
    distinct = {label: len({items[j][1] for j in ks}) for label, ks in by_label.items()}
    for k, (oid, text, label) in enumerate(items):
        row = {tf: text, lf: label}
        if len(by_label) < 2:
            yield ctx.reject(oid, "no_other_label", row)
            continue
        if distinct[label] < 2:
            yield ctx.reject(oid, "label_has_one_text", row, f"label {label!r}")
            continue
        rng = ctx.rng(oid, text)
        same = by_label[label]
        pos = same[rng.randrange(len(same))]
        while items[pos][1] == text:  # redraw (at least one other distinct text exists)
            pos = same[rng.randrange(len(same))]
        # a different label first, then a text of it: each other label is equally likely
        other = sorted((lab for lab in by_label if lab != label), key=repr)
        neg_label = other[rng.randrange(len(other))]
        neg = by_label[neg_label][rng.randrange(len(by_label[neg_label]))]
        yield ctx.unified(orig_id=oid, query=text, positive=items[pos][1], negatives=[items[neg][1]],
                          task_type="classification", symmetric=True,
                          lineage={"label": label, "label_name": _name(label, names),
                                   "positive_origin_id": items[pos][0],
                                   "negative_label": neg_label,
                                   "negative_label_name": _name(neg_label, names),
                                   "negative_origin_id": items[neg][0]})
