"""Exact behaviour of TrainConfig: every refusal word for word, each limit accepted at its edge and
refused one step past it, the plateau rule's switch and note, the schedule shape, the metadata."""

import json
from dataclasses import asdict

import pytest

from tests.core.refusals import refused
from tokensmith.errors import EmbeddingNameError
from tokensmith.train_config import TrainConfig

NAN = float("nan")
INF = float("inf")


def test_validate_returns_the_config_itself():
    cfg = TrainConfig()
    assert cfg.validate() is cfg


def test_the_name_is_checked_by_the_name_rules():
    with refused("the embedding name is empty", EmbeddingNameError):
        TrainConfig(name="").validate()


# ---------------------------------------------------------------- counts and shares


@pytest.mark.parametrize("n", [1, 75])
def test_num_vectors_is_accepted_from_one_to_a_clip_chunk(n):
    assert TrainConfig(num_vectors=n).validate().num_vectors == n


@pytest.mark.parametrize("n", [0, 76])
def test_num_vectors_outside_one_chunk_is_refused(n):
    with refused(f"num_vectors must be 1..75 (one CLIP chunk), got {n}"):
        TrainConfig(num_vectors=n).validate()


def test_one_step_is_enough_and_zero_is_refused():
    assert TrainConfig(steps=1).validate().steps == 1
    with refused("steps must be at least 1: a run of 0 steps would save the untrained init vectors"):
        TrainConfig(steps=0).validate()


@pytest.mark.parametrize("change", [{"batch_size": 0}, {"gradient_accumulation": 0}])
def test_either_batch_count_below_one_is_refused(change):
    with refused("batch_size and gradient_accumulation must be at least 1"):
        TrainConfig(**change).validate()


def test_batch_counts_of_one_are_accepted():
    cfg = TrainConfig(batch_size=1, gradient_accumulation=1).validate()
    assert (cfg.batch_size, cfg.gradient_accumulation) == (1, 1)


@pytest.mark.parametrize("share", [0.0, 0.999])
def test_tag_dropout_is_accepted_from_zero_to_below_one(share):
    assert TrainConfig(tag_dropout=share).validate().tag_dropout == share


@pytest.mark.parametrize("share", [-0.001, 1.0])
def test_tag_dropout_outside_zero_to_one_is_refused(share):
    with refused("tag_dropout must be in [0, 1)"):
        TrainConfig(tag_dropout=share).validate()


# ---------------------------------------------------------------- choices


@pytest.mark.parametrize("field,choices", [
    ("precision", ["auto", "fp32", "bf16", "fp16"]),
    ("latent_sampling", ["deterministic", "once", "random"]),
    ("norm_mode", ["none", "clamp", "median"]),
    ("clip_mode", ["none", "norm", "value"]),
    ("lr_shape", ["auto", "steps", "cosine", "constant"]),
    ("stop_rule", ["steps", "plateau"]),
    ("timestep_sampling", ["uniform", "stratified"]),
])
def test_each_choice_is_accepted_and_anything_else_refused_with_the_list(field, choices):
    for value in choices:
        assert getattr(TrainConfig(**{field: value}).validate(), field) == value
    with refused(f"{field} must be one of {choices}, got 'Other'"):
        TrainConfig(**{field: "Other"}).validate()


# ---------------------------------------------------------------- numbers >= 0


@pytest.mark.parametrize("field", ["clip_value", "max_norm", "min_snr_gamma", "guidance", "preview_cfg",
                                   "plateau_threshold"])
def test_finite_settings_accept_zero_and_refuse_nan_infinity_and_negatives(field):
    assert getattr(TrainConfig(**{field: 0.0}).validate(), field) == 0.0
    for bad, shown in ((NAN, "nan"), (INF, "inf"), (-0.5, "-0.5")):
        with refused(f"{field} must be a finite number >= 0, got {shown}"):
            TrainConfig(**{field: bad}).validate()


@pytest.mark.parametrize("field", ["validate_every", "save_every", "preview_every", "early_stop_patience"])
def test_each_interval_refuses_a_negative_value(field):
    with refused("validate_every, save_every, preview_every and early_stop_patience cannot be negative"):
        TrainConfig(**{field: -1}).validate()


def test_intervals_of_zero_are_accepted():
    cfg = TrainConfig(validate_every=0, save_every=0, preview_every=0, early_stop_patience=0).validate()
    assert (cfg.validate_every, cfg.save_every, cfg.preview_every, cfg.early_stop_patience) == (0, 0, 0, 0)


def test_early_stopping_without_validation_is_refused():
    with refused("early stopping needs validation: set validate_every above 0"):
        TrainConfig(early_stop_patience=1, validate_every=0).validate()


def test_early_stopping_with_validation_every_step_is_accepted():
    assert TrainConfig(early_stop_patience=1, validate_every=1).validate().early_stop_patience == 1


# ---------------------------------------------------------------- windows, sizes, previews


@pytest.mark.parametrize("n", [1, 100])
def test_plateau_window_is_accepted_from_one_to_a_hundred(n):
    assert TrainConfig(plateau_window=n).validate().plateau_window == n


@pytest.mark.parametrize("n", [0, 101])
def test_plateau_window_outside_one_to_a_hundred_is_refused(n):
    with refused(f"plateau_window must be 1..100 validations, got {n}"):
        TrainConfig(plateau_window=n).validate()


@pytest.mark.parametrize("px", [0, 64, 4096])
def test_resolution_is_auto_or_sixty_four_to_four_thousand_ninety_six(px):
    assert TrainConfig(resolution=px).validate().resolution == px


@pytest.mark.parametrize("px", [-1, 63, 4097])
def test_other_resolutions_are_refused(px):
    with refused(f"resolution must be 0 (auto) or 64..4096 pixels, got {px}"):
        TrainConfig(resolution=px).validate()


@pytest.mark.parametrize("n", [1, 200])
def test_preview_steps_are_accepted_from_one_to_two_hundred(n):
    assert TrainConfig(preview_steps=n).validate().preview_steps == n


@pytest.mark.parametrize("n", [0, 201])
def test_preview_steps_outside_one_to_two_hundred_are_refused(n):
    with refused(f"preview_steps must be 1..200, got {n}"):
        TrainConfig(preview_steps=n).validate()


@pytest.mark.parametrize("n", [1, 256])
def test_validation_samples_are_accepted_from_one_to_two_hundred_fifty_six(n):
    assert TrainConfig(validation_samples=n).validate().validation_samples == n


@pytest.mark.parametrize("n", [0, 257])
def test_validation_samples_outside_their_range_are_refused(n):
    with refused("validation_samples must be 1..256"):
        TrainConfig(validation_samples=n).validate()


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_validation_split_is_accepted_from_zero_to_half(share):
    assert TrainConfig(validation_split=share).validate().validation_split == share


@pytest.mark.parametrize("share", [-0.01, 0.51])
def test_validation_split_outside_zero_to_half_is_refused(share):
    with refused(f"validation_split must be 0..0.5 (a share of the pictures), got {share}"):
        TrainConfig(validation_split=share).validate()


def test_a_validation_split_without_validation_is_refused():
    with refused("validation_split keeps pictures out of training for validation: set validate_every above 0, "
                 "or validation_split to 0"):
        TrainConfig(validation_split=0.1, validate_every=0).validate()


def test_no_validation_split_and_no_validation_is_accepted():
    assert TrainConfig(validation_split=0.0, validate_every=0).validate().validate_every == 0


def test_a_validation_split_with_validation_every_step_is_accepted():
    assert TrainConfig(validation_split=0.1, validate_every=1).validate().validation_split == 0.1


# ---------------------------------------------------------------- stop rule


def test_the_plateau_rule_is_on_with_any_validation():
    assert TrainConfig(stop_rule="plateau", validate_every=1).stops_at_plateau is True


def test_the_plateau_rule_is_off_without_validation():
    assert TrainConfig(stop_rule="plateau", validate_every=0).stops_at_plateau is False


def test_the_steps_rule_never_stops_at_a_plateau():
    assert TrainConfig(stop_rule="steps", validate_every=1).stops_at_plateau is False


def test_the_plateau_rule_without_validation_is_explained_word_for_word():
    assert TrainConfig(stop_rule="plateau", validate_every=0).stop_rule_note() == (
        "stop_rule 'plateau' watches the validation loss, which validate_every 0 turns off: this run takes all "
        "its steps (set validate_every above 0 to train until learned)")


def test_no_note_when_the_stop_rule_can_work():
    assert TrainConfig(stop_rule="plateau", validate_every=1).stop_rule_note() is None
    assert TrainConfig(stop_rule="steps", validate_every=0).stop_rule_note() is None


# ---------------------------------------------------------------- schedule shape and metadata


@pytest.mark.parametrize("shape", ["steps", "cosine", "constant"])
def test_a_chosen_shape_is_used_whatever_the_rate_text(shape):
    assert TrainConfig(lr_shape=shape, learning_rate="1e-3 -> 1e-4").schedule_shape() == shape
    assert TrainConfig(lr_shape=shape, learning_rate="1e-3").schedule_shape() == shape


def test_auto_shape_is_cosine_for_an_arrow_and_steps_otherwise():
    assert TrainConfig(lr_shape="auto", learning_rate="1e-3->1e-4").schedule_shape() == "cosine"
    assert TrainConfig(lr_shape="auto", learning_rate="0.005:100, 1e-3").schedule_shape() == "steps"


def test_the_metadata_is_every_setting_as_json_with_sorted_keys():
    cfg = TrainConfig(name="cat", steps=7, flip=True)
    meta = cfg.to_metadata()
    assert list(meta) == ["tokensmith.training"]
    assert meta["tokensmith.training"] == json.dumps(asdict(cfg), sort_keys=True)
    loaded = json.loads(meta["tokensmith.training"])
    assert list(loaded) == sorted(loaded) and loaded == asdict(cfg)
    assert (loaded["name"], loaded["steps"], loaded["flip"]) == ("cat", 7, True)
