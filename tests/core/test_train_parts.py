"""Core pieces of training owned by the trainer: config checks, templates/captions, history."""

import random

import numpy as np
import pytest

from tokensmith.errors import EmbeddingNameError, TrainingError
from tokensmith.history import TrainingHistory, draw_history
from tokensmith.schedule import parse_schedule
from tokensmith.templates import render, shape_caption, split_captions, template_lines
from tokensmith.train_config import TrainConfig
from tokensmith.training_math import smooth


def test_default_config_is_valid_and_its_schedule_parses():
    cfg = TrainConfig().validate()
    assert cfg.schedule_shape() == "cosine"
    schedule = parse_schedule(cfg.learning_rate, cfg.steps, cfg.lr_warmup_steps, cfg.schedule_shape())
    assert schedule.value(1) == pytest.approx(5e-3, rel=1e-3)
    assert schedule.value(cfg.steps) == pytest.approx(5e-4)


@pytest.mark.parametrize("spec,shape", [("5e-3", "steps"), ("0.005:100, 1e-3", "steps"), ("1e-2 -> 1e-4", "cosine")])
def test_auto_shape_follows_the_text(spec, shape):
    assert TrainConfig(learning_rate=spec).schedule_shape() == shape


@pytest.mark.parametrize("change,match", [
    ({"steps": 0}, "at least 1"), ({"num_vectors": 0}, "num_vectors"), ({"num_vectors": 76}, "num_vectors"),
    ({"precision": "fp8"}, "precision"), ({"tag_dropout": 1.0}, "tag_dropout"),
    ({"early_stop_patience": 3, "validate_every": 0}, "validation"), ({"clip_value": float("nan")}, "clip_value"),
    ({"stop_rule": "auto"}, "stop_rule must be one of"), ({"plateau_window": 0}, "plateau_window must be 1..100"),
    ({"plateau_threshold": -0.1}, "plateau_threshold must be a finite number"),
])
def test_bad_settings_are_refused_with_the_setting_named(change, match):
    with pytest.raises(TrainingError, match=match):
        TrainConfig(**change).validate()


def test_bad_names_are_refused():
    with pytest.raises(EmbeddingNameError):
        TrainConfig(name="../escape").validate()
    with pytest.raises(EmbeddingNameError):
        TrainConfig(name="has space").validate()


def test_templates_and_captions():
    assert all("[name]" in line for line in template_lines("object"))
    assert template_lines("custom", "a [name]\n\n  b [name], [filewords] \n") == ["a [name]", "b [name], [filewords]"]
    with pytest.raises(TrainingError, match="needs \\[name\\]"):
        template_lines("custom", "no keyword here")
    with pytest.raises(TrainingError, match="unknown template"):
        template_lines("portrait")
    assert split_captions("one", 3) == ["one"] * 3
    assert split_captions("a\nb\n", 2) == ["a", "b"]
    with pytest.raises(TrainingError, match="3 caption lines for 2 images"):
        split_captions("a\nb\nc", 2)
    assert render("a photo of [name], [filewords]", "") == "a photo of [name]"
    assert render("[filewords], [name]", "red, dot") == "red, dot, [name]"


def test_tag_shuffle_and_dropout_keep_tags_and_are_seeded():
    caption = "a, b, c, d, e, f"
    shuffled = shape_caption(caption, random.Random(1), shuffle=True, dropout=0.0)
    assert sorted(shuffled.split(", ")) == sorted(caption.split(", ")) and shuffled != caption
    assert shuffled == shape_caption(caption, random.Random(1), shuffle=True, dropout=0.0)
    dropped = shape_caption(caption, random.Random(2), shuffle=False, dropout=0.5, keep_first=1)
    assert dropped.startswith("a") and set(dropped.split(", ")) <= set(caption.split(", "))
    assert len(dropped.split(", ")) < 6


def test_history_round_trip_and_graph():
    h = TrainingHistory()
    for step in range(1, 21):
        h.record(step, 1.0 / step, 1e-2, 0.4 + step * 0.01)
    h.record_validation(10, 0.2)
    h.event(12, "rollback", lr_factor=0.5)
    again = TrainingHistory.from_json(h.to_json())
    assert again == h
    image = draw_history(h, 400, 300)
    assert image.shape == (300, 400, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert (image < 0.99).any(), "nothing was drawn"
    assert smooth([1.0, float("nan"), 3.0], 0.5) == [1.0, 1.0, 2.0]


def test_validation_split_and_preview_settings_are_checked():
    assert TrainConfig(validation_split=0.25).validate().validation_split == 0.25
    for bad in (-0.1, 0.6):
        with pytest.raises(TrainingError, match="validation_split must be"):
            TrainConfig(validation_split=bad).validate()
    with pytest.raises(TrainingError, match="set validate_every"):
        TrainConfig(validation_split=0.2, validate_every=0).validate()
    with pytest.raises(TrainingError, match="preview_steps must be"):
        TrainConfig(preview_steps=0).validate()
    with pytest.raises(TrainingError, match="preview_cfg must be"):
        TrainConfig(preview_cfg=float("nan")).validate()


def test_plateau_without_validation_takes_all_steps_and_says_so():
    plain = TrainConfig(validate_every=0).validate()
    assert plain.stop_rule == "plateau" and not plain.stops_at_plateau
    assert "takes all its steps" in plain.stop_rule_note()
    assert TrainConfig().stops_at_plateau and TrainConfig().stop_rule_note() is None
    assert TrainConfig(stop_rule="steps", validate_every=0).stop_rule_note() is None
