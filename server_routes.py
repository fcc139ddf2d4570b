"""HTTP routes under /tokensmith/ and the `tokensmith.train` websocket events.

Routes (registered on ComfyUI's PromptServer when ComfyUI runs as a server):
- GET /tokensmith/embeddings           every embedding file: name, family, vectors per encoder, size,
                                        AutoV2 hash (headers only, no file is unpickled; each file is
                                        hashed once per size and mtime)
- GET /tokensmith/embeddings/info?name= one file's header facts (the name is checked against the folders)
- GET /tokensmith/runs                  the latest training runs' event history (for a page reload mid-run)

Events: `tokensmith.train` with {node, run, step, total, loss, val_loss, lr, norms, eta_s, event, preview}.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict

log = logging.getLogger("tokensmith")

EVENT = "tokensmith.train"
MAX_RUNS = 8
MAX_EVENTS_PER_RUN = 2000

_runs: OrderedDict[str, dict] = OrderedDict()
_lock = threading.Lock()
_header_cache: dict[str, tuple[float, int, dict]] = {}


def _prompt_server():
    try:
        from server import PromptServer
    except ImportError:  # the core or a script without ComfyUI's server
        return None
    return getattr(PromptServer, "instance", None)


def start_run(run_id: str, node_id: str, total: int, name: str) -> None:
    with _lock:
        _runs[run_id] = {"run": run_id, "node": node_id, "name": name, "total": total, "started": time.time(),
                         "finished": False, "events": []}
        _runs.move_to_end(run_id)
        while len(_runs) > MAX_RUNS:
            _runs.popitem(last=False)


def finish_run(run_id: str, outcome: str) -> None:
    publish(run_id, {"event": {"kind": outcome}, "finished": True})
    with _lock:
        if run_id in _runs:
            _runs[run_id]["finished"] = True


def preview_to_data_url(image, max_side: int = 256) -> str:
    """A small PNG data URL of an IMAGE tensor [1, H, W, 3] (for the live view)."""
    from .tokensmith.modelspec import thumbnail_data_url

    return thumbnail_data_url(image[0].detach().float().cpu().numpy(), max_side, kind="png")


def json_safe(value):
    """The value with every NaN or infinite number replaced by None: JSON has no such numbers, and a
    browser's JSON.parse rejects the whole message that holds one (a rolled-back step's loss)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def publish(run_id: str, data: dict) -> None:
    """Record an event for the run (previews are kept only as the newest one) and send it to clients."""
    data = json_safe(data)
    with _lock:
        run = _runs.get(run_id)
        if run is not None:
            payload = {**data, "run": run_id, "node": run["node"], "name": run["name"]}
            stored = {k: v for k, v in payload.items() if k != "preview"}
            run["events"].append(stored)
            if len(run["events"]) > MAX_EVENTS_PER_RUN:
                # keep every event marker, thin the plain steps
                run["events"] = [e for i, e in enumerate(run["events"]) if e.get("event") or i % 2 == 0]
            if "preview" in data:
                run["preview"] = data["preview"]
        else:
            payload = {**data, "run": run_id}
    server = _prompt_server()
    if server is not None:
        try:
            server.send_sync(EVENT, payload, server.client_id)
        except Exception as exc:  # a closed socket must never stop training
            log.debug("tokensmith: could not send an event: %s", exc)


def runs_snapshot() -> list[dict]:
    with _lock:
        return [dict(run, events=list(run["events"])) for run in _runs.values()]


# ---------------------------------------------------------------------------------------------
# Embedding listing


def describe_embedding(path: str, name: str) -> dict:
    """Header facts and the file's AutoV2 hash (`hash`, as model sites show it; `sha256` in full),
    computed once per (path, size, mtime) and cached; errors become an `error` field."""
    from .tokensmith.formats import read_header
    from .tokensmith.hashing import file_hashes
    from .tokensmith.modelspec import thumbnail_of

    try:
        st = os.stat(path)
    except OSError as exc:
        return {"name": name, "error": f"cannot read ({exc.strerror})"}
    cached = _header_cache.get(path)
    if cached and cached[0] == st.st_mtime and cached[1] == st.st_size:
        return cached[2]
    info: dict = {"name": name, "file": os.path.basename(path), "size": st.st_size, "mtime": st.st_mtime}
    try:
        header = read_header(path)
        info.update({
            "format": header.get("format"),
            "family": header.get("family"),
            "encoders": header.get("encoders", {}),
            "step": header.get("step"),
            "vectors": next(iter(header.get("encoders", {}).values()), [None])[0],
            "thumbnail": thumbnail_of(header.get("metadata") or {}),
        })
        hashes = file_hashes(path)
        info.update({"hash": hashes["autov2"], "sha256": hashes["sha256"]})
    except Exception as exc:  # a bad file is listed with its reason, never breaks the list
        info["error"] = str(exc)
    _header_cache[path] = (st.st_mtime, st.st_size, info)
    return info


def list_embeddings() -> list[dict]:
    from . import comfy_adapter as adapter

    out = []
    for rel in adapter.embedding_files():
        path = adapter.embedding_path(rel)
        if path is None:
            continue
        name = os.path.splitext(rel)[0].replace(os.sep, "/")
        info = describe_embedding(path, name)
        # ComfyUI resolves `embedding:NAME` only with .safetensors/.pt/.bin or the exact file name
        info["prompt"] = f"embedding:{name}" if rel.lower().endswith((".safetensors", ".pt", ".bin")) else f"embedding:{rel}"
        out.append(info)
    out.sort(key=lambda i: i["name"].lower())
    return out


def embedding_info_reply(name: str) -> tuple[int, dict]:
    """The status and body of GET /tokensmith/embeddings/info?name=NAME: 400 with the name check's
    message, 200 with the file's facts under the cleaned name, or 404."""
    from . import comfy_adapter as adapter
    from .tokensmith.names import validate_name

    try:
        clean = validate_name(name)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    for candidate in (name, clean + ".safetensors", clean + ".pt", clean + ".bin"):
        path = adapter.embedding_path(candidate)
        if path is not None:
            return 200, describe_embedding(path, clean)
    return 404, {"error": f"no embedding named {clean!r}"}


def register_routes() -> None:
    server = _prompt_server()
    if server is None:
        return
    from aiohttp import web

    routes = server.routes

    @routes.get("/tokensmith/embeddings")
    async def embeddings(request):
        return web.json_response(list_embeddings())

    @routes.get("/tokensmith/embeddings/info")
    async def embedding_info(request):
        status, body = embedding_info_reply(request.query.get("name", ""))
        return web.json_response(body, status=status)

    @routes.get("/tokensmith/runs")
    async def runs(request):
        return web.json_response(runs_snapshot())
