"""Seeded input generators, mutators and a runner for TokenSmith's fuzz tests.

Every case is made from ``random.Random(f"{target}:{seed}:{index}")``, so any single input can be
rebuilt from its (target, seed, index) and a failure found by a long run can be replayed alone:

    python -m devkit.fuzzing repro formats --seed 0 --index 1234 --seeds DIR

Targets (each maps an input to calls of the core; only TokenSmithError may come out of them), one
module each (``shared`` holds what they share, ``runner`` the budget, memory meter and command lines):

- ``formats``     bytes of embedding files (seed files of every layout, then byte mutations and
                  structure-aware ones: safetensors header lies, zip records, pickle opcodes, PNG
                  chunks and their JSON) -> ``read_header`` + ``read_embedding``
- ``pickles``     hostile pickles (code-running globals), mutated and wrapped as zip / legacy / bare
                  pickles -> the same readers; marker files must never appear
- ``expression``  merge expressions (grammar-made, mutated, random unicode) -> parse / unparse /
                  evaluate
- ``schedule``    learning-rate schedule strings and step counts -> parse_schedule / value
- ``templates``   template presets, custom templates, captions, tag shaping, TrainConfig values
- ``names``       embedding names -> validate_name / safe_join

The runner measures each case's peak memory above the resident size before it (``VmHWM`` reset
through ``/proc/self/clear_refs``; where that is not possible, the process peak) and its time.

    python -m devkit.fuzzing run --count 3000 --seed 0 --seeds DIR --workdir DIR --report FILE
"""
