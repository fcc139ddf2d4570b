"""Load Training Pictures: a folder of ComfyUI's input folder -> upright pictures, masks and captions
for Train Embedding. Thin V3 node over tokensmith.pictures (which files, EXIF, captions, warnings)."""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from .. import comfy_adapter
from ..tokensmith.pictures import EXTENSIONS, MAX_MEGAPIXELS, MAX_SIDE, MIN_SIDE, load_pictures, subfolders, summary
from .sockets import ADV, CATEGORY

log = logging.getLogger("tokensmith")


def _folders() -> list[str]:
    return subfolders(comfy_adapter.input_folder())


class LoadTrainingPictures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithLoadTrainingPictures",
            display_name="Load Training Pictures (TokenSmith)",
            category=f"{CATEGORY}/train",
            description=(
                "Loads the pictures of a folder in ComfyUI's input folder for Train Embedding: upright (the EXIF "
                "rotation of phone photos applied), each at its own size, with its same-name .txt caption. "
                f"Reads {' '.join(EXTENSIONS)}; warns about pictures under {MIN_SIDE} px or over {MAX_SIDE} px "
                f"/ {MAX_MEGAPIXELS} MP and skips files it cannot read. Connect images, masks and captions to "
                "Train Embedding's inputs of the same names."
            ),
            inputs=[
                io.Combo.Input("folder", options=_folders(),
                               tooltip="A subfolder of ComfyUI's input folder holding the pictures (and their "
                                       "same-name .txt captions). After adding a folder press R (Refresh Node "
                                       "Definitions) or reload the page."),
                io.Boolean.Input("recursive", **ADV, optional=True, default=False,
                                 tooltip="Also load the pictures in the folder's subfolders (named by their path "
                                         "in the folder, sorted with the rest)."),
            ],
            outputs=[
                io.Image.Output("images", is_output_list=True,
                                tooltip="One picture per list item, upright, each at its own size (Train "
                                        "Embedding sorts mixed sizes into buckets)."),
                io.Mask.Output("masks", is_output_list=True,
                               tooltip="Each picture's alpha (1 = opaque, learn it; 0 = transparent, ignore it); "
                                       "all 1 for pictures without transparency. For Train Embedding's masks."),
                io.String.Output("captions", is_output_list=True,
                                 tooltip="Each picture's same-name .txt text (empty when it has none), for Train "
                                         "Embedding's captions."),
                io.Int.Output("count", tooltip="How many pictures were loaded."),
            ],
        )

    @classmethod
    def execute(cls, folder: str, recursive: bool = False) -> io.NodeOutput:
        loaded = load_pictures(comfy_adapter.input_folder(), folder, bool(recursive))
        line = summary(loaded, folder)
        log.info("TokenSmith Load Training Pictures: %s", line)
        for warning in loaded.warnings:
            log.warning("TokenSmith Load Training Pictures %r: %s", folder, warning)
        text = "\n".join([line, *loaded.warnings])
        return io.NodeOutput(loaded.images, loaded.masks, loaded.captions, len(loaded.images),
                             ui=ui.PreviewText(text))


NODES = [LoadTrainingPictures]
