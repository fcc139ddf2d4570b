#!/usr/bin/env bash
# Prepare what a bare GPU machine needs to run bench/gpu.sh when it has PyTorch but not ComfyUI
# (as the lent H200 of 2026-11-27: torch 2.11, Python 3.12, no network):
#   .gpu_host/  the provisioned ComfyUI without its tests, API nodes and unused tokenizers (~7 MB)
#   .whl/       wheels of the few ComfyUI needs that image lacked (~37 MB, cp312 manylinux x86_64)
# Both are git-ignored (added to .git/info/exclude). On the GPU machine, carry both and run:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site COMFYUI_PATH=$PWD/.gpu_host bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
host="$(cat .venv/comfyui_path 2>/dev/null || echo .comfyui)"
[ -d "$host/comfy" ] || { echo "no provisioned ComfyUI at $host: run make provision first" >&2; exit 1; }
for p in /.gpu_host/ /.whl/; do grep -qx "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
rm -rf .gpu_host && cp -a "$host" .gpu_host
rm -rf .gpu_host/tests .gpu_host/tests-unit .gpu_host/comfy_api_nodes .gpu_host/comfy/text_encoders/*_tokenizer
find .gpu_host -name __pycache__ -prune -exec rm -rf {} +
# the modules importing ComfyUI + the pack needs that the GPU image did not have (found by listing the
# distributions behind sys.modules after `python -m bench.gpu --smoke`, against the image's package list)
wheels="av==18.1.0 pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
annotated-types==0.8.0 typing-inspection==0.4.5 torchsde==0.2.6 trampoline==0.1.2 truststore==0.10.5"
mkdir -p .whl
for w in $wheels; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$w"
done
du -sh .gpu_host .whl
