"""Evaluation of any sentence-transformers model: retrieval, STS, classification, bitext.

`readers` turns files into plain Python data (with errors that name the file and line),
`tasks` turns a model and that data into figures, `fret.parts.evaluation.cli` is the `fret eval` command.
"""
from fret.parts.evaluation.readers import (EvalDataError, read_beir, read_bitext, read_classification,
                                     read_squad_retrieval, read_sts)
from fret.parts.evaluation.tasks import (encode, evaluate_bitext, evaluate_classification, evaluate_retrieval,
                                   evaluate_sts, load_model)

__all__ = ["EvalDataError", "read_beir", "read_bitext", "read_classification", "read_squad_retrieval",
           "read_sts", "encode", "evaluate_bitext", "evaluate_classification", "evaluate_retrieval",
           "evaluate_sts", "load_model"]
