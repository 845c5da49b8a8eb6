"""Gradient caching gives the same loss and gradients as the plain path on the same batch."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fret.parts.bundled import minilm_dir
from fret.parts.train.data import Example
from fret.parts.train.gradcache import cached_step, length_chunks, plain_step
from fret.parts.train.loop import batch_texts, make_loss_of
from fret.parts.train.loss import GeckoLoss
from fret.parts.train.model import Encoder


pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = [
    Example("task: qa | query: who wrote Hamlet", "title: Hamlet | text: Hamlet is a tragedy by William Shakespeare.",
            ["title: Macbeth | text: Macbeth is a play about ambition."]),
    Example("task: qa | query: capital of France", "title: Paris | text: Paris is the capital and largest city of France."),
    Example("task: qa | query: boiling point of water", "title: Water | text: At sea level water boils at 100 degrees Celsius.",
            ["title: Ice | text: Ice melts at zero degrees."]),
    Example("task: qa | query: largest planet", "title: Jupiter | text: Jupiter is the largest planet in the Solar System."),
    Example("task: qa | query: who painted the Mona Lisa", "title: Mona Lisa | text: Leonardo da Vinci painted the Mona Lisa.",
            ["title: Louvre | text: The Louvre is a museum in Paris."]),
]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(str(minilm_dir()), "auto", 64)


def run(encoder, step, chunk, train_mode, seed=7):
    encoder.train(train_mode)
    encoder.zero_grad(set_to_none=True)
    texts, b, neg_pos = batch_texts(EXAMPLES, 1)
    loss_of = make_loss_of(GeckoLoss(0.05, True, [384, 64]), texts, b, neg_pos, torch.device("cpu"))
    torch.manual_seed(seed)
    loss = step(encoder, texts, loss_of, torch.device("cpu"), chunk)
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return loss, grads, torch.rand(4)  # the random state the step leaves behind


def assert_same(a, b, atol):
    (loss_a, grads_a, rng_a), (loss_b, grads_b, rng_b) = a, b
    assert torch.equal(rng_a, rng_b)
    assert loss_a == pytest.approx(loss_b, abs=atol)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 50
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=1e-4, msg=name)


def test_length_chunks_longest_last():
    assert length_chunks(["aaa", "a", "aa"], 2) == [[1, 2], [0]]


def test_cached_equals_plain_with_dropout(encoder):
    # dropout on: equality needs the random state of each sub-batch replayed in the second pass
    plain = run(encoder, plain_step, 3, train_mode=True)
    cached = run(encoder, cached_step, 3, train_mode=True)
    assert_same(plain, cached, atol=1e-6)


def test_cached_small_chunks_equal_one_plain_pass(encoder):
    # no dropout: sub-batch size (and so padding) must not change the result beyond float noise
    plain = run(encoder, plain_step, 100, train_mode=False)
    cached = run(encoder, cached_step, 2, train_mode=False)
    assert_same(plain, cached, atol=1e-5)
    assert plain[0] > 0


def test_host_memory_is_released_on_glibc_cpu():
    # the bounded peak at large batches (benchmarks/bench_train.py) rests on this call being live
    import platform

    from fret.parts.train.gradcache import _malloc_trim, release_host_memory

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert _malloc_trim() is not None
    release_host_memory(torch.device("cpu"))
    release_host_memory(torch.device("meta"))  # not CPU: nothing to do, no error
