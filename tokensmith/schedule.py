"""Learning-rate (and gradient-clip) schedules from short strings.

``parse_schedule(spec, total_steps, warmup_steps=0, shape="steps")`` returns a :class:`Schedule`
whose ``value(step)`` gives the rate for 1-based optimizer step ``step``.

Shapes and their ``spec``:

``"steps"`` (default), the A1111 syntax
    ``0.005:100, 1e-3:1000, 1e-5`` = 0.005 for steps 1-100, 1e-3 for steps 101-1000, then 1e-5
    forever. A single number is a constant. Every part but the last needs ``:STEP`` and the steps
    must increase. On the last part ``:STEP`` or ``:-1`` is accepted and the rate simply holds
    after it (A1111 would stop training there; here ``total_steps`` decides the length).
    Empty parts (``1e-3:10,,1e-4``) are skipped, as in A1111.
``"constant"``
    one number.
``"cosine"``
    ``PEAK`` or ``PEAK -> FLOOR`` (FLOOR defaults to 0): half-cosine from PEAK right after warmup
    down to FLOOR at ``total_steps``; FLOOR holds after that.

``warmup_steps`` (any shape): the rate ramps linearly, ``value = scheduled * step / warmup_steps``
for ``step <= warmup_steps`` (so step 1 is never 0). For "cosine" the curve starts after warmup.

Numbers: ``5e-3``, ``0.005``, ``.5``, ``1E-4``; no signs other than ``-1`` as a final step, no
``nan``/``inf``.
Limits: 2,000 characters, 100 parts. Bad input raises :class:`ScheduleError` naming the bad part.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ScheduleError

MAX_SPEC_LENGTH = 2000
MAX_PARTS = 100
MAX_STEPS = 1_000_000_000
SHAPES = ("steps", "constant", "cosine")

_RATE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_STEP = re.compile(r"[+-]?[0-9]+")


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``points`` holds ``(rate, until_step)``; ``until_step`` is None for the last."""

    shape: str
    points: tuple[tuple[float, int | None], ...]
    total_steps: int
    warmup_steps: int = 0
    floor: float = 0.0  # cosine only
    last_step: int | None = None  # an explicit step written on the last part, if any

    def value(self, step: int) -> float:
        """The rate for 1-based optimizer step ``step`` (steps past ``total_steps`` hold the end value)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ScheduleError(f"schedule steps count from 1, got {step!r}")
        if self.shape == "cosine":
            peak = self.points[0][0]
            if step <= self.warmup_steps:
                return peak * step / self.warmup_steps
            span = self.total_steps - self.warmup_steps
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.floor + (peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        rate = self.points[-1][0]
        for r, until in self.points:
            if until is not None and step <= until:
                rate = r
                break
        if step <= self.warmup_steps:
            rate *= step / self.warmup_steps
        return rate

    __call__ = value

    def describe(self) -> str:
        """A one-line human description, e.g. for node tooltips and logs."""
        if self.shape == "cosine":
            start = self.warmup_steps + 1
            text = (
                f"cosine from {_fmt(self.points[0][0])} to {_fmt(self.floor)} "
                f"over steps {start}-{self.total_steps}"
            )
        elif len(self.points) == 1:
            text = f"constant {_fmt(self.points[0][0])}"
        else:
            parts = [f"{_fmt(r)} until step {until}" for r, until in self.points[:-1]]
            text = ", ".join(parts) + f", then {_fmt(self.points[-1][0])}"
        if self.last_step is not None:
            text += f" (held after step {self.last_step})"
        if self.warmup_steps:
            text += f"; linear warmup over the first {self.warmup_steps} steps"
        return text


def _rate(text: str, where: str) -> float:
    text = text.strip()
    if not _RATE.fullmatch(text):
        raise ScheduleError(f"{where}: {text!r} is not a number; write rates like 0.005 or 5e-3")
    value = float(text)
    if not math.isfinite(value):
        raise ScheduleError(f"{where}: {text!r} is too large")
    if value < 0:
        raise ScheduleError(f"{where}: rate {text} is negative; rates must be >= 0")
    return value


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleError(f"{name} must be a whole number, got {value!r}")
    if value < minimum or value > MAX_STEPS:
        raise ScheduleError(f"{name} must be between {minimum} and {MAX_STEPS}, got {value}")
    return value


def parse_schedule(spec: str, total_steps: int, warmup_steps: int = 0, shape: str = "steps") -> Schedule:
    """Parse ``spec`` for the given ``shape`` (see the module docstring for the syntax)."""
    if not isinstance(spec, str):
        raise ScheduleError(f"a schedule must be text, got {type(spec).__name__}")
    if len(spec) > MAX_SPEC_LENGTH:
        raise ScheduleError(f"schedule is {len(spec)} characters long; the limit is {MAX_SPEC_LENGTH}")
    if shape not in SHAPES:
        raise ScheduleError(f"unknown schedule shape {shape!r}; use one of {', '.join(SHAPES)}")
    total_steps = _check_int(total_steps, "total_steps", 1)
    warmup_steps = _check_int(warmup_steps, "warmup_steps", 0)
    if warmup_steps >= total_steps and warmup_steps > 0:
        raise ScheduleError(
            f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps}); lower the warmup"
        )
    if not spec.strip():
        raise ScheduleError("empty schedule; write a rate such as 0.005, or e.g. '0.005:100, 1e-3'")
    if shape == "cosine":
        peak, floor = _cosine_rates(spec)
        return Schedule("cosine", ((peak, None),), total_steps, warmup_steps, floor=floor)
    points, last_step = _step_points(spec, shape)
    return Schedule(
        "constant" if shape == "constant" else "steps",
        tuple(points),
        total_steps,
        warmup_steps,
        last_step=last_step,
    )


def _cosine_rates(spec: str) -> tuple[float, float]:
    # 'PEAK' or 'PEAK -> FLOOR'
    if "," in spec or ":" in spec:
        raise ScheduleError(
            f"cosine schedule {spec.strip()!r}: write 'PEAK' or 'PEAK -> FLOOR' (e.g. '5e-3 -> 1e-5'); "
            "step lists like '0.005:100, 1e-3' are for shape 'steps'"
        )
    pieces = spec.split("->")
    if len(pieces) > 2:
        raise ScheduleError(f"cosine schedule {spec.strip()!r} has more than one '->'")
    peak = _rate(pieces[0], "cosine start")
    floor = _rate(pieces[1], "cosine end") if len(pieces) == 2 else 0.0
    return peak, floor


def _step_points(spec: str, shape: str) -> tuple[list[tuple[float, int | None]], int | None]:
    # A1111's 'RATE:UNTIL, ..., RATE' (or one number for 'constant'): the points and the last part's step
    if "->" in spec:
        raise ScheduleError(f"'->' in {spec.strip()!r} only works with shape 'cosine'")
    raw_parts = spec.split(",")
    if len(raw_parts) > MAX_PARTS:
        raise ScheduleError(f"schedule has {len(raw_parts)} parts; the limit is {MAX_PARTS}")
    parts = [(i + 1, p.strip()) for i, p in enumerate(raw_parts) if p.strip()]
    if not parts:
        raise ScheduleError("empty schedule; write a rate such as 0.005")
    if shape == "constant" and (len(parts) > 1 or ":" in parts[0][1]):
        raise ScheduleError(f"a constant schedule is one number, got {spec.strip()!r}; use shape 'steps' for a list")
    points: list[tuple[float, int | None]] = []
    last_step = None
    previous = 0
    for idx, (number, text) in enumerate(parts):
        is_last = idx == len(parts) - 1
        rate, step = _step_part(f"part {number} {text!r}", text, is_last, previous)
        if step is None:
            points.append((rate, None))
            continue
        previous = step
        if is_last:
            last_step = step
            points.append((rate, None))
        else:
            points.append((rate, step))
    return points, last_step


def _step_part(where: str, text: str, is_last: bool, previous: int) -> tuple[float, int | None]:
    # one 'RATE' or 'RATE:STEP' part: its rate and step (None: until the end)
    pieces = text.split(":")
    if len(pieces) > 2:
        raise ScheduleError(f"{where}: use one ':' per part, as in 0.005:100")
    rate = _rate(pieces[0], where)
    if len(pieces) == 1:
        if not is_last:
            raise ScheduleError(f"{where} has no ':STEP' but is not the last part; every rate but the last needs one")
        return rate, None
    step_text = pieces[1].strip()
    if not _STEP.fullmatch(step_text):
        raise ScheduleError(f"{where}: step {step_text!r} is not a whole number")
    step = int(step_text)
    if step == -1:
        if not is_last:
            raise ScheduleError(f"{where}: ':-1' means 'until the end' and only fits the last part")
        return rate, None
    if step < 1 or step > MAX_STEPS:
        raise ScheduleError(f"{where}: step {step} must be between 1 and {MAX_STEPS}")
    if step <= previous:
        raise ScheduleError(f"{where}: step {step} must be after the previous part's step {previous}")
    return rate, step
