"""What every benchmark module's command line shares: ComfyUI in-process in a temporary base, one
torch thread by default, and the figures as JSON to a file or standard output."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable

import torch

from devkit import comfy_host


def start_host() -> str:
    """Import ComfyUI on CPU with its folders in a fresh temp dir, load the pack; returns the dir."""
    base = tempfile.mkdtemp(prefix="tokensmith-bench-")
    comfy_host.start_in_process(base)
    return base


def stop_host(base: str) -> None:
    shutil.rmtree(base, ignore_errors=True)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default; 1 keeps a shared, oversubscribed CPU from "
                             "stalling torch's thread pool)")
    parser.add_argument("--json", help="write the figures here")


def run_in_host(threads: int, measure: Callable[[], object]):
    """measure() with the torch thread count set and ComfyUI loaded in a temporary base."""
    if threads:
        torch.set_num_threads(threads)
    base = start_host()
    try:
        return measure()
    finally:
        stop_host(base)


def emit(out, json_path: str | None) -> None:
    """The figures as JSON: to json_path, or to standard output."""
    text = json.dumps(out, indent=2)
    if json_path:
        with open(json_path, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
