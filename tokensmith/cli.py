"""``python -m tokensmith``: inspect and convert embedding files from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .convert import CONVERT_TARGETS, convert_to
from .errors import EmbeddingFileError, TokenSmithError
from .formats import read_embedding, read_embedding_with_header, read_header
from .hashing import file_hashes
from .report import format_report, human_size, inspect_report
from .writer import write_embedding_file


def inspect_file(path: Path, name: str | None = None) -> dict:
    emb, header = read_embedding_with_header(path, name=name)
    report = inspect_report(emb)
    report.update({
        "path": str(path),
        "size": header["size"],
        "container": header["container"],
        "dtypes": header["dtypes"],
        **file_hashes(path),
    })
    for enc, dtype in header["dtypes"].items():
        report["stats"][enc]["stored_dtype"] = dtype
    return report


def inspect_folder(folder: Path) -> dict:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = full.relative_to(folder).as_posix()
            try:
                entry = read_header(full)
                entry.pop("path", None)
                files.append({"file": rel, **entry})
            except EmbeddingFileError as exc:
                files.append({"file": rel, "error": exc.reason})
    readable = sum("error" not in f for f in files)
    return {"folder": str(folder), "count": len(files), "readable": readable, "files": files}


def _print_file(r: dict) -> None:
    print(format_report(r))


def _print_folder(r: dict) -> None:
    print(f"{r['folder']}: {r['count']} files, {r['readable']} readable")
    width = max([len(f["file"]) for f in r["files"]] + [4])
    for f in r["files"]:
        if "error" in f:
            print(f"  {f['file']:<{width}}  error: {f['error']}")
            continue
        shapes = " + ".join(f"{enc} {n}x{d}" for enc, (n, d) in f["encoders"].items())
        print(f"  {f['file']:<{width}}  {f['format']:<22} {f['family']:<7} {shapes}  {human_size(f['size'])}")


def cmd_inspect(args) -> int:
    path = Path(args.path)
    if path.is_dir():
        result = inspect_folder(path)
        printer = _print_folder
    else:
        result = inspect_file(path, args.name)
        printer = _print_file
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        printer(result)
    return 0


def cmd_convert(args) -> int:
    emb = read_embedding(args.input, name=args.name)
    source_family = emb.family
    if emb.source_format == "lora_bundle":
        # The LoRA's own training metadata (ss_*) describes the LoRA, not this embedding.
        emb.metadata = {k: v for k, v in emb.metadata.items() if k == "bundle"}
    if args.to:
        emb = convert_to(emb, args.to)
    extra = {"converted_from": f"{emb.source_format} ({source_family})"}
    out = write_embedding_file(emb, args.output, overwrite=args.overwrite, extra_metadata=extra)
    print(f"wrote {out} ({emb.family}: " + ", ".join(f"{k} {n}x{d}" for k, (n, d) in emb.shapes().items()) + ")")
    return 0


def cmd_card(args) -> int:
    from .formats.png_fmt import write_png_card

    emb = read_embedding(args.input, name=args.name)
    image = None
    if args.image:
        from PIL import Image

        try:
            with Image.open(args.image) as im:
                image = im.convert("RGB")
        except OSError as exc:
            raise EmbeddingFileError(args.image, f"cannot open the image ({exc})") from None
    out = write_png_card(emb, args.output, image, draw_data=not args.no_draw, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tokensmith", description="TokenSmith embedding tools")
    parser.add_argument("--version", action="version", version=f"tokensmith {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="describe an embedding file, or list a folder of them")
    p.add_argument("path", help="an embedding file (any supported format) or a folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--name", help="pick a bundled embedding / diffusers token by name")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="convert any readable embedding to TokenSmith safetensors")
    p.add_argument("input")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--to", choices=CONVERT_TARGETS,
                   help="sdxl: L vectors + zero G vectors; sd1: keep the L side; sd3: clip_l + clip_g kept, "
                        "zero t5xxl vectors")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--name", help="pick a bundled embedding / diffusers token by name")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("card", help="write an A1111-compatible PNG card holding the embedding")
    p.add_argument("input")
    p.add_argument("output", help="the .png file to write")
    p.add_argument("--image", help="picture to use (default: a pattern made from the vectors)")
    p.add_argument("--no-draw", action="store_true", help="text chunk only, no data drawn beside the picture")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--name", help="pick a bundled embedding / diffusers token by name")
    p.set_defaults(func=cmd_card)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TokenSmithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
