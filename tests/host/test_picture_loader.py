"""Load Training Pictures in the real host: phone photos (JPEGs with an EXIF orientation tag) come
out upright, a control picture as written, captions paired by name, a broken file skipped with a
warning, names leading out of the input folder refused, and the outputs train through Train
Embedding with the caption words reaching the text encoder."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

ORIENTATION = 0x0112


def pattern(height=256, width=320):
    """Asymmetric blocks: a red top-left corner, a blue bottom edge, green elsewhere, so each turn
    and mirror of it differs everywhere that matters (and JPEG keeps flat blocks close)."""
    a = np.zeros((height, width, 3), np.uint8)
    a[...] = (40, 200, 40)
    a[: height // 3, : width // 3] = (230, 20, 20)
    a[-height // 4:, :] = (20, 20, 230)
    return a


def save_jpeg(path, pixels, orientation=None):
    kwargs = {"quality": 95}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kwargs["exif"] = exif
    Image.fromarray(pixels).save(path, **kwargs)


def as_array(image: torch.Tensor) -> np.ndarray:
    assert image.dim() == 4 and image.shape[0] == 1 and image.shape[-1] == 3 and image.dtype == torch.float32
    return image[0].numpy() * 255.0


def close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and float(np.abs(got - want).mean()) < 4.0


@pytest.fixture
def loader(node_classes):
    return node_classes["TokenSmithLoadTrainingPictures"]


def test_phone_photos_come_out_upright_and_a_control_as_written(loader, input_folder):
    name, path = input_folder
    save_jpeg(os.path.join(path, "01-phone.jpg"), pattern(), orientation=6)
    save_jpeg(os.path.join(path, "02-control.JPG"), pattern())
    with open(os.path.join(path, "01-phone.txt"), "w", encoding="utf-8") as f:
        f.write("  a dog with a red collar\n")
    assert name in [i for i in loader.define_schema().inputs if i.id == "folder"][0].options

    images, masks, captions, count = loader.execute(folder=name).result
    assert count == 2 and len(images) == 2 and len(masks) == 2
    assert captions == ["a dog with a red collar", ""]
    phone, control = as_array(images[0]), as_array(images[1])
    # orientation 6: the stored picture is shown turned a quarter clockwise
    assert close(phone, np.rot90(pattern(), -1)), "the EXIF rotation is applied"
    assert not close(phone, np.rot90(pattern(), 1)) and phone.shape != pattern().shape
    assert close(control, pattern()), "a picture without the tag comes back as written"
    assert [tuple(m.shape) for m in masks] == [(1, 320, 256), (1, 256, 320)]
    assert all(bool((m == 1).all()) for m in masks)


def test_a_broken_file_is_named_skipped_and_the_rest_load(loader, input_folder, caplog):
    name, path = input_folder
    save_jpeg(os.path.join(path, "a.jpg"), pattern())
    with open(os.path.join(path, "b.png"), "wb") as f:
        f.write(b"\x89PNG not really")
    with caplog.at_level(logging.WARNING, logger="tokensmith"):
        out = loader.execute(folder=name)
    images, _, captions, count = out.result
    assert count == 1 and captions == [""]
    (text,) = out.ui.as_dict()["text"]
    assert "1 file(s) cannot be read and were skipped: b.png" in text
    assert any("b.png" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_names_leading_out_of_the_input_folder_are_refused(pack, loader, input_folder, tmp_path):
    errors = pack("tokensmith.errors")
    name, path = input_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    save_jpeg(str(outside / "secret.jpg"), pattern())
    os.symlink(outside, os.path.join(path, "escape"), target_is_directory=True)
    for folder, says in [("..", "'..' is not allowed"), (f"{name}/../..", "'..' is not allowed"),
                         (str(outside), "absolute path"), (f"{name}/escape", "leads outside")]:
        with pytest.raises(errors.TokenSmithError, match=says):
            loader.execute(folder=folder)
    with pytest.raises(errors.TokenSmithError, match=rf"no pictures in folder '{name}'.*\.png .jpg .jpeg .webp .bmp"):
        loader.execute(folder=name)


def test_the_outputs_train_an_embedding_with_their_captions(pack, sd1, node_classes, loader, input_folder,
                                                             embeddings_dir):
    name, path = input_folder
    save_jpeg(os.path.join(path, "dog-1.jpg"), pattern(), orientation=6)
    # upright, both are 256 wide and 320 high: one batch of two, so each step reads both captions
    save_jpeg(os.path.join(path, "dog-2.jpg"), pattern(320, 256))
    for stem, caption in [("dog-1", "with a red collar"), ("dog-2", "on a sofa")]:
        with open(os.path.join(path, f"{stem}.txt"), "w", encoding="utf-8") as f:
            f.write(caption)
    images, masks, captions, _ = loader.execute(folder=name).result
    assert [tuple(i.shape) for i in images] == [(1, 320, 256, 3)] * 2

    adapter = pack("comfy_adapter")
    seen: list[str] = []
    hooks = [e.model.transformer.get_input_embeddings().register_forward_pre_hook(
        lambda module, args, e=e: seen.extend(adapter.token_strings(e, args[0].flatten().tolist())))
        for e in adapter.encoders_of(sd1.clip)]
    train = node_classes["TokenSmithTrainEmbedding"]
    try:
        with torch.inference_mode():
            out = train.execute([sd1.model], [sd1.clip], ["pictures-e2e"], ["*"], [1], ["object"], [2], ["5e-3"],
                                [2], [0], [True], vae=[sd1.vae], images=images, masks=masks, captions=captions,
                                resolution=[64], validate_every=[0])
    finally:
        for hook in hooks:
            hook.remove()
        saved = os.path.join(embeddings_dir, "pictures-e2e.safetensors")
    try:
        embedding = out.result[0]
        assert os.path.isfile(saved) and embedding.num_vectors == 1
        assert {"collar", "sofa"} <= set(seen), sorted(set(seen))
    finally:
        if os.path.exists(saved):
            os.remove(saved)
