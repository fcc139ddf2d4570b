"""What a training run records step by step, and a picture of it (loss, validation, LR, norm)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .training_math import smooth

# the smoothed loss line: the weight kept from the past (training_math.smooth; the live chart on the
# node, js/training_view.js, smooths the same way with its own setting)
LOSS_SMOOTHING = 0.9


@dataclass
class TrainingHistory:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    norm: list[float] = field(default_factory=list)  # mean vector L2 norm over every encoder
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # rollbacks, early stop, cancel, saves

    def record(self, step: int, loss: float, lr: float, norm: float) -> None:
        self.steps.append(int(step))
        self.loss.append(float(loss))
        self.learning_rate.append(float(lr))
        self.norm.append(float(norm))

    def record_validation(self, step: int, loss: float) -> None:
        self.val_steps.append(int(step))
        self.val_loss.append(float(loss))

    def event(self, step: int, kind: str, **info) -> None:
        self.events.append({"step": int(step), "kind": kind, **info})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainingHistory:
        data = json.loads(text)
        return cls(**{k: data.get(k, []) for k in cls.__dataclass_fields__})


_COLOURS = {
    "loss": (150, 170, 210),
    "smoothed": (40, 90, 200),
    "validation": (220, 80, 40),
    "learning rate": (60, 160, 60),
    "norm": (160, 60, 170),
}


def draw_history(history: TrainingHistory, width: int = 768, height: int = 512) -> np.ndarray:
    """An RGB float image [H, W, 3] in 0..1: loss (raw, smoothed) and validation loss on top,
    learning rate and vector norm below, each scaled to its own range."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    margin = 36
    split = int(height * 0.62)
    panels = [(margin, 20, width - margin, split - 16), (margin, split + 16, width - margin, height - 24)]
    for box in panels:
        draw.rectangle(box, outline=(180, 180, 180))
    steps = history.steps or [0]
    x_max = max(max(steps), max(history.val_steps or [0]), 1)

    def polyline(box, xs, ys, colour):
        pts = [(x, y) for x, y in zip(xs, ys, strict=False) if math.isfinite(y)]
        if not pts:
            return
        lo = min(y for _, y in pts)
        hi = max(y for _, y in pts)
        span = hi - lo or 1.0
        x0, y0, x1, y1 = box
        coords = [(x0 + (x1 - x0) * x / x_max, y1 - (y1 - y0) * (y - lo) / span) for x, y in pts]
        if len(coords) == 1:
            cx, cy = coords[0]
            draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        else:
            draw.line(coords, fill=colour, width=2)

    # loss panel: raw, smoothed and validation share one scale so they can be compared
    loss_all = [v for v in history.loss + history.val_loss if math.isfinite(v)]
    if loss_all:
        lo, hi = min(loss_all), max(loss_all)
        span = hi - lo or 1.0
        x0, y0, x1, y1 = panels[0]
        for name, xs, ys in (("loss", history.steps, history.loss),
                             ("smoothed", history.steps, smooth(history.loss, LOSS_SMOOTHING)),
                             ("validation", history.val_steps, history.val_loss)):
            pts = [(x0 + (x1 - x0) * x / x_max, y1 - (y1 - y0) * (y - lo) / span)
                   for x, y in zip(xs, ys, strict=False) if math.isfinite(y)]
            if len(pts) > 1:
                draw.line(pts, fill=_COLOURS[name], width=2)
            for px, py in pts if len(pts) == 1 or name == "validation" else []:
                draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=_COLOURS[name])
        draw.text((x0 + 4, y0 + 2), f"loss {lo:.4g} .. {hi:.4g}", fill=(0, 0, 0))
    polyline(panels[1], history.steps, history.learning_rate, _COLOURS["learning rate"])
    polyline(panels[1], history.steps, history.norm, _COLOURS["norm"])
    legend_x = margin
    for name, colour in _COLOURS.items():
        draw.rectangle((legend_x, height - 16, legend_x + 10, height - 6), fill=colour)
        draw.text((legend_x + 14, height - 18), name, fill=(0, 0, 0))
        legend_x += 18 + 7 * len(name) + 10
    if history.learning_rate:
        draw.text((panels[1][0] + 4, panels[1][1] + 2),
                  f"lr {history.learning_rate[-1]:.3g}  norm {history.norm[-1]:.3g}  step {steps[-1]}", fill=(0, 0, 0))
    for ev in history.events:
        if ev.get("kind") in ("rollback", "early_stop", "cancelled"):
            x = panels[0][0] + (panels[0][2] - panels[0][0]) * ev["step"] / x_max
            draw.line([(x, panels[0][1]), (x, panels[0][3])], fill=(230, 170, 0), width=1)
    return np.asarray(img, dtype=np.float32) / 255.0
