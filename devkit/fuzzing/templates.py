"""The ``templates`` target: template presets, custom templates, captions, tag shaping and
TrainConfig values."""

from __future__ import annotations

import random

from devkit.fuzzing.shared import random_unicode, reason_key


def make_templates_case(rng):
    from tokensmith.train_config import TrainConfig

    kind = rng.randrange(4)
    if kind == 0:
        preset = rng.choice(("object", "style", "negative", "custom", "custom", "Object", "", random_unicode(rng, 5)))
        lines = [rng.choice(("a photo of [name]", "[name], [filewords]", "[filewords]", "", "   ", "[NAME]",
                             "[name" , random_unicode(rng, 20), "[name]" * 3, "x" * 2100))
                 for _ in range(rng.choice((0, 1, 3, 20, 1001)))]
        return ("template_lines", preset, rng.choice(("\n", "\r\n", "\r", "\u2028")).join(lines))
    if kind == 1:
        lines = [rng.choice(("red ring, blue dot", "", " ", random_unicode(rng, 30), "a,,b", ",,,"))
                 for _ in range(rng.choice((0, 1, 2, 3, 5)))]
        return ("split_captions", rng.choice(("\n", "\r\n", "\x0b", "\x1c")).join(lines), rng.choice((0, 1, 3, 5, -1)))
    if kind == 2:
        tags = ", ".join(rng.choice(("red", "ring", "", " ", "[name]", "[filewords]", random_unicode(rng, 8)))
                         for _ in range(rng.randint(0, 12)))
        return ("shape", tags, rng.random() < 0.5, rng.choice((0.0, 0.3, 0.95, 1.0, -1.0, float("nan"), 2.0)),
                rng.choice((0, 1, 3, -2, 100)), rng.choice(("a photo of [name], [filewords]", "[filewords]", "[name]",
                                                            ", , [filewords] ,", random_unicode(rng, 10))))
    fields = TrainConfig.__dataclass_fields__
    values = {}
    for name in rng.sample(sorted(fields), rng.randint(1, 6)):
        default = fields[name].default
        if isinstance(default, bool):
            values[name] = rng.random() < 0.5
        elif isinstance(default, int):
            values[name] = rng.choice((0, 1, -1, 75, 76, 2**31, 257, 256, default))
        elif isinstance(default, float):
            values[name] = rng.choice((0.0, -0.1, 1.0, 0.95, float("nan"), float("inf"), 1e308, default))
        else:
            values[name] = rng.choice(("", "custom", "auto", "fp16", "bf16", "none", "median", "cosine", "../x", "a b",
                                       random_unicode(rng, 8), default))
    return ("config", values)


def run_templates_case(case) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.templates import render, shape_caption, split_captions, template_lines
    from tokensmith.train_config import TrainConfig

    kind = case[0]
    try:
        if kind == "template_lines":
            lines = template_lines(case[1], case[2])
            assert lines and all(isinstance(x, str) and "[name]" in x for x in lines), lines[:3]
        elif kind == "split_captions":
            caps = split_captions(case[1], case[2])
            assert len(caps) == max(0, case[2]) or not case[1].strip(), (len(caps), case[2])
        elif kind == "shape":
            _, tags, shuffle, dropout, keep, template = case
            out = shape_caption(tags, random.Random(0), shuffle, dropout, keep)
            assert isinstance(out, str)
            prompt = render(template, out)
            assert isinstance(prompt, str)
            assert prompt.count("[name]") >= template.count("[name]"), (template, prompt)
        else:
            TrainConfig(**case[1]).validate()
    except TokenSmithError as exc:
        return "refused", f"{kind}: {reason_key(exc)}"
    return "ok", kind
