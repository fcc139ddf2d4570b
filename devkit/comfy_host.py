"""Import the real ComfyUI host in-process (CPU, no argument parsing) and load the pack into it.

The host folder comes from $COMFYUI_PATH, else from .venv/comfyui_path written by
scripts/provision.sh (the enclosing ComfyUI or the pinned copy in .comfyui/).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def host_path() -> Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return Path(env).resolve()
    recorded = REPO_ROOT / ".venv" / "comfyui_path"
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    return REPO_ROOT / ".comfyui"


_imported = False


def import_comfy(base_directory: str | os.PathLike | None = None) -> Path:
    """Make `import comfy...` work in this process; returns the host folder.

    base_directory (optional) re-points ComfyUI's models/output/input/temp folders, as
    main.py's --base-directory does, so tests never touch the host's own folders.
    """
    global _imported
    path = host_path()
    if not (path / "comfy").is_dir():
        raise RuntimeError(f"no ComfyUI at {path}: run `make test` (it provisions one) or set COMFYUI_PATH")
    if not _imported:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
        import comfy.options

        # main.py imports ComfyUI's `utils` package before nodes.py puts comfy/ first on sys.path; without it a
        # later `import utils` finds comfy/utils.py (server.py, and so comfy_extras/nodes_images.py, need the package)
        import utils.install_util  # noqa: F401

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        import comfy.model_management  # noqa: F401  (reads args.cpu at import)

        _imported = True
    if base_directory is not None:
        set_base_directory(base_directory)
    return path


def set_base_directory(base: str | os.PathLike) -> None:
    import folder_paths

    base = str(Path(base).resolve())
    for sub in ("models/embeddings", "models/checkpoints", "output", "input", "temp", "custom_nodes"):
        Path(base, sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(os.path.join(base, "output"))
    folder_paths.set_input_directory(os.path.join(base, "input"))
    folder_paths.set_temp_directory(os.path.join(base, "temp"))
    for kind in ("embeddings", "checkpoints"):
        folder_paths.folder_names_and_paths[kind] = (
            [os.path.join(base, "models", kind)],
            folder_paths.folder_names_and_paths[kind][1],
        )
    folder_paths.filename_list_cache.clear()


_pack_loaded = False


def run_coroutine(coro):
    """Run a coroutine to the end, also when this thread already runs an event loop (Playwright's
    sync API keeps one running for the whole browser session)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def load_pack() -> dict:
    """Load this repo as a custom node pack through ComfyUI's own loader; returns NODE_CLASS_MAPPINGS."""
    global _pack_loaded
    import_comfy()
    import nodes

    if not _pack_loaded:
        ok = run_coroutine(nodes.load_custom_node(str(REPO_ROOT), module_parent="custom_nodes"))
        if not ok:
            raise RuntimeError("ComfyUI failed to load the TokenSmith pack; see the log above")
        _pack_loaded = True
    return nodes.NODE_CLASS_MAPPINGS


def start_in_process(base_directory: str | os.PathLike) -> None:
    """ComfyUI imported in this process with its folders in base_directory, the pack loaded, and
    the host's info logging quietened (tests and benchmarks)."""
    import logging

    import_comfy(base_directory)
    load_pack()
    logging.getLogger().setLevel(logging.WARNING)


def pack_module_name() -> str:
    """The name ComfyUI registers the pack under in sys.modules (its path with dots replaced).

    Only a package counts: pytest may also import the repo's __init__.py as a plain module (named
    "__init__" when the folder's name is no Python identifier, as in ComfyUI-TokenSmith)."""
    for name, mod in list(sys.modules.items()):
        if getattr(mod, "__file__", None) == str(REPO_ROOT / "__init__.py") and hasattr(mod, "__path__"):
            return name
    raise RuntimeError("the pack is not loaded")


def pack_import(submodule: str):
    """Import `<pack>.<submodule>` the way ComfyUI loaded it (one copy of the code, not two)."""
    import importlib

    load_pack()
    return importlib.import_module(f"{pack_module_name()}.{submodule}")


def is_pack_file(path: str | os.PathLike) -> bool:
    """Whether a file is part of this pack: its resolved path lies in the pack's folder and not in a
    hidden folder there (the .venv/, .comfyui/ and .hosts/ that provisioning puts beside the code).
    Identity by location, not by a word in the path: the checkout may be named ComfyUI-TokenSmith,
    or linked into a host's custom_nodes/."""
    try:
        rel = Path(os.path.realpath(path)).relative_to(REPO_ROOT)
    except ValueError:
        return False
    return not any(part.startswith(".") for part in rel.parts)


_QUOTED_PATH = re.compile(r'File "([^"]+)"')
_BARE_PATH = re.compile(r"(/[^\s:'\"]+)")


def frames_in_pack(text: str) -> bool:
    """Whether a traceback's frames (File "..." lines) pass through the pack's own files."""
    return any(is_pack_file(p) for p in _QUOTED_PATH.findall(text))


def names_pack_path(line: str) -> bool:
    """Whether a log line names a path inside the pack (e.g. ComfyUI's 'Cannot import PATH ...')."""
    return any(is_pack_file(p.rstrip(".,)")) for p in _BARE_PATH.findall(line))
