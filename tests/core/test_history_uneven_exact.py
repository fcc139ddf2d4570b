"""Exact behaviour of the chart on a hand-edited history (a run state's JSON edited, or written by
another tool) whose lists differ in length: each line is drawn up to the shorter of its two lists,
and a learning rate without steps is captioned at step 0."""

import numpy as np
from PIL import Image, ImageDraw

from tokensmith.history import TrainingHistory, draw_history

WHITE, GREY, BLACK = (255, 255, 255), (180, 180, 180), (0, 0, 0)
LEGEND = [("loss", (150, 170, 210)), ("smoothed", (40, 90, 200)), ("validation", (220, 80, 40)),
          ("learning rate", (60, 160, 60)), ("norm", (160, 60, 170))]


def _known():
    return TrainingHistory(steps=[1, 2, 3], loss=[2.0, 1.0, 3.0], learning_rate=[1e-2, 5e-3, 1e-3],
                           norm=[0.4, 0.6, 0.5], val_steps=[2, 3], val_loss=[1.5, 2.5])


def test_values_past_the_last_step_are_left_out_of_the_loss_and_lower_lines():
    """Every value list one longer than the steps, the extra value inside the range already drawn and
    equal to the last drawn one (so the scales and captions stay): the same chart as without them."""
    h = _known()
    uneven = TrainingHistory(steps=list(h.steps), loss=h.loss + [1.5], learning_rate=h.learning_rate + [1e-3],
                             norm=h.norm + [0.5], val_steps=list(h.val_steps), val_loss=h.val_loss + [2.0])
    assert np.array_equal(draw_history(uneven, 640, 300), draw_history(h, 640, 300))


def test_steps_past_the_last_value_are_left_out_of_the_lines():
    """Steps one longer than the value lists (the step axis is the last step either way)."""
    h = _known()
    more_steps = TrainingHistory(**{**h.__dict__, "steps": h.steps + [3]})
    assert np.array_equal(draw_history(more_steps, 640, 300), draw_history(h, 640, 300))


def test_a_learning_rate_without_steps_is_captioned_at_step_0():
    """No steps but a learning rate and a norm: no line can be drawn, the axis spans one step, and
    the lower caption names step 0."""
    h = TrainingHistory(learning_rate=[2e-3], norm=[0.25])
    img = Image.new("RGB", (640, 300), WHITE)
    draw = ImageDraw.Draw(img)
    split = int(300 * 0.62)
    draw.rectangle((36, 20, 640 - 36, split - 16), outline=GREY)
    draw.rectangle((36, split + 16, 640 - 36, 300 - 24), outline=GREY)
    x = 36
    for name, colour in LEGEND:
        draw.rectangle((x, 300 - 16, x + 10, 300 - 6), fill=colour)
        draw.text((x + 14, 300 - 18), name, fill=BLACK)
        x += 18 + 7 * len(name) + 10
    draw.text((36 + 4, split + 16 + 2), "lr 0.002  norm 0.25  step 0", fill=BLACK)
    assert np.array_equal(draw_history(h, 640, 300), np.asarray(img, dtype=np.float32) / 255.0)
