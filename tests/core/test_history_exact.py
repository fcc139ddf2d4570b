"""Exact behaviour of the training history: what record, record_validation and event store, the JSON
round trip with missing fields, and the chart drawn shape for shape (panels, lines, dots, captions,
legend, event marks) on a known history, against the same shapes drawn by hand with PIL."""

import json

import numpy as np
from PIL import Image, ImageDraw

from tokensmith.history import TrainingHistory, draw_history
from tokensmith.training_math import smooth

WHITE, GREY, BLACK = (255, 255, 255), (180, 180, 180), (0, 0, 0)
LOSS, SMOOTHED, VALIDATION = (150, 170, 210), (40, 90, 200), (220, 80, 40)
LR, NORM, MARK = (60, 160, 60), (160, 60, 170), (230, 170, 0)
LEGEND = [("loss", LOSS), ("smoothed", SMOOTHED), ("validation", VALIDATION), ("learning rate", LR),
          ("norm", NORM)]

# ---------------------------------------------------------------- recording


def test_record_stores_step_as_int_and_the_values_as_floats():
    h = TrainingHistory()
    h.record(3.0, 2, 1, 5)
    assert (h.steps, h.loss, h.learning_rate, h.norm) == ([3], [2.0], [1.0], [5.0])
    assert type(h.steps[0]) is int
    assert all(type(v[0]) is float for v in (h.loss, h.learning_rate, h.norm))


def test_record_validation_stores_step_and_loss_only_in_the_validation_lists():
    h = TrainingHistory()
    h.record_validation(7.0, 1)
    assert (h.val_steps, h.val_loss) == ([7], [1.0]) and type(h.val_steps[0]) is int
    assert type(h.val_loss[0]) is float and h.steps == [] and h.loss == []


def test_an_event_is_its_step_kind_and_details():
    h = TrainingHistory()
    h.event(4.0, "rollback", lr_factor=0.5)
    assert h.events == [{"step": 4, "kind": "rollback", "lr_factor": 0.5}] and type(h.events[0]["step"]) is int


def test_the_json_holds_every_list_by_name():
    h = TrainingHistory()
    h.record(1, 0.5, 0.01, 0.4)
    h.record_validation(1, 0.6)
    h.event(1, "saved")
    assert json.loads(h.to_json()) == {"steps": [1], "loss": [0.5], "learning_rate": [0.01], "norm": [0.4],
                                       "val_steps": [1], "val_loss": [0.6],
                                       "events": [{"step": 1, "kind": "saved"}]}


def test_missing_fields_read_back_as_empty_lists_and_unknown_ones_are_ignored():
    h = TrainingHistory.from_json('{"loss": [1.5], "extra": 3}')
    assert h == TrainingHistory(loss=[1.5])
    assert TrainingHistory.from_json("{}").events == []


# ---------------------------------------------------------------- the chart


def _history():
    """Four steps, validation at 2 and 4, and one event of each kind."""
    h = TrainingHistory()
    for step, loss, lr, norm in ((1, 2.0, 1e-2, 0.4), (2, 1.0, 8e-3, 0.5), (3, 3.0, 5e-3, 0.45),
                                 (4, 1.5, 1e-3, 0.6)):
        h.record(step, loss, lr, norm)
    h.record_validation(2, 1.2)
    h.record_validation(4, 2.5)
    for step, kind in ((1, "saved"), (2, "rollback"), (3, "early_stop"), (4, "cancelled")):
        h.event(step, kind)
    return h


def _canvas(width, height):
    img = Image.new("RGB", (width, height), WHITE)
    return img, ImageDraw.Draw(img)


def _frames_and_legend(draw, width, height):
    """The two grey panels and the legend along the bottom, as the chart's layout gives them."""
    split = int(height * 0.62)
    top = (36, 20, width - 36, split - 16)
    bottom = (36, split + 16, width - 36, height - 24)
    draw.rectangle(top, outline=GREY)
    draw.rectangle(bottom, outline=GREY)
    x = 36
    for name, colour in LEGEND:
        draw.rectangle((x, height - 16, x + 10, height - 6), fill=colour)
        draw.text((x + 14, height - 18), name, fill=BLACK)
        x += 18 + 7 * len(name) + 10
    return top, bottom


def _pixels(img):
    return np.asarray(img, dtype=np.float32) / 255.0


def test_the_chart_is_rgb_floats_of_the_asked_size_and_the_default_size_is_768_by_512():
    assert draw_history(TrainingHistory()).shape == (512, 768, 3)
    image = draw_history(_history(), 300, 200)
    assert image.shape == (200, 300, 3) and image.dtype == np.float32
    assert np.array_equal(image, np.round(image * 255) / 255)


def test_an_empty_history_is_the_two_panels_and_the_legend_only():
    img, draw = _canvas(640, 300)
    _frames_and_legend(draw, 640, 300)
    assert np.array_equal(draw_history(TrainingHistory(), 640, 300), _pixels(img))


def test_a_known_history_is_drawn_shape_for_shape():
    """Loss, smoothed and validation on one scale in the top panel, validation with dots; learning
    rate and norm each on their own scale below; captions; a mark at each rollback, early stop and
    cancel (not at a save)."""
    h = _history()
    img, draw = _canvas(640, 300)
    top, bottom = _frames_and_legend(draw, 640, 300)
    x0, y0, x1, y1 = top
    lo, hi = 1.0, 3.0

    def at_top(step, v):
        return x0 + (x1 - x0) * step / 4, y1 - (y1 - y0) * (v - lo) / (hi - lo)

    draw.line([at_top(s, v) for s, v in zip(h.steps, h.loss, strict=True)], fill=LOSS, width=2)
    draw.line([at_top(s, v) for s, v in zip(h.steps, smooth(h.loss, 0.9), strict=True)], fill=SMOOTHED, width=2)
    val = [at_top(s, v) for s, v in zip(h.val_steps, h.val_loss, strict=True)]
    draw.line(val, fill=VALIDATION, width=2)
    for px, py in val:
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=VALIDATION)
    draw.text((x0 + 4, y0 + 2), "loss 1 .. 3", fill=BLACK)
    bx0, by0, bx1, by1 = bottom
    for values, colour in ((h.learning_rate, LR), (h.norm, NORM)):
        vlo, vhi = min(values), max(values)
        draw.line([(bx0 + (bx1 - bx0) * s / 4, by1 - (by1 - by0) * (v - vlo) / (vhi - vlo))
                   for s, v in zip(h.steps, values, strict=True)], fill=colour, width=2)
    draw.text((bx0 + 4, by0 + 2), "lr 0.001  norm 0.6  step 4", fill=BLACK)
    for step in (2, 3, 4):
        x = x0 + (x1 - x0) * step / 4
        draw.line([(x, y0), (x, y1)], fill=MARK, width=1)
    assert np.array_equal(draw_history(h, 640, 300), _pixels(img))


def test_single_values_are_dots_flat_lines_sit_at_the_bottom_and_non_finite_values_are_skipped():
    """One finite loss is a dot at the bottom of its panel (its range is zero) and the smoothed line
    carries it over the infinite one; a flat learning rate is a line along the lower panel's bottom;
    a NaN norm leaves one point, drawn as a small dot."""
    h = TrainingHistory()
    h.record(1, 0.5, 1e-3, float("nan"))
    h.record(2, float("inf"), 1e-3, 0.7)
    img, draw = _canvas(640, 300)
    top, bottom = _frames_and_legend(draw, 640, 300)
    x0, y0, x1, y1 = top
    cx = x0 + (x1 - x0) * 1 / 2
    draw.ellipse((cx - 3, y1 - 3, cx + 3, y1 + 3), fill=LOSS)
    draw.line([(cx, y1), (x1, y1)], fill=SMOOTHED, width=2)
    draw.text((x0 + 4, y0 + 2), "loss 0.5 .. 0.5", fill=BLACK)
    bx0, by0, bx1, by1 = bottom
    draw.line([(bx0 + (bx1 - bx0) * s / 2, by1) for s in (1, 2)], fill=LR, width=2)
    nx = bx1
    draw.ellipse((nx - 2, by1 - 2, nx + 2, by1 + 2), fill=NORM)
    draw.text((bx0 + 4, by0 + 2), "lr 0.001  norm 0.7  step 2", fill=BLACK)
    assert np.array_equal(draw_history(h, 640, 300), _pixels(img))


def test_validation_alone_sets_the_step_axis_and_is_drawn_without_the_lower_caption():
    """With no training steps the step axis runs to the last validation; a lone validation point is
    a dot, and without a learning rate there is no lower caption."""
    h = TrainingHistory()
    h.record_validation(5, 2.0)
    h.record_validation(10, 4.0)
    img, draw = _canvas(640, 300)
    top, _ = _frames_and_legend(draw, 640, 300)
    x0, y0, x1, y1 = top
    pts = [(x0 + (x1 - x0) * 5 / 10, y1), (x1, y0)]
    draw.line(pts, fill=VALIDATION, width=2)
    for px, py in pts:
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=VALIDATION)
    draw.text((x0 + 4, y0 + 2), "loss 2 .. 4", fill=BLACK)
    assert np.array_equal(draw_history(h, 640, 300), _pixels(img))


def test_a_step_zero_history_keeps_an_axis_of_one_step():
    """Steps at 0 only: the axis still spans one step, so the mark of an event at 1 is the panel's right edge."""
    h = TrainingHistory()
    h.record(0, 1.0, 1e-3, 0.5)
    h.event(1, "rollback")
    image = draw_history(h, 640, 300)
    column = (image[21:170, 604] * 255).round().astype(int)
    assert (column == MARK).all()
    assert not (np.round(image[21:170, 320] * 255).astype(int) == MARK).all(axis=1).any()
