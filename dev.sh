#!/usr/bin/env bash
# Set everything up (idempotent), then run one job:
#   ./dev.sh demo [demo flags]   the main job: SGLang on the CPU test bed with per-adapter telemetry
#   ./dev.sh test [pytest flags] the test suite (real SGLang servers, real Prometheus); with no flags,
#                                then the live exactness tests again on the older SGLang we support
# Needs: Debian/Ubuntu x86_64 with Python 3.11; run as root or with sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")"

job="${1:-}"
case "$job" in demo|test) shift ;; *) sed -n '2,5p' "$0"; exit 2 ;; esac

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"; break
  fi
done
[ -n "$python" ] || { echo "Python 3.11 is required (sglang 0.5.23 and its torch wheels)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv (first run: installing sglang 0.5.23 and torch takes a few minutes)"
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --quiet -e '.[test]'  # -qq: this machine's pip config warns for every package
  touch "$stamp"
fi

if [ "$job" = test ] && ! command -v promtool >/dev/null; then
  sudo_="" ; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

if [ "$job" = demo ]; then
  exec .venv/bin/lora-telemetry demo "$@"
fi
if [ $# -gt 0 ]; then
  exec .venv/bin/pytest "$@"
fi

# The whole suite on SGLang 0.5.23, then the exactness tests and the install check on 0.5.21.
start=$SECONDS
.venv/bin/pytest --durations=20
echo "suite on sglang 0.5.23: $((SECONDS - start)) s"

# SGLang 0.5.21 in a venv kept outside the checkout, built once per machine. Its own requirements
# cannot be installed here (cuda-tile 1.6.0rc5 is a stub that downloads from pypi.nvidia.com), so
# SGLang comes without them, beside the torch 2.14.1 and torchvision this machine has wheels for
# (its pinned torch 2.13.0 exists here only as a CPU build, which PyPI's torchvision does not run
# beside), and the runtime requirements the engine imports.
start=$SECONDS
old_sglang="${XDG_CACHE_HOME:-$HOME/.cache}/lora_telemetry/sglang-0.5.21"
if [ ! -f "$old_sglang/.ready" ]; then
  echo "building $old_sglang (once per machine: a few minutes)"
  rm -rf "$old_sglang" && "$python" -m venv "$old_sglang"
  "$old_sglang/bin/pip" install --quiet --quiet --no-deps sglang==0.5.21
  "$old_sglang/bin/pip" install --quiet --quiet torch==2.14.1 torchvision==0.29.1
  "$old_sglang/bin/pip" install --quiet --quiet transformers==5.12.1 tokenizers==0.22.2 fastapi uvicorn uvloop \
    pyzmq orjson msgspec pybase64 psutil pydantic prometheus-client setproctitle einops xxhash zstandard \
    python-multipart partial_json_parser pillow scipy sentencepiece==0.2.1 IPython dill apache-tvm-ffi==0.1.11 \
    compressed-tensors==0.18.0 gguf openai==2.6.1 xgrammar==0.2.7 jsonschema soundfile numpy safetensors \
    huggingface_hub aiohttp requests tqdm regex packaging interegular llguidance openai-harmony==0.0.4 \
    blobfile==3.0.0 datasets
  touch "$old_sglang/.ready"
fi
"$old_sglang/bin/pip" install --quiet --quiet --no-deps -e .
"$old_sglang/bin/pip" install --quiet --quiet prometheus-client structlog opentelemetry-sdk \
  opentelemetry-exporter-otlp-proto-http peft rich httpx pytest psutil build twine
"$old_sglang/bin/python" -m pytest -p no:cacheprovider tests/test_packaging.py tests/hooks/test_memory_pool.py \
  tests/hooks/test_tokenizer.py tests/hooks/test_lora_manager.py tests/hooks/test_scheduler.py \
  tests/test_reliability.py::test_concurrent_clients_with_loads_and_unloads_count_exactly
echo "exactness tests on sglang 0.5.21: $((SECONDS - start)) s"
