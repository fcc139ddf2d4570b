import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensmith.errors import ScheduleError
from tokensmith.schedule import MAX_PARTS, MAX_SPEC_LENGTH, parse_schedule


def test_a1111_example():
    s = parse_schedule("0.005:100, 1e-3:1000, 1e-5", total_steps=5000)
    assert s.value(1) == 0.005
    assert s.value(100) == 0.005
    assert s.value(101) == 1e-3
    assert s.value(1000) == 1e-3
    assert s.value(1001) == 1e-5
    assert s.value(10**7) == 1e-5
    assert s.describe() == "0.005 until step 100, 0.001 until step 1000, then 1e-05"


def test_single_number_is_constant():
    s = parse_schedule(" 5e-3 ", total_steps=10)
    assert [s.value(i) for i in (1, 5, 10, 11)] == [5e-3] * 4
    assert s.describe() == "constant 0.005"
    assert parse_schedule("2", 10, shape="constant").value(3) == 2.0


def test_last_part_with_step_or_minus_one_holds():
    s = parse_schedule("0.1:10, 0.01:20", total_steps=100)
    assert s.value(20) == 0.01 and s.value(50) == 0.01
    assert s.last_step == 20
    assert s.describe() == "0.1 until step 10, then 0.01 (held after step 20)"
    assert parse_schedule("0.1:10, 0.01:-1", 100).value(99) == 0.01
    assert parse_schedule("0.1:10,, 0.01,", 100).value(11) == 0.01  # empty parts skipped, as in A1111


def test_warmup_on_steps():
    s = parse_schedule("1.0:100, 0.5", total_steps=200, warmup_steps=4)
    assert [s.value(i) for i in (1, 2, 4, 5, 101)] == [0.25, 0.5, 1.0, 1.0, 0.5]
    assert "warmup over the first 4 steps" in s.describe()


def test_cosine():
    s = parse_schedule("1.0 -> 0.0", total_steps=110, warmup_steps=10, shape="cosine")
    assert s.value(5) == pytest.approx(0.5)
    assert s.value(10) == pytest.approx(1.0)
    assert s.value(60) == pytest.approx(0.5)  # half way through the 100 cosine steps
    assert s.value(110) == pytest.approx(0.0, abs=1e-12)
    assert s.value(500) == pytest.approx(0.0, abs=1e-12)
    floor = parse_schedule("5e-3->1e-5", total_steps=100, shape="cosine")
    assert floor.value(100) == pytest.approx(1e-5)
    assert floor.value(1) == pytest.approx(1e-5 + (5e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 100)))
    assert parse_schedule("2", 10, shape="cosine").value(10) == pytest.approx(0.0, abs=1e-12)
    assert "cosine from 0.005 to 1e-05 over steps 1-100" == floor.describe()


@pytest.mark.parametrize(
    ("spec", "kwargs", "words"),
    [
        ("", {}, "empty schedule"),
        (" , ", {}, "empty schedule"),
        ("abc", {}, "part 1 'abc'"),
        ("0.1, 0.01", {}, "part 1 '0.1' has no ':STEP'"),
        ("0.1:10, 0.01:5, 0.001", {}, "part 2 '0.01:5': step 5 must be after"),
        ("0.1:x", {}, "not a whole number"),
        ("0.1:0", {}, "between 1 and"),
        ("0.1:-1, 0.2", {}, "only fits the last part"),
        ("-0.1", {}, "negative"),
        ("nan", {}, "not a number"),
        ("inf", {}, "not a number"),
        ("1e999", {}, "too large"),
        ("0.1:1:2", {}, "one ':'"),
        ("1_000", {}, "not a number"),
        ("0.1:10, 0.2", {"shape": "constant"}, "constant schedule is one number"),
        ("0.1 -> 0.2", {}, "only works with shape 'cosine'"),
        ("0.1:10, 0.2", {"shape": "cosine"}, "PEAK -> FLOOR"),
        ("1 -> 2 -> 3", {"shape": "cosine"}, "more than one"),
        ("-> 2", {"shape": "cosine"}, "cosine start"),
        ("0.1", {"shape": "linear"}, "unknown schedule shape"),
        ("0.1", {"warmup_steps": 10}, "smaller than total_steps"),
        ("0.1", {"warmup_steps": -1}, "warmup_steps"),
    ],
)
def test_errors_name_the_bad_part(spec, kwargs, words):
    with pytest.raises(ScheduleError) as info:
        parse_schedule(spec, total_steps=10, **kwargs)
    assert words in str(info.value)


def test_bad_arguments():
    with pytest.raises(ScheduleError, match="total_steps"):
        parse_schedule("0.1", total_steps=0)
    with pytest.raises(ScheduleError, match="count from 1"):
        parse_schedule("0.1", total_steps=5).value(0)
    with pytest.raises(ScheduleError, match="limit"):
        parse_schedule("1" * (MAX_SPEC_LENGTH + 1), total_steps=5)
    with pytest.raises(ScheduleError, match="parts"):
        parse_schedule(",".join(f"0.1:{i + 1}" for i in range(MAX_PARTS)) + ",0.1", total_steps=5)


RATES = st.floats(min_value=0, max_value=10, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(RATES, st.integers(1, 50)), min_size=0, max_size=6),
    RATES,
    st.integers(1, 400),
    st.integers(0, 20),
)
def test_steps_match_reference(pairs, last, step, warmup):
    until, points = 0, []
    for rate, gap in pairs:
        until += gap
        points.append((rate, until))
    spec = ", ".join([f"{r!r}:{u}" for r, u in points] + [repr(last)])
    s = parse_schedule(spec, total_steps=1000, warmup_steps=warmup)
    expected = next((r for r, u in points if step <= u), last)
    if warmup and step <= warmup:
        expected *= step / warmup
    assert s.value(step) == pytest.approx(expected)
    assert isinstance(s.describe(), str)


@settings(max_examples=100, deadline=None)
@given(RATES, RATES, st.integers(2, 500), st.data())
def test_cosine_stays_between_floor_and_peak(peak, floor, total, data):
    warmup = data.draw(st.integers(0, total - 1))
    s = parse_schedule(f"{peak!r} -> {floor!r}", total_steps=total, warmup_steps=warmup, shape="cosine")
    values = [s.value(i) for i in range(warmup + 1, total + 1)]
    lo, hi = min(peak, floor), max(peak, floor)
    assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in values)
    assert values[-1] == pytest.approx(floor)
    # monotone towards the floor
    sign = 1 if floor >= peak else -1
    assert all(sign * (b - a) >= -1e-12 for a, b in zip(values, values[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.,:-+eE >n", max_size=30), st.text(max_size=20)))
def test_random_strings_only_raise_schedule_error(spec):
    try:
        s = parse_schedule(spec, total_steps=100)
    except ScheduleError:
        return
    for step in (1, 50, 100, 1000):
        v = s.value(step)
        assert math.isfinite(v) and v >= 0
