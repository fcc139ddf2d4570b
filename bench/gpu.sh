#!/usr/bin/env bash
# GPU benchmark and checks for a session lent one GPU (sized for an H100: under 5 minutes).
#   bash bench/gpu.sh            full-size SD1.5 / SDXL UNets with random weights, writes bench/results/gpu-latest.json,
#                                then the GPU correctness checks (bench/gpu_checks.py -> gpu-checks-latest.json)
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
# the benchmark starts no new case after --budget-s (default 160 s here); the hard limits keep a GPU
# run under 5 minutes (measured on an H200: 75-92 s for the benchmark at 10 steps, 31-38 s for the checks)
smoke=0
for arg in "$@"; do [ "$arg" = "--smoke" ] && smoke=1; done  # a CPU smoke run takes as long as it takes
status=0
if [ "$smoke" = 0 ]; then
    timeout 210 "$PY" -m bench.gpu --budget-s 160 "$@" || status=$?
    timeout 85 "$PY" -m bench.gpu_checks || status=$?
else
    "$PY" -m bench.gpu "$@" || status=$?
    "$PY" -m bench.gpu_checks --smoke || status=$?
fi
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
    cp bench/results/gpu-latest.json bench/results/gpu-checks-latest.json "$OUT"/ 2>/dev/null || true
fi
exit "$status"
