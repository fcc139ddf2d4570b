"""TokenSmith benchmarks: `make bench` (python -m bench.run) on CPU, bench/gpu.sh on a GPU.

Every figure compares things measured in the same run (ratios), because the machines are shared
and their speed drifts. Nothing here is loaded by ComfyUI.
"""
