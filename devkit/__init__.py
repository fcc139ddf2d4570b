"""Tools for TokenSmith's tests, demo and benchmarks (not loaded by ComfyUI).

comfy_host: import a real ComfyUI in-process; model_factory: small real ComfyUI models and the
real-architecture SD1.5 checkpoint; server: a real `main.py` on loopback.
"""
