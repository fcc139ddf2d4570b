#!/usr/bin/env bash
# GPU benchmark for a session lent one GPU (sized for an H100: under 5 minutes).
#   bash bench/gpu.sh            full-size SD1.5 / SDXL UNets with random weights, writes bench/results/gpu-latest.json
#   bash bench/gpu.sh --smoke    the same code on the CPU at tiny sizes (tests the script anywhere)
# Needs a Python with torch (CUDA build for the real run) and ComfyUI's requirements, and a ComfyUI
# checkout: $COMFYUI_PATH, else the one `make provision` recorded, else .comfyui/ (25 MB; carry it to
# a machine that lacks it). When $OUT is set (the device machine's output folder) the JSON is copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
if [ -z "${COMFYUI_PATH:-}" ]; then
    if [ -f .venv/comfyui_path ]; then COMFYUI_PATH="$(cat .venv/comfyui_path)"; else COMFYUI_PATH="$PWD/.comfyui"; fi
fi
export COMFYUI_PATH TQDM_DISABLE=1
# the script starts no new case after 240 s; the hard limit keeps a GPU run under 5 minutes
limit=290
for arg in "$@"; do [ "$arg" = "--smoke" ] && limit=0; done  # a CPU smoke run takes as long as it takes
status=0
if [ "$limit" -gt 0 ]; then
    timeout "$limit" "$PY" -m bench.gpu "$@" || status=$?
else
    "$PY" -m bench.gpu "$@" || status=$?
fi
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
    cp bench/results/gpu-latest.json "$OUT"/ 2>/dev/null || true
fi
exit "$status"
