"""The vllm backend's CPU-testable logic: real tokenizers (the bundled SmolLM2 GGUF's, exported
as vLLM loads it; a Llama-style variant of it; MiniLM's BERT one) and a fake `vllm` module whose
engine answers like vLLM's (the engine needs a GPU; test_vllm_api_contract.py checks the fake's
surface against the real package)."""
from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass

import pytest

from fret.parts.llm import GenerateRequest, LLMError, LLMSettings, LoglikRequest, make_llm
from fret.parts.llm import vllm_backend as vb
from fret.parts.llm.vllm_backend import (cut_middle, encode_prompt, engine_kwargs, export_gguf_tokenizer,
                                   sampling_kwargs, special_prefix, start_token, sum_prompt_logprobs)


@dataclass
class Logprob:  # the shape of vllm.logprobs.Logprob
    logprob: float
    rank: int = 1
    decoded_token: str = ""


def fake_logprob(token_id: int) -> float:
    return -token_id / 1000.0


class FakeEngine:
    """vllm.LLM's surface as fret uses it: records its arguments and every prompt it is sent;
    refuses (like vLLM) a prompt of max_model_len tokens or more, failing the whole call."""
    tokenizer = None  # set by the test

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.sent: list[list[int]] = []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        params = params if isinstance(params, list) else [params] * len(prompts)
        outs = []
        for p, sp in zip(prompts, params):
            ids = p["prompt_token_ids"]
            if not ids or len(ids) >= self.kwargs["max_model_len"]:
                raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model length")
            self.sent.append(list(ids))
            plp = None
            if sp.prompt_logprobs is not None:
                plp = [None] + [{t: Logprob(fake_logprob(t))} for t in ids[1:]]
            text = f"answer to {len(ids)} tokens"
            outs.append(types.SimpleNamespace(
                prompt_token_ids=ids, prompt_logprobs=plp,
                outputs=[types.SimpleNamespace(text=text, token_ids=[5, 6, 7], finish_reason="stop")]))
        return outs


class FakeSamplingParams:
    def __init__(self, prompt_logprobs=None, **kwargs):
        self.prompt_logprobs = prompt_logprobs
        self.__dict__.update(kwargs)


@pytest.fixture(scope="module")
def gguf_folder(tmp_path_factory):
    """The bundled GGUF's tokenizer and config, exported the way the backend hands them to vLLM."""
    from fret.parts.bundled import smollm2_gguf
    return export_gguf_tokenizer(smollm2_gguf(), tmp_path_factory.mktemp("gguf-hf"))


@pytest.fixture(scope="module")
def smol(gguf_folder):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(gguf_folder)  # as vLLM loads it: a folder, no gguf_file


@pytest.fixture(scope="module")
def llama_style(gguf_folder):
    """SmolLM2's tokenizer made to add a BOS before text, as Llama's and Gemma's do; its BOS id is 0."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(gguf_folder)
    tok.bos_token = "<|endoftext|>"
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", 0)])
    assert tok.bos_token_id == 0 and tok.encode("a b") == [0, 81, 278]
    return tok


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams, module.__version__ = FakeEngine, FakeSamplingParams, "fake"
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(vb, "gguf_support", lambda: "plugin")
    return module


def backend(tok, max_length=64, model="HuggingFaceTB/SmolLM2-135M-Instruct"):
    llm = make_llm(LLMSettings(backend="vllm", model=model, max_length=max_length, batch_size=16))
    FakeEngine.tokenizer = tok
    return llm


# ---- pure helpers -------------------------------------------------------------------------

def test_sum_prompt_logprobs_over_the_continuation():
    ids = [5, 7, 9, 11]
    plp = [None, {7: Logprob(-1.0)}, {9: Logprob(-2.0), 3: Logprob(-0.5)}, {11: Logprob(-4.0)}]
    assert sum_prompt_logprobs(plp, ids, 2) == -6.0  # tokens 9 and 11
    assert sum_prompt_logprobs(plp, ids, 4) == 0.0  # empty continuation
    with pytest.raises(LLMError, match="first token"):
        sum_prompt_logprobs(plp, ids, 0)
    with pytest.raises(LLMError, match="no logprob for prompt token 2"):
        sum_prompt_logprobs([None, {7: Logprob(-1.0)}, {3: Logprob(-0.5)}, {11: Logprob(-4.0)}], ids, 2)
    with pytest.raises(LLMError, match="3 prompt logprobs for 4 tokens"):
        sum_prompt_logprobs(plp[:3], ids, 1)


def test_request_to_sampling_params():
    r = GenerateRequest(prompt="x", max_tokens=9, temperature=0.7, top_p=0.8, stop=("\n",), seed=3)
    assert sampling_kwargs(r) == {"n": 1, "temperature": 0.7, "top_p": 0.8, "max_tokens": 9,
                                  "stop": ["\n"], "seed": 3}
    assert sampling_kwargs(GenerateRequest(prompt="x"))["stop"] is None


def test_cut_middle_keeps_both_ends():
    assert cut_middle([1, 2, 3, 4, 5, 6, 7], 4) == [1, 2, 6, 7]
    assert cut_middle([1, 2, 3, 4, 5], 3) == [1, 2, 5]
    assert cut_middle([1, 2, 3], 1) == [1]
    assert cut_middle([1, 2, 3], 3) == [1, 2, 3]


# ---- the model's own special tokens, on real tokenizers ----------------------------------

def test_special_prefix_follows_each_tokenizer(smol, llama_style):
    from transformers import AutoTokenizer
    from fret.parts.bundled import minilm_dir
    assert special_prefix(smol) == []  # SmolLM2 adds nothing before text
    assert special_prefix(llama_style) == [0]  # BOS, whose id is 0
    bert = AutoTokenizer.from_pretrained(minilm_dir())
    assert bert.encode("a")[-1] == bert.sep_token_id
    assert special_prefix(bert) == [bert.cls_token_id]  # [CLS] before; [SEP] after is not taken


def test_encode_prompt_adds_bos_once(smol, llama_style):
    assert encode_prompt(smol, "a b", special_prefix(smol)) == [81, 278]
    assert encode_prompt(llama_style, "a b", [0]) == [0, 81, 278]
    assert encode_prompt(llama_style, "<|endoftext|>a b", [0]) == [0, 81, 278]  # already there


def test_a_bos_id_of_zero_is_a_bos(smol, llama_style):
    assert start_token(llama_style) == 0  # `bos or eos` would have picked EOS (2)
    assert start_token(smol) == smol.bos_token_id == 1
    no_bos = types.SimpleNamespace(bos_token_id=None, eos_token_id=2)
    assert start_token(no_bos) == 2


# ---- GGUF: what vLLM is given -------------------------------------------------------------

def test_gguf_export_is_what_vllm_loads(gguf_folder, smol, monkeypatch):
    from transformers import AutoConfig
    assert (gguf_folder / "tokenizer.json").is_file() and (gguf_folder / "config.json").is_file()
    assert AutoConfig.from_pretrained(gguf_folder).model_type == "llama"  # the plugin's config source
    assert smol.encode("a b", add_special_tokens=False) == [81, 278]
    assert smol.eos_token == "<|im_end|>" and smol.chat_template  # chat works from the folder
    # made once per file: a second call reads nothing
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", None)
    from fret.parts.bundled import smollm2_gguf
    assert export_gguf_tokenizer(smollm2_gguf(), gguf_folder.parent) == gguf_folder


def test_default_gguf_engine_gets_the_file_and_the_exported_tokenizer(gguf_folder):
    from fret.parts.bundled import smollm2_gguf
    kw = engine_kwargs(LLMSettings(backend="vllm", max_length=512), export_root=gguf_folder.parent)
    assert kw["model"] == str(smollm2_gguf())
    assert kw["tokenizer"] == str(gguf_folder)  # not the package folder, which has no tokenizer
    assert kw["max_model_len"] == 512 and kw["enable_prefix_caching"] is True
    own = LLMSettings(backend="vllm", extra={"engine_args": {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct"}})
    assert engine_kwargs(own, export_root=gguf_folder.parent)["tokenizer"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    hub = engine_kwargs(LLMSettings(backend="vllm", model="Qwen/Qwen3-0.6B", extra={"engine_args": {"seed": 4}}))
    assert hub["model"] == "Qwen/Qwen3-0.6B" and "tokenizer" not in hub and hub["seed"] == 4


def test_gguf_without_gguf_support_in_vllm_is_a_clear_error(fake_vllm, gguf_folder, monkeypatch):
    monkeypatch.setattr(vb, "gguf_support", lambda: None)
    monkeypatch.setattr(vb, "gguf_cache_root", lambda: gguf_folder.parent)
    llm = make_llm(LLMSettings(backend="vllm"))
    with pytest.raises(LLMError, match="pip install vllm-gguf-plugin"):
        llm.engine  # noqa: B018


def test_engine_is_built_with_the_exported_tokenizer(fake_vllm, gguf_folder, smol, monkeypatch):
    monkeypatch.setattr(vb, "gguf_cache_root", lambda: gguf_folder.parent)
    llm = backend(smol, model="default")
    assert llm.engine.kwargs["tokenizer"] == str(gguf_folder)
    assert llm.engine.kwargs["model"].endswith(".gguf")


# ---- generate: over-long prompts, BOS ----------------------------------------------------

def test_an_over_long_prompt_is_cut_not_the_batch_failed(fake_vllm, llama_style):
    llm = backend(llama_style, max_length=40)
    long = " ".join(f"w{i}" for i in range(200))
    batch = [GenerateRequest(prompt="short one", max_tokens=8),
             GenerateRequest(prompt="Instruction: " + long + " Query:", max_tokens=8),
             GenerateRequest(prompt="never fits", max_tokens=40),
             GenerateRequest(messages=(("user", "hi"),), max_tokens=8)]
    out = llm.generate(batch)
    sent = llm.engine.sent
    assert len(sent) == 3  # the third request is not sent
    assert out[2].text == "" and out[2].finish_reason == "prompt_too_long"
    assert [o.finish_reason for o in out[:2] + out[3:]] == ["stop"] * 3
    assert sent[0] == [0] + llama_style.encode("short one", add_special_tokens=False)
    cut = sent[1]
    assert len(cut) == 40 - 8  # prompt + max_tokens fit max_length exactly
    whole = [0] + llama_style.encode("Instruction: " + long + " Query:", add_special_tokens=False)
    assert cut[:16] == whole[:16] and cut[-16:] == whole[-16:]  # BOS, instruction and cue kept
    assert out[1].prompt_tokens == 32
    # a chat prompt is sent as its template renders it: SmolLM2's template writes no BOS
    text = llama_style.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=False)
    assert sent[2] == llama_style.encode(text, add_special_tokens=False) and sent[2][0] != 0


def test_generate_keeps_smollm2_without_bos(fake_vllm, smol):
    llm = backend(smol)
    llm.generate([GenerateRequest(prompt="a b", max_tokens=4), GenerateRequest(prompt="", max_tokens=4)])
    assert llm.engine.sent == [[81, 278], [1]]  # no BOS added; an empty prompt gets the start token


# ---- loglik ------------------------------------------------------------------------------

def test_loglik_scores_after_the_bos_prefixed_prompt(fake_vllm, llama_style):
    llm = backend(llama_style, max_length=64)
    out = llm.loglik([LoglikRequest("Is this relevant?", (" Yes", " No")), LoglikRequest("", (" Yes",))])
    prompt = [0] + llama_style.encode("Is this relevant?", add_special_tokens=False)
    yes = llama_style.encode(" Yes", add_special_tokens=False)
    no = llama_style.encode(" No", add_special_tokens=False)
    assert llm.engine.sent[:2] == [prompt + yes, prompt + no]
    assert llm.engine.sent[2] == [0] + yes  # an empty prompt is conditioned on BOS (id 0)
    assert out[0].logprobs == pytest.approx([sum(fake_logprob(t) for t in yes), sum(fake_logprob(t) for t in no)])
    assert out[0].prompt_tokens == len(prompt) and out[1].prompt_tokens == 1


def test_loglik_leaves_room_for_the_generated_token_and_keeps_bos(fake_vllm, llama_style):
    llm = backend(llama_style, max_length=20)
    long = " ".join(f"w{i}" for i in range(100))
    out = llm.loglik([LoglikRequest(long, (" Yes", " No"))])  # one request: no shared prefix
    assert all(len(ids) == 19 for ids in llm.engine.sent)  # max_model_len - 1
    assert all(ids[0] == 0 for ids in llm.engine.sent)
    assert out[0].prompt_tokens == 19 - 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_is_a_clear_error():
    with pytest.raises(LLMError, match="pip install vllm"):
        make_llm(LLMSettings(backend="vllm"))
