"""A real OpenAI-compatible server on loopback for tests: llama-cpp-python's, with the bundled GGUF.

    with LlamaServer() as server:      # or the `llama_server` pytest fixture below
        OpenAI(base_url=server.base_url, api_key="EMPTY")

Starts llama_cpp.server (through this file's `__main__`, see below) on a free port of 127.0.0.1,
waits until /v1/models answers, and stops the process (and only it) on exit. Its log goes to a
temporary file named in errors.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaServer:
    def __init__(self, model: Path | None = None, n_ctx: int = 2048, startup_s: float = 120.0):
        from fret.parts.bundled import smollm2_gguf
        self.model = Path(model or smollm2_gguf())
        self.n_ctx = n_ctx
        self.startup_s = startup_s
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self) -> "LlamaServer":
        log = tempfile.NamedTemporaryFile("w", prefix="llama-server-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        cmd = [sys.executable, __file__, "--model", str(self.model),
               "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_threads", "2", "--logits_all", "True",
               "--verbose", "False"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}; "
                                   f"log: {self.log_path}\n{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready after {self.startup_s}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def llama_server():
    """One server for the whole test session (skipped where llama-cpp-python is missing)."""
    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
    with LlamaServer() as server:
        yield server


def _serve() -> None:
    """`python -m llama_cpp.server ...`, with ggml's extra weight buffers (repacking, AMX) off.

    ggml's AMX matmul (ggml_backend_amx_mul_mat) segfaults on the first decode on this CPU
    (AVX512 + AMX, in a VM), and neither Llama() nor the server exposes `use_extra_bufts`, so
    the default model parameters are patched before the server builds its model.
    """
    import runpy
    import llama_cpp.llama_cpp as lib
    default_params = lib.llama_model_default_params

    def params_without_extra_buffers():
        params = default_params()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = params_without_extra_buffers
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve()
