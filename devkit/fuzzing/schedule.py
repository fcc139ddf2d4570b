"""The ``schedule`` target: learning-rate schedule strings and step counts -> parse_schedule / value
(finite, not negative; bad steps refused)."""

from __future__ import annotations

import math

from devkit.fuzzing.shared import mutate_text, reason_key

_GOOD_RATES = ("0.005", "5e-3", "1e-3", ".5", "5.", "0", "1E-4", "+1", "2.5e-2", "1e-10")
_BAD_RATES = ("-1", "1e400", "nan", "inf", "1_000", "٣", "１", "0x10", "", " ", "1e", "e5", "1.2.3", "1,5")


def _schedule_text(rng) -> str:
    def rate():
        if rng.random() < 0.85:
            return rng.choice(_GOOD_RATES + (f"{rng.random():.4g}",))
        return rng.choice(_BAD_RATES)

    counter = [0]

    def step():
        if rng.random() < 0.85:  # mostly increasing steps, so whole lists parse
            counter[0] += rng.randint(1, 500)
            return str(counter[0])
        return rng.choice(("-1", "0", "+5", "1e3", "1.5", "", "999999999999", "٣", "1000000001"))
    shape = rng.random()
    if shape < 0.15:
        return rate() + rng.choice((" -> ", "->", "-> ->")) + rate()
    parts = []
    count = rng.choice((1, 1, 2, 3, 5, 100, 101))
    for i in range(count):
        p = rate()
        if i < count - 1 or rng.random() < 0.3:
            p += ":" + step()
        if rng.random() < 0.03:
            p += ":" + step()
        parts.append(p)
    text = rng.choice((",", ", ", " ,")).join(parts)
    if rng.random() < 0.15:
        text = mutate_text(rng, text)
    if rng.random() < 0.02:
        text = text * rng.choice((50, 500))
    return text


def make_schedule_case(rng):
    total = rng.choice((1, 2, 10, 100, 1000, 5000, 5000, 1_000_000_000, 1_000_000_001, 0, -1, True, 2.5,
                        rng.randint(1, 5000)))
    warmup = rng.choice((0, 0, 0, 0, 1, 5, 99, 100, 1000, -1, True, rng.randint(0, 200)))
    shape = rng.choice(("steps", "steps", "steps", "constant", "cosine", "linear", "", None))
    spec = _schedule_text(rng) if rng.random() < 0.97 else rng.choice((None, 5, b"0.1", ["1e-3"]))
    return spec, total, warmup, shape


def run_schedule_case(case) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.schedule import parse_schedule

    spec, total, warmup, shape = case
    try:
        sched = parse_schedule(spec, total, warmup, shape)
    except TokenSmithError as exc:
        return "refused", reason_key(exc)
    for step in sorted({1, 2, warmup if isinstance(warmup, int) and warmup > 0 else 1, total, total + 1,
                        min(total * 3, 10**12)}):
        value = sched.value(int(step))
        assert math.isfinite(value) and value >= 0, (step, value)
    assert isinstance(sched.describe(), str)
    for bad in (0, -1, True, 1.5):
        try:
            sched.value(bad)
        except TokenSmithError:
            continue
        raise AssertionError(f"value({bad!r}) was accepted")
    return "parsed", sched.shape
