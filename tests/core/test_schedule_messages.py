"""Every schedule refusal word for word (the node shows it as is, so it must name the part, its
number counted as written, empty parts included, and the fix), the limits at their edges, what a
parsed list holds (the points, the step held after) and describe() with warmup. test_schedule.py
holds the rates against the reference; this holds the words and the edges."""

from __future__ import annotations

import pytest

from tokensmith.errors import ScheduleError
from tokensmith.schedule import MAX_SPEC_LENGTH, MAX_STEPS, parse_schedule

COSINE_HELP = ("write 'PEAK' or 'PEAK -> FLOOR' (e.g. '5e-3 -> 1e-5'); step lists like '0.005:100, 1e-3' are "
               "for shape 'steps'")
NUMBER_HELP = "is not a number; write rates like 0.005 or 5e-3"


@pytest.mark.parametrize("spec, kwargs, message", [
    ("", {}, "empty schedule; write a rate such as 0.005, or e.g. '0.005:100, 1e-3'"),
    (" , ", {}, "empty schedule; write a rate such as 0.005"),
    ("abc", {}, f"part 1 'abc': 'abc' {NUMBER_HELP}"),
    ("0.1, 0.01", {}, "part 1 '0.1' has no ':STEP' but is not the last part; every rate but the last needs one"),
    ("0.1:10, 0.01:5, 0.001", {}, "part 2 '0.01:5': step 5 must be after the previous part's step 10"),
    (" , , 0.1:3, ,0.2:3", {}, "part 5 '0.2:3': step 3 must be after the previous part's step 3"),
    ("0.1:x", {}, "part 1 '0.1:x': step 'x' is not a whole number"),
    ("0.1:0", {}, "part 1 '0.1:0': step 0 must be between 1 and 1000000000"),
    ("0.1:1000000001", {}, "part 1 '0.1:1000000001': step 1000000001 must be between 1 and 1000000000"),
    ("0.1:-1, 0.2", {}, "part 1 '0.1:-1': ':-1' means 'until the end' and only fits the last part"),
    ("-0.1", {}, "part 1 '-0.1': rate -0.1 is negative; rates must be >= 0"),
    ("nan", {}, f"part 1 'nan': 'nan' {NUMBER_HELP}"),
    ("1e999", {}, "part 1 '1e999': '1e999' is too large"),
    ("0.1:1:2", {}, "part 1 '0.1:1:2': use one ':' per part, as in 0.005:100"),
    ("0.1:10, 0.2", {"shape": "constant"},
     "a constant schedule is one number, got '0.1:10, 0.2'; use shape 'steps' for a list"),
    (" 0.1:5 ", {"shape": "constant"}, "a constant schedule is one number, got '0.1:5'; use shape 'steps' for a list"),
    (" 0.1 -> 0.2 ", {}, "'->' in '0.1 -> 0.2' only works with shape 'cosine'"),
    (" 0.1:10 ", {"shape": "cosine"}, f"cosine schedule '0.1:10': {COSINE_HELP}"),
    ("0.1, 0.2", {"shape": "cosine"}, f"cosine schedule '0.1, 0.2': {COSINE_HELP}"),
    (" 1 -> 2 -> 3", {"shape": "cosine"}, "cosine schedule '1 -> 2 -> 3' has more than one '->'"),
    ("-> 2", {"shape": "cosine"}, f"cosine start: '' {NUMBER_HELP}"),
    ("2 -> x", {"shape": "cosine"}, f"cosine end: 'x' {NUMBER_HELP}"),
    ("0.1", {"shape": "linear"}, "unknown schedule shape 'linear'; use one of steps, constant, cosine"),
    ("0.1", {"warmup_steps": 10}, "warmup_steps (10) must be smaller than total_steps (10); lower the warmup"),
    ("0.1", {"warmup_steps": -1}, "warmup_steps must be between 0 and 1000000000, got -1"),
    ("0.1", {"total_steps": True}, "total_steps must be a whole number, got True"),
    ("0.1", {"total_steps": 10.0}, "total_steps must be a whole number, got 10.0"),
    ("0.1", {"total_steps": MAX_STEPS + 1}, "total_steps must be between 1 and 1000000000, got 1000000001"),
    (",".join(["0.1:1"] * 101), {}, "schedule has 101 parts; the limit is 100"),
    (7, {}, "a schedule must be text, got int"),
    ("1" * (MAX_SPEC_LENGTH + 1), {}, "schedule is 2001 characters long; the limit is 2000"),
])
def test_each_refusal_word_for_word(spec, kwargs, message):
    kwargs = {"total_steps": 10, **kwargs}
    with pytest.raises(ScheduleError) as info:
        parse_schedule(spec, **kwargs)
    assert str(info.value) == message


def test_limits_are_inclusive():
    assert parse_schedule("1e-3" + " " * (MAX_SPEC_LENGTH - 4), 5).value(5) == 1e-3
    assert parse_schedule("1e-3", MAX_STEPS).value(MAX_STEPS) == 1e-3
    assert parse_schedule(",".join(f"0.1:{i + 1}" for i in range(99)) + ",0.2", 200).value(200) == 0.2
    assert parse_schedule(f"0.1:{MAX_STEPS}", 10).last_step == MAX_STEPS


@pytest.mark.parametrize("step", [0, True, 2.0, "2"])
def test_value_takes_whole_steps_from_one(step):
    with pytest.raises(ScheduleError) as info:
        parse_schedule("0.1", 5).value(step)
    assert str(info.value) == f"schedule steps count from 1, got {step!r}"


def test_a_list_holds_its_points_and_the_step_written_last():
    s = parse_schedule(" , 0.1:3,, 0.01:8 ,", 10)
    assert s.shape == "steps" and s.points == ((0.1, 3), (0.01, None)) and s.last_step == 8
    assert parse_schedule("0.1:3, 0.01", 10).last_step is None
    assert parse_schedule("0.1:3, 0.01:-1", 10).points == ((0.1, 3), (0.01, None))
    assert [parse_schedule("0.1:3, 0.01:-1", 10).value(i) for i in (3, 4)] == [0.1, 0.01]
    c = parse_schedule(" 0.1 ", 10, shape="constant")
    assert c.shape == "constant" and c.points == ((0.1, None),)
    cos = parse_schedule("0.1 -> 0.01", 10, shape="cosine")
    assert cos.points == ((0.1, None),) and cos.floor == 0.01
    assert parse_schedule("0.1", 10, shape="cosine").floor == 0.0


def test_describe_adds_the_hold_and_the_warmup():
    assert parse_schedule("0.1:3, 0.01:8", 10, warmup_steps=2).describe() == (
        "0.1 until step 3, then 0.01 (held after step 8); linear warmup over the first 2 steps")
    assert parse_schedule("0.1", 10, warmup_steps=2).describe() == "constant 0.1; linear warmup over the first 2 steps"
    assert parse_schedule("0.1 -> 0.01", 10, warmup_steps=2, shape="cosine").describe() == (
        "cosine from 0.1 to 0.01 over steps 3-10; linear warmup over the first 2 steps")


def test_constant_lists_warmup_edges_and_the_length_kept():
    with pytest.raises(ScheduleError) as info:
        parse_schedule("0.1, 0.2", 10, shape="constant")
    assert str(info.value) == "a constant schedule is one number, got '0.1, 0.2'; use shape 'steps' for a list"
    with pytest.raises(ScheduleError) as info:
        parse_schedule("0.1", 1, warmup_steps=1)
    assert str(info.value) == "warmup_steps (1) must be smaller than total_steps (1); lower the warmup"
    assert parse_schedule("0.1", 1).value(1) == 0.1
    assert parse_schedule("0.1:3, 0.01", 10).total_steps == 10
    assert parse_schedule("0.1", 10, shape="constant").total_steps == 10
