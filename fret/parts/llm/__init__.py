"""LLM backends behind one protocol (see base.py)."""
from .base import (BACKENDS, Generation, GenerateRequest, LabelRequest, LLM, LLMError, LLMSettings,
                   Loglik, LoglikRequest, Usage, make_llm)
from .cache import CachedLLM, request_key

__all__ = ["BACKENDS", "CachedLLM", "Generation", "GenerateRequest", "LabelRequest", "LLM", "LLMError",
           "LLMSettings", "Loglik", "LoglikRequest", "Usage", "make_llm", "request_key"]
