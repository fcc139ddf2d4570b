"""The mini-world's yardstick: the classifier that reads a picture back into the words of its caption
(background from the border, colour of the pixels that differ from it, size and shape by the
best-matching outline). `python -m devkit.miniworld.check` uses it on pictures the mini-world
checkpoint draws through ComfyUI's own loader and sampler; that check is not part of the suite yet
(the checkpoint does not follow its prompts well enough, see devkit/miniworld/check.py)."""

from __future__ import annotations

import numpy as np

from devkit.miniworld import world


def test_classifier_reads_the_world_back():
    """The yardstick: on drawn pictures the classifier names every word right."""
    for scene in world.scenes(60, seed=3):
        got = world.classify(world.draw(scene))
        assert got == {"shape": scene.shape, "colour": scene.colour, "size": scene.size,
                       "background": scene.background}, scene.caption


def test_classifier_is_not_fooled_by_noise():
    """A picture of noise is not read as a clean scene of the words it is compared with."""
    rng = np.random.default_rng(0)
    hits = 0
    for scene in world.scenes(20, seed=4):
        noise = rng.integers(0, 256, (world.SIZE, world.SIZE, 3)).astype(np.uint8)
        got = world.classify(noise)
        hits += got["shape"] == scene.shape and got["colour"] == scene.colour
    assert hits <= 4
