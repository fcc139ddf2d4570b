"""One boundary to ComfyUI: which product module may import which host module.

Product modules are the pack's own code: the Python files at the repository root (`__init__.py`,
`comfy_adapter.py`, `trainer*.py`, `server_routes.py`), `nodes/` and `tokensmith/`; not tests/,
devkit/, bench/ or scripts/. The rule, read from each module's syntax tree (every `import`, every
`from ... import`, at any depth, and `importlib.import_module("...")` / `__import__("...")` with a
literal name):

- ComfyUI's internals (`comfy`, `comfy_extras`, `comfy_execution`, `folder_paths`, `nodes`,
  `server`, `execution`, `comfyui_version`, `latent_preview`, `node_helpers`, ...) only in
  `comfy_adapter.py`;
- the public node API `comfy_api` in `comfy_adapter.py`, `nodes/` and the pack's entry point
  `__init__.py` (it registers the nodes as a ComfyExtension);
- `server_routes.py` may use `server` (PromptServer: the routes and websocket events) and `aiohttp`;
- `tokensmith/` (the core) none of them: it runs, and is tested, without a ComfyUI.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST_INTERNALS = {"comfy", "comfy_extras", "comfy_execution", "comfy_config", "folder_paths", "nodes", "server",
                  "execution", "comfyui_version", "latent_preview", "node_helpers", "app", "api_server", "main",
                  "cuda_malloc", "new_updater", "protocol", "hook_breaker_ac10a0", "utils"}
PUBLIC_NODE_API = {"comfy_api"}
WEB = {"aiohttp"}


def product_modules() -> list[Path]:
    return sorted([*ROOT.glob("*.py"), *ROOT.glob("nodes/**/*.py"), *ROOT.glob("tokensmith/**/*.py")])


def imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module (relative imports are the pack's own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.add(node.args[0].value)
    return {name.split(".")[0] for name in found}


def allowed(rel: str) -> set[str]:
    if rel == "comfy_adapter.py":
        return HOST_INTERNALS | PUBLIC_NODE_API
    if rel.startswith("nodes/") or rel == "__init__.py":
        return PUBLIC_NODE_API
    if rel == "server_routes.py":
        return {"server"} | WEB
    return set()


def test_comfy_is_imported_only_where_the_rule_allows():
    wrong = {}
    for path in product_modules():
        rel = path.relative_to(ROOT).as_posix()
        host = imported(path) & (HOST_INTERNALS | PUBLIC_NODE_API | WEB)
        if host - allowed(rel):
            wrong[rel] = sorted(host - allowed(rel))
    assert not wrong, f"host imports outside the boundary (go through comfy_adapter): {wrong}"


def test_the_check_sees_every_kind_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import comfy.utils\nfrom folder_paths import x\n"
                      "def f():\n    import server\n    importlib.import_module('comfy.sd')\n    from . import nodes\n")
    assert imported(sample) == {"comfy", "folder_paths", "server"}
    # the adapter is found and really holds the host imports, so the rule is not vacuous
    names = {p.relative_to(ROOT).as_posix() for p in product_modules()}
    assert {"comfy_adapter.py", "trainer.py", "nodes/train.py", "server_routes.py", "tokensmith/embedding.py"} <= names
    assert {"comfy", "folder_paths"} <= imported(ROOT / "comfy_adapter.py")
