"""Two CPU processes on gloo: the gathered loss and summed gradients equal one process on the union batch."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fret.parts.bundled import minilm_dir
from fret.parts.train import dist
from fret.parts.train.data import Example
from fret.parts.train.gradcache import cached_step
from fret.parts.train.loop import batch_texts, make_loss_of
from fret.parts.train.loss import GeckoLoss
from fret.parts.train.model import Encoder


pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = [
    Example("task: qa | query: who wrote Hamlet", "title: Hamlet | text: Hamlet is a tragedy by Shakespeare.",
            ["title: Macbeth | text: Macbeth is a play about ambition."]),
    Example("task: qa | query: capital of France", "title: Paris | text: Paris is the capital of France.", []),
    Example("task: qa | query: largest planet", "title: Jupiter | text: Jupiter is the largest planet.",
            ["title: Saturn | text: Saturn has rings."]),
    # same positive text as example 1: must be masked on both ranks, across the process boundary
    Example("task: qa | query: where is the Eiffel tower", "title: Paris | text: Paris is the capital of France.",
            ["title: Lyon | text: Lyon is a city in France."]),
]


def loss_and_grads(examples):
    torch.manual_seed(0)
    encoder = Encoder(str(minilm_dir()), "auto", 48)
    encoder.eval()  # no dropout: ranks draw different random streams than one process would
    texts, b, neg_pos = batch_texts(examples, 1)
    loss_of = make_loss_of(GeckoLoss(0.05, True, [384, 128]), texts, b, neg_pos, torch.device("cpu"))
    loss = cached_step(encoder, texts, loss_of, torch.device("cpu"), 4)
    dist.sum_gradients(encoder.parameters())
    return loss, {n: p.grad for n, p in encoder.named_parameters() if p.grad is not None}


def worker(rank, port, out_dir):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    loss, grads = loss_and_grads(EXAMPLES[rank * 2:(rank + 1) * 2])
    torch.save({"loss": loss, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_loss_equals_single_process(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single_loss, single_grads = loss_and_grads(EXAMPLES)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(single_loss, rel=1e-5)
        assert got["grads"].keys() == single_grads.keys()
        for name, grad in single_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, atol=2e-5, rtol=1e-3, msg=name)
    assert single_loss > 0


@pytest.mark.slow  # two processes each loading torch and MiniLM, then training
def test_torchrun_two_processes_train_end_to_end(tmp_path):
    import json
    import subprocess
    import sys

    from test_train_cli import wiki_articles, write_unified

    data = write_unified(tmp_path / "export", wiki_articles(n=16))
    out = tmp_path / "model"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "fret.parts.train.cli", "--data", str(data), "--output", str(out),
           "--set", "batch_size=8", "--set", "max_steps=2", "--set", "max_length=48", "--set", "checkpoint_every=1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "fret_training.json").read_text())
    assert record["steps"] == 2
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out), device="cpu").encode(["hello"]).shape == (1, 384)
