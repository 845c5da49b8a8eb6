"""fret's use of vLLM checked against the real package, on a machine without a GPU: every engine
argument, SamplingParams field, prompt key, output attribute and tokenizer method the vllm backend
uses (and that tests/test_llm_vllm.py's fake engine stands in for).

Skipped where vllm is not installed (the default venv); `bash scripts/check_vllm_api.sh` makes
a separate venv with vllm and runs it.
"""
from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

vllm = pytest.importorskip("vllm")

from fret.parts.llm import GenerateRequest, LLMSettings  # noqa: E402
from fret.parts.llm.vllm_backend import (encode_prompt, engine_kwargs, gguf_support, sampling_kwargs,  # noqa: E402
                                   special_prefix, structured_kwargs, sum_prompt_logprobs)


def params_of(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def test_engine_arguments_exist():
    from vllm.engine.arg_utils import EngineArgs
    accepted = params_of(vllm.LLM.__init__) | {f.name for f in dataclasses.fields(EngineArgs)}
    kwargs = engine_kwargs(LLMSettings(backend="vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert set(kwargs) | {"tokenizer"} <= accepted, set(kwargs) - accepted
    # LLM passes what its signature does not name on to EngineArgs
    assert inspect.Parameter.VAR_KEYWORD in {p.kind for p in inspect.signature(vllm.LLM.__init__).parameters.values()}


def test_generate_and_tokenizer_surface():
    assert {"prompts", "sampling_params", "use_tqdm"} <= params_of(vllm.LLM.generate)
    assert callable(vllm.LLM.get_tokenizer)
    from vllm.inputs import TokensPrompt
    assert "prompt_token_ids" in TokensPrompt.__annotations__
    from vllm.tokenizers import TokenizerLike
    assert "add_special_tokens" in params_of(TokenizerLike.encode)
    for name in ("apply_chat_template", "bos_token_id", "eos_token_id"):
        assert hasattr(TokenizerLike, name), name


def test_sampling_params_take_what_fret_sends():
    import msgspec
    from vllm import SamplingParams
    fields = {f.name for f in msgspec.structs.fields(SamplingParams)}
    used = set(sampling_kwargs(GenerateRequest(prompt="x"))) | {"prompt_logprobs", "structured_outputs"}
    assert used <= fields, used - fields
    r = GenerateRequest(prompt="x", max_tokens=9, temperature=0.5, top_p=0.9, stop=("\n",), seed=1,
                        json_schema=json.dumps({"type": "object", "properties": {"q": {"type": "string"}}}))
    params = SamplingParams(**sampling_kwargs(r), **structured_kwargs(r.json_schema))
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.stop, params.seed) == \
        (1, 0.5, 0.9, 9, ["\n"], 1)
    assert params.structured_outputs.json["properties"] == {"q": {"type": "string"}}


def test_structured_outputs_fields():
    from vllm.sampling_params import StructuredOutputsParams
    assert {"json", "regex", "grammar"} <= {f.name for f in dataclasses.fields(StructuredOutputsParams)}


def test_prompt_logprobs_never_read_the_prefix_cache():
    """What the README says about loglik on vLLM: a request with prompt logprobs skips reading
    the prefix cache (so the shared few-shot prefix is recomputed per loglik job)."""
    from vllm import SamplingParams
    scoring = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    assert scoring.prompt_logprobs == 0 and scoring.skip_reading_prefix_cache is True
    assert SamplingParams(max_tokens=8).skip_reading_prefix_cache is False  # generate reads it


def test_outputs_have_what_fret_reads():
    from vllm.logprobs import Logprob
    from vllm.outputs import CompletionOutput, RequestOutput
    assert {"prompt_token_ids", "prompt_logprobs", "outputs"} <= params_of(RequestOutput.__init__)
    assert {"text", "token_ids", "finish_reason"} <= {f.name for f in dataclasses.fields(CompletionOutput)}
    plp = [None, {7: Logprob(logprob=-1.0)}, {9: Logprob(logprob=-2.0, rank=3)}]
    assert sum_prompt_logprobs(plp, [5, 7, 9], 1) == -3.0


def test_gguf_support_is_detected():
    assert gguf_support() in ("in-tree", "plugin", None)
    print(f"vllm {vllm.__version__}: GGUF support {gguf_support()!r}")


def test_vllm_loads_the_exported_gguf_tokenizer(tmp_path):
    """vLLM's own tokenizer loader reads the folder the backend exports from the bundled GGUF."""
    from fret.parts.bundled import MissingBundle, smollm2_gguf
    try:
        gguf = smollm2_gguf()
    except MissingBundle as e:
        pytest.skip(str(e))
    from vllm.tokenizers import get_tokenizer
    kwargs = engine_kwargs(LLMSettings(backend="vllm"), export_root=tmp_path)
    assert kwargs["model"] == str(gguf)
    tok = get_tokenizer(kwargs["tokenizer"])
    assert special_prefix(tok) == [] and encode_prompt(tok, "a b", []) == [81, 278]
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")


def test_gguf_engine_config_resolves_with_the_plugin(tmp_path):
    """With vllm-gguf-plugin (GGUF left vLLM's tree in 0.24), the engine arguments fret makes for
    the bundled GGUF resolve to a model config (config from the exported folder, weights from the
    file) without a GPU."""
    pytest.importorskip("vllm_gguf_plugin")
    from fret.parts.bundled import MissingBundle, smollm2_gguf
    try:
        gguf = smollm2_gguf()
    except MissingBundle as e:
        pytest.skip(str(e))
    from vllm.engine.arg_utils import EngineArgs
    from vllm.plugins import load_general_plugins
    load_general_plugins()
    assert gguf_support() == "plugin"
    kwargs = engine_kwargs(LLMSettings(backend="vllm", max_length=512), export_root=tmp_path)
    config = EngineArgs(**kwargs).create_model_config()
    assert config.quantization == "gguf" and config.architectures == ["LlamaForCausalLM"]
    assert config.tokenizer == kwargs["tokenizer"] and config.max_model_len == 512
    assert str(config.model_weights) == str(gguf)
