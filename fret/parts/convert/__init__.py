"""Academic data sets -> unified training rows (fret.core.records.Unified).

API (what the `convert` stage calls):

    rows = load_rows("data/snli.jsonl")                      # or .json/.parquet/.csv/.tsv,
    rows = load_rows("stanfordnlp/snli", split="train")      # a `datasets` name, or a folder
    rows = load_rows("saved_dir", split="train")             # written by Dataset.save_to_disk
    unified, rejects = convert("snli", rows, seed=0, task=None, language="en", limit=None,
                               source=None, **options)

`unified` are dicts with exactly the Unified columns (write them with
`fret.core.shards.write_table(path, unified, schema_of(Unified))`); `rejects` are `fret.core.records.Reject`
with a reason for every input row that gave no output. `CONVERTERS` maps a name to its
`Converter` (default source name, task type, one-sentence task description, options with
defaults). Ids are `stable_id(source, original id, query, positive, negatives)`; every random
choice is seeded per row, so the same input and seed give the same rows, row for row.

Names: nq, hotpotqa, miracl (qa.py), fever (fact.py), medmcqa (mcqa.py), snli, mnli (nli.py),
classification (classification.py). See each module for the schema it reads; `load_rows` is in load.py.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from fret.core.records import Reject
from fret.parts.convert.base import Context, Converter
from fret.parts.convert.classification import classification
from fret.parts.convert.fact import fever
from fret.parts.convert.load import load_rows  # noqa: F401  (the package's API)
from fret.parts.convert.mcqa import medmcqa
from fret.parts.convert.nli import nli
from fret.parts.convert.qa import hotpotqa, miracl, nq

_QA_OPTS = {"max_negatives": 1}
_NLI_OPTS = {"max_negatives": 1, "require_negative": True}
_NLI_TASK = "Given a sentence, retrieve a sentence that it entails"

CONVERTERS: dict[str, Converter] = {
    "nq": Converter(nq, "nq", "qa", "Given a question, retrieve a Wikipedia passage that answers the question",
                    {**_QA_OPTS, "min_words": 5}),
    "hotpotqa": Converter(hotpotqa, "hotpotqa", "qa",
                          "Given a multi-hop question, retrieve a Wikipedia paragraph that helps answer it",
                          dict(_QA_OPTS)),
    "miracl": Converter(miracl, "miracl", "qa",
                        "Given a question, retrieve a Wikipedia passage that answers the question",
                        dict(_QA_OPTS)),
    "fever": Converter(fever, "fever", "fact_check",
                       "Given a claim, retrieve a passage that supports or refutes the claim",
                       {**_QA_OPTS, "wiki_pages": None, "labels": ("SUPPORTS", "REFUTES"), "min_words": 4}),
    "medmcqa": Converter(medmcqa, "medmcqa", "qa",
                         "Given a medical exam question, retrieve a passage that explains its answer",
                         {"positive": "explanation", "cop_base": 0}),
    "snli": Converter(nli, "snli", "nli", _NLI_TASK, dict(_NLI_OPTS)),
    "mnli": Converter(nli, "mnli", "nli", _NLI_TASK, dict(_NLI_OPTS)),
    "classification": Converter(classification, "classification", "classification",
                                "Given a text, retrieve another text of the same category",
                                {"text_field": "text", "label_field": "label", "label_names": None}),
}


def convert(name: str, rows: Iterable[dict], *, seed: int = 0, task: Optional[str] = None,
            language: str = "en", limit: Optional[int] = None, source: Optional[str] = None,
            **options: Any) -> tuple[list[dict], list[Reject]]:
    """Convert rows of data set `name`; at most `limit` unified rows (reading stops there)."""
    if name not in CONVERTERS:
        raise KeyError(f"unknown converter {name!r}; known: {sorted(CONVERTERS)}")
    conv = CONVERTERS[name]
    unknown = sorted(set(options) - set(conv.options))
    if unknown:
        raise TypeError(f"converter {name!r} has no option(s) {unknown}; options: {sorted(conv.options)}")
    ctx = Context(seed=seed, task=task or conv.task, language=language, source=source or conv.source,
                  converter=name, options={**conv.options, **options})
    out: list[dict] = []
    rejects: list[Reject] = []
    if limit is not None and limit <= 0:
        return out, rejects
    for item in conv.fn(rows, ctx):
        if isinstance(item, Reject):
            rejects.append(item)
        else:
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
    return out, rejects

