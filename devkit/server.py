"""A real ComfyUI server (`main.py --cpu`) on a free loopback port, with the pack installed.

Used by the server tests, the browser tests, `make demo` and `make serve`. The server gets its own
base directory (models, input, output, temp, user, custom_nodes/TokenSmith -> this repo), so
nothing of the host's own folders is touched. Only loopback addresses are ever contacted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .comfy_host import REPO_ROOT, host_path

PACK_DIR_NAME = "TokenSmith"


PORT_ATTEMPTS = 5  # a port taken between free_port() and the server's bind: start again on a new one


def free_port() -> int:
    """A loopback port that is free now. Another process can take it before the server binds it, so
    ComfyServer.start does not trust it: it checks that the server answering is its own (its argv) and,
    when its own bind failed, starts again on another port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """The server could not bind its port: another process has it."""


def prepare_base(base: Path) -> Path:
    """Lay out a ComfyUI base directory with the pack linked into custom_nodes/."""
    base = Path(base)
    for sub in ("models/checkpoints", "models/embeddings", "input", "output", "temp", "user", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return base


class ComfyServer:
    """Start/stop a ComfyUI server process and talk to it over HTTP on 127.0.0.1."""

    def __init__(self, base: Path, port: int | None = None, log_path: Path | None = None, extra_args=()):
        self.base = prepare_base(base)
        self.fixed_port = port is not None  # a port the caller chose is never swapped for another
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else self.base / "server.log"
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ComfyServer:
        """Start the server and wait until it answers; a port taken by another process before the bind
        (free_port's race) means a new port and a new start, up to PORT_ATTEMPTS times."""
        for attempt in range(1 if self.fixed_port else PORT_ATTEMPTS):
            if attempt:
                self.port = free_port()
            try:
                return self._start_once(timeout)
            except PortTaken as exc:
                if self.fixed_port or attempt == PORT_ATTEMPTS - 1:
                    raise RuntimeError(f"{exc}; log:\n{self.log_tail()}") from None
        raise AssertionError("unreachable")

    def _is_ours(self, stats) -> bool:
        argv = (stats or {}).get("system", {}).get("argv") or []
        return str(self.base) in argv and str(self.port) in argv

    def _start_once(self, timeout: float) -> ComfyServer:
        host = host_path()
        cmd = [
            sys.executable, str(host / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
            *self.extra_args,
        ]
        self._log = open(self.log_path, "ab")
        log_start = self._log.tell()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=str(host), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                with open(self.log_path, "rb") as fh:
                    fh.seek(log_start)
                    said = fh.read().decode(errors="replace").lower()
                # v0.3.75 lets the OSError through ("address already in use"); v0.33.0 says "Port N is already in use"
                if "already in use" in said or "errno 98" in said:
                    raise PortTaken(f"port {self.port} was taken before ComfyUI could bind it")
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                stats = self.get("/system_stats", timeout=2)
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.3)
                continue
            if self._is_ours(stats):
                return self
            time.sleep(0.3)  # another server holds the port: ours cannot bind it and exits (seen above)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f}s; log:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the whole server process group at once (fault-injection tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ HTTP

    def request(self, method: str, path: str, body=None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, timeout: float = 30.0):
        return self.request("GET", path, timeout=timeout)

    def queue(self, workflow: dict) -> str:
        """POST an API-format graph; returns the prompt id (raises with ComfyUI's validation message)."""
        try:
            out = self.request("POST", "/prompt", {"prompt": workflow, "client_id": self.client_id})
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"ComfyUI refused the workflow: {exc.read().decode(errors='replace')}") from None
        return out["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """The /history entry of a finished prompt (status included)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error") or entry["status"]["completed"]:
                    return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the prompt; log:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def run(self, workflow: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue(workflow), timeout)

    def interrupt(self) -> None:
        self.request("POST", "/interrupt", {})


def status_messages(entry: dict) -> list:
    return entry.get("status", {}).get("messages", [])


def error_message(entry: dict) -> str | None:
    for kind, data in status_messages(entry):
        if kind == "execution_error":
            return f"{data.get('exception_type')}: {data.get('exception_message')}"
    return None
