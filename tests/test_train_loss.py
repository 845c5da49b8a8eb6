"""The Gecko loss against a direct transcription of the Gecko paper's formula (arXiv 2403.20327), masking, Matryoshka."""
import math

import pytest
import torch
import torch.nn.functional as F

from fret.parts.train.loss import GeckoLoss, text_ids


def formula(q, p, n, tau):
    """The paper's loss, written out term by term with Python loops (one hard negative each)."""
    q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
    s = lambda a, b: float(a @ b)
    total = 0.0
    B = q.shape[0]
    for i in range(B):
        num = math.exp(s(q[i], p[i]) / tau)
        den = sum(math.exp(s(q[i], p[j]) / tau) + (j != i) * math.exp(s(q[i], q[j]) / tau) for j in range(B))
        den += math.exp(s(q[i], n[i]) / tau)
        total += -math.log(num / den)
    return total / B


def test_matches_paper_formula():
    torch.manual_seed(0)
    q, p, n = torch.randn(5, 16), torch.randn(5, 16), torch.randn(5, 16)
    loss = GeckoLoss(temperature=0.1)(q, p, n[:, None], torch.ones(5, 1, dtype=torch.bool))
    assert float(loss) == pytest.approx(formula(q, p, n, 0.1), rel=1e-5)


def test_duplicate_positive_is_never_a_negative():
    torch.manual_seed(1)
    q, p = torch.randn(4, 8), torch.randn(4, 8)
    p[2] = p[0]  # examples 0 and 2 share the same positive text
    texts_p = ["a", "b", "a", "c"]
    loss_fn = GeckoLoss(temperature=0.05, same_tower=False)
    masked = loss_fn(q, p, q_ids=text_ids(["q0", "q1", "q2", "q3"]), p_ids=text_ids(texts_p))
    # reference: drop the duplicate column from each row by hand
    qn, pn = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    logits = qn @ pn.T / 0.05
    expected = 0.0
    for i in range(4):
        keep = [j for j in range(4) if j == i or texts_p[j] != texts_p[i]]
        expected += -(logits[i, i] - torch.logsumexp(logits[i, keep], 0))
    assert float(masked) == pytest.approx(float(expected) / 4, rel=1e-5)
    unmasked = loss_fn(q, p)  # positional ids: the duplicate counts as a negative and raises the loss
    assert float(unmasked) > float(masked)


def test_hard_negative_equal_to_positive_and_duplicate_query_are_masked():
    torch.manual_seed(2)
    q, p = torch.randn(3, 8), torch.randn(3, 8)
    n = torch.stack([p[0], torch.randn(8), torch.randn(8)])[:, None]  # example 0's negative == its positive
    q[1] = q[0]  # duplicate query text
    q_ids = text_ids(["x", "x", "y"])
    p_ids = text_ids(["p0", "p1", "p2"])
    n_ids = text_ids(["p0", "n1", "n2"])[:, None]
    valid = torch.ones(3, 1, dtype=torch.bool)
    got = GeckoLoss(0.05)(q, p, n, valid, q_ids, p_ids, n_ids)
    assert torch.isfinite(got)
    # unmasked, rows 0 and 1 would carry e^{1/0.05} terms from the copied query, and row 0 its own positive
    unmasked = GeckoLoss(0.05)(q, p, n, valid, text_ids(["x", "x2", "y"]), p_ids, text_ids(["m0", "n1", "n2"])[:, None])
    assert float(unmasked) > float(got) + 1.0


def test_multiple_hard_negatives_with_padding():
    torch.manual_seed(3)
    q, p = torch.randn(2, 8), torch.randn(2, 8)
    n = torch.randn(2, 3, 8)
    valid = torch.tensor([[True, True, True], [True, False, False]])
    got = GeckoLoss(0.1, same_tower=False)(q, p, n, valid)
    qn, pn, nn_ = F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    rows = []
    for i, k in ((0, 3), (1, 1)):
        logits = torch.cat([qn[i] @ pn.T, nn_[i, :k] @ qn[i]]) / 0.1
        rows.append(-(logits[i] - torch.logsumexp(logits, 0)))
    assert float(got) == pytest.approx(float(sum(rows) / 2), rel=1e-5)


def test_matryoshka_is_weighted_sum_over_truncations():
    torch.manual_seed(4)
    q, p = torch.randn(6, 32), torch.randn(6, 32)
    plain = GeckoLoss(0.05, same_tower=False)
    mrl = GeckoLoss(0.05, same_tower=False, dims=[32, 8], weights=[1.0, 0.5])
    expected = plain(q, p) + 0.5 * plain(q[:, :8], p[:, :8])
    assert float(mrl(q, p)) == pytest.approx(float(expected), rel=1e-6)


def test_prefinetune_is_plain_in_batch_infonce():
    torch.manual_seed(5)
    q, p = torch.randn(4, 8), torch.randn(4, 8)
    logits = F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T / 0.05
    expected = F.cross_entropy(logits, torch.arange(4))
    assert float(GeckoLoss(0.05, same_tower=False)(q, p)) == pytest.approx(float(expected), rel=1e-6)


def test_sibling_queries_sharing_a_positive_are_not_same_tower_negatives():
    torch.manual_seed(4)
    q, p = torch.randn(3, 8), torch.randn(3, 8)
    q_ids, p_ids = text_ids(["q0", "q1", "q2"]), text_ids(["para", "para", "other"])  # q0, q1 ask about one paragraph
    got = GeckoLoss(0.05)(q, p, q_ids=q_ids, p_ids=p_ids)
    qn, pn = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    expected = 0.0
    for i in range(3):
        cand_p = [j for j in range(3) if j == i or p_ids[j] != p_ids[i]]
        cand_q = [j for j in range(3) if j != i and p_ids[j] != p_ids[i]]
        logits = torch.cat([qn[i] @ pn[cand_p].T, qn[i] @ qn[cand_q].T]) / 0.05
        expected += -(qn[i] @ pn[i] / 0.05 - torch.logsumexp(logits, 0))
    assert float(got) == pytest.approx(float(expected) / 3, rel=1e-5)
    kept = GeckoLoss(0.05, mask_siblings=False)(q, p, q_ids=q_ids, p_ids=p_ids)
    assert float(kept) != pytest.approx(float(got))
