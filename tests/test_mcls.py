"""MCLS on the bundled MiniLM: layout, shape, equality with plain CLS pooling on short inputs."""
import numpy as np
import pytest
import torch

from fret.parts import bundled
from fret.parts.mcls import MCLSEncoder, mcls_layout

SHORT = ["The river floods the valley every spring.", "A museum shows tools of early settlers."]


def test_layout_puts_a_cls_every_window_and_respects_max_length():
    assert mcls_layout([5, 6, 7], 1, 2, window=2, max_length=8) == [([1, 5, 6, 1, 7, 2], [0, 3])]
    assert mcls_layout([], 1, 2, window=4, max_length=8) == [([1, 2], [0])]
    out = mcls_layout(list(range(10, 30)), 1, 2, window=4, max_length=11)  # 2 windows per sequence
    assert all(len(seq) <= 11 for seq, _ in out)
    assert [seq[i] for seq, cls_at in out for i in cls_at] == [1] * 5  # ceil(20 / 4) CLS tokens
    assert [t for seq, _ in out for t in seq if t >= 10] == list(range(10, 30))  # every token, in order
    with pytest.raises(ValueError, match="does not fit"):
        mcls_layout([1], 1, 2, window=10, max_length=11)


@pytest.fixture(scope="module")
def encoder():
    return MCLSEncoder(bundled.minilm_dir(), window=256, normalize=False)


def test_short_inputs_equal_plain_cls_pooling(encoder):
    got = encoder.encode(SHORT)  # (2, 384)
    tok, model = encoder.tokenizer, encoder.model
    with torch.inference_mode():
        for text, vec in zip(SHORT, got):
            enc = tok(text, return_tensors="pt")
            plain = model(**enc).last_hidden_state[0, 0].numpy()  # (384,)
            np.testing.assert_allclose(vec, plain, atol=1e-5)


def test_long_input_shape_and_mean_of_cls_states(encoder):
    long_text = " ".join(["The river floods the valley every spring after the snow melts."] * 120)
    n_tokens = len(encoder.tokenizer(long_text, add_special_tokens=False)["input_ids"])
    assert n_tokens > 1000  # longer than MiniLM's 512 positions: several sequences
    layouts = encoder.layouts(long_text)
    assert sum(len(c) for _, c in layouts) == -(-n_tokens // 256)
    got = encoder.encode([long_text, SHORT[0]])
    assert got.shape == (2, 384) and np.isfinite(got).all()
    # The same mean computed by hand, one sequence at a time.
    states = []
    with torch.inference_mode():
        for seq, cls_at in layouts:
            hidden = encoder.model(input_ids=torch.tensor([seq])).last_hidden_state[0]  # (T, 384)
            states.append(hidden[cls_at])
    np.testing.assert_allclose(got[0], torch.cat(states).mean(0).numpy(), atol=1e-4)


def test_smaller_window_means_more_cls_states_and_normalized_output():
    enc = MCLSEncoder(bundled.minilm_dir(), window=16, normalize=True)
    text = " ".join(["Farmers grow wheat and barley on the fertile plains."] * 10)
    (seq, cls_at), = enc.layouts(text)[:1]
    assert len(cls_at) > 1 and all(seq[i] == enc.tokenizer.cls_token_id for i in cls_at)
    vec = enc.encode([text])
    assert vec.shape == (1, 384)
    assert abs(float(np.linalg.norm(vec[0])) - 1) < 1e-5


def test_mcls_is_an_option_of_the_seed_embedder_and_of_eval(tmp_path):
    import json as _json

    import numpy as np

    from conftest import EVALDATA
    from fret.parts.embed import Embedder
    from fret.parts.evaluation.cli import main as eval_main
    from fret.parts.mcls import MCLSEncoder

    texts = ["A short passage about rivers.", "word " * 700]
    emb = Embedder("default", pooling="mcls", mcls_window=128)
    assert emb.identity()["pooling"] == "mcls" and emb.identity()["mcls_window"] == 128
    direct = MCLSEncoder(emb.path, window=128).encode(texts)
    assert np.allclose(emb.encode(texts), direct, atol=1e-6)
    assert emb.identity() != Embedder("default").identity()  # the embedding cache tells them apart
    out = tmp_path / "eval.json"
    assert eval_main(["--model", "default", "--mcls", "256", "--sts", str(EVALDATA / "stsb" / "sts-test.csv"),
                      "--limit", "40", "--json", str(out)]) == 0
    assert _json.loads(out.read_text())["results"][0]["task"] == "sts"
