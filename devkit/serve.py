"""`make serve`: the demo's ComfyUI (base folder .demo/, TokenSmith installed) for you to use in a
browser at a printed http://127.0.0.1 address, until Ctrl-C.

    make serve                        # port 8188 when free, else any free port
    make serve ARGS="--port 8200"
    make serve ARGS="--checkpoint /path/to/model.safetensors"

Only the loopback address is listened on. The first visit opens the template browser: TokenSmith's
examples are under Extensions -> TokenSmith. The demo pictures are in input/tokensmith_demo.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time

from .comfy_host import REPO_ROOT, host_path
from .demo import DEMO_BASE, find_checkpoint, link_checkpoint, say, write_negative_dataset
from .workflows import DEMO_FOLDER, NEGATIVE_FOLDER


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, help="default: 8188 when free, else a free port")
    parser.add_argument("--checkpoint", help="a checkpoint file to put in .demo/models/checkpoints")
    args = parser.parse_args(argv)

    from .dataset import write_dataset
    from .server import ComfyServer, free_port

    base = DEMO_BASE
    for sub in ("models/checkpoints", "models/embeddings", "input", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    checkpoint, world = find_checkpoint(args.checkpoint, None, base)
    link_checkpoint(checkpoint, base, world)
    if not (base / "input" / DEMO_FOLDER).is_dir():
        write_dataset(base / "input" / DEMO_FOLDER, count=6, size=64)
    if not (base / "input" / NEGATIVE_FOLDER).is_dir():
        write_negative_dataset(base / "input" / NEGATIVE_FOLDER, count=6, size=64)

    port = args.port or (8188 if port_is_free(8188) else free_port())
    server = ComfyServer(base, port=port, log_path=base / "server.log")
    say(f"starting ComfyUI ({host_path()}) with TokenSmith, base folder {base.relative_to(REPO_ROOT)}/ ...")
    server.start(timeout=180)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    say("")
    say(f"  open  {server.url}   (Ctrl-C to stop; log: .demo/server.log)")
    say("")
    say(f"  checkpoint: {checkpoint.name}" + ("  (the mini-world: coloured shapes from captions, pre-trained here)"
                                               if world else ""))
    say("  examples:   Workflow -> Browse Templates -> Extensions -> TokenSmith")
    say(f"  pictures:   input/{DEMO_FOLDER} (and input/{NEGATIVE_FOLDER} for the negative example)")
    try:
        while server.proc.poll() is None:
            time.sleep(0.5)
        say(f"ComfyUI stopped (exit code {server.proc.returncode}); see .demo/server.log")
        return 1
    except KeyboardInterrupt:
        say("\nstopping ComfyUI ...")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
