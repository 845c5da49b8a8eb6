"""Pure logic of the FRet stages: answer parsing, rank fusion, RC scores, hard negatives."""
import math

import pytest

from fret.stages.fret.queries import parse_answer
from fret.stages.fret.rerank import ranks, rc_score, rrf
from fret.stages.shared.ask import Invalid

PASSAGE = "The Amazon River in South America is the largest river by discharge volume of water."
DEFAULT = "Given a question, find a passage that answers the question"


@pytest.mark.parametrize("answer, expected", [
    (" Given a claim, find a passage\nQuery: the amazon is big", ("Given a claim, find a passage", "the amazon is big", False)),
    ("\n\nGiven a question, retrieve it\nQuery: \"largest river\"\n\nTask type: x", ("Given a question, retrieve it", "largest river", False)),
    ("Question: which river is largest?", (DEFAULT, "which river is largest?", True)),
    ("Claim: the Amazon is in Africa\nPassage: blah", (DEFAULT, "the Amazon is in Africa", True)),
])
def test_parse_answer_accepts(answer, expected):
    assert parse_answer(answer, PASSAGE, 48, DEFAULT) == expected


@pytest.mark.parametrize("answer, reason", [
    ("\n", "empty_answer"),
    ("I cannot help with that.", "no_query_line"),
    ("Given x\nQuery:   ", "empty_query"),
    ("Given x\nQuery: " + "word " * 60, "query_too_long"),
    ("Given a thing\nQuery: Given a thing", "query_equals_task"),
    ("Given x\nQuery: the largest river by discharge volume of water", "copies_passage"),
])
def test_parse_answer_rejects_with_reason(answer, reason):
    with pytest.raises(Invalid) as err:
        parse_answer(answer, PASSAGE, 48, DEFAULT)
    assert err.value.reason == reason


@pytest.mark.parametrize("answer, language, reason", [
    ("Given x\nQuery: la guerra de la guerra de la guerra", "es", "repeats"),
    ("Given x\nQuery: the Amazon River in South America largest", "en", "copies_passage"),  # 4 of 6 trigrams
    ("Given x\nQuery: which river carries the most water in the whole world", "es", "wrong_language"),
])
def test_parse_answer_rejects_loops_near_copies_and_wrong_language(answer, language, reason):
    with pytest.raises(Invalid) as err:
        parse_answer(answer, PASSAGE, 48, DEFAULT, max_copy_overlap=0.5, language=language)
    assert err.value.reason == reason


def test_parse_answer_keeps_a_query_in_the_passages_language():
    es = "El río Amazonas es el río más caudaloso del mundo."
    assert parse_answer("Given x\nQuery: cuál es el río que lleva más agua en todo el mundo", es, 48, DEFAULT,
                        max_copy_overlap=0.5, language="es")[1].startswith("cuál")


def test_ranks_break_ties_by_candidate_order():
    assert ranks([0.1, 0.9, 0.1]) == [2, 1, 3]
    assert ranks([-1.0, -3.0, -2.0]) == [1, 3, 2]


def test_rrf_matches_the_paper_with_k_zero():
    # R(q,p) = 1/r_QL + 1/r_RC
    assert rrf([1, 2, 3], [3, 1, 2]) == pytest.approx([1 + 1 / 3, 1 / 2 + 1, 1 / 3 + 1 / 2])
    assert rrf([1, 2], [2, 1], k=60) == pytest.approx([1 / 61 + 1 / 62] * 2)


def test_rc_score_expected_grade_and_top_label():
    logliks = [math.log(0.5), math.log(0.25), math.log(0.25)]
    assert rc_score(logliks, [2.0, 1.0, 0.0], "expected") == pytest.approx(1.25)
    assert rc_score(logliks, [0.0, 3.0, 1.0], "top_label") == pytest.approx(math.log(0.25))
