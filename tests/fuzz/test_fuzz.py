"""Every reader and parser under generated and mutated input: only TokenSmithError may come out,
each input stays within the memory bound, and no hostile pickle runs anything.

The inputs come from devkit/fuzzing/ (seeded; see conftest.py for the budget). A failure names
the target, seed and index, which `python -m devkit.fuzzing repro` replays alone.
"""

from __future__ import annotations

import json

import pytest

from devkit.fuzzing import runner

# What each target must reach at least once, so a generator that only makes trivially refused
# input (and would hide bugs) fails here instead of passing quietly.
MUST_REACH = {
    "formats": ("read", "refused"),
    "pickles": ("refused",),
    "expression": ("evaluated", "refused"),
    "schedule": ("parsed", "refused"),
    "templates": ("ok", "refused"),
    "names": ("joined", "join-refused"),
}


def _show(items) -> str:
    return json.dumps(items[:3], indent=1, ensure_ascii=True)[:4000]


def test_the_whole_budget_ran(fuzz_run):
    report = fuzz_run["report"]
    shares = runner.budget(report["total_budget"])
    assert report["inputs"] >= report["total_budget"]
    for target, count in shares.items():
        assert report["targets"][target]["count"] == count, target


@pytest.mark.parametrize("target", runner.TARGETS)
def test_only_tokensmith_errors_escape(fuzz_run, target):
    result = fuzz_run["report"]["targets"][target]
    assert result["escape_count"] == 0, (
        f"{result['escape_count']} {target} inputs raised something other than a TokenSmithError or broke a "
        f"property (replay: python -m devkit.fuzzing repro {target} --seed {result['seed']} --index N):\n"
        + _show(result["escapes"]))


@pytest.mark.parametrize("target", runner.TARGETS)
def test_memory_per_input_stays_bounded(fuzz_run, target):
    """Peak resident growth per input is the bound. Time per input is a figure (it depends on the
    machine's load), reported here and in the fuzz report's "slow" / "max_case_s", not asserted; a
    hang still ends the run at the runner's timeout."""
    result = fuzz_run["report"]["targets"][target]
    assert not result["over_memory"], f"inputs over {runner.MEMORY_BOUND_MB} MB:\n" + _show(result["over_memory"])
    assert result["max_growth_mb"] <= runner.MEMORY_BOUND_MB
    if result["slow"]:
        print(f"{target}: inputs over {runner.SLOW_CASE_S} s (a figure, not a failure):\n" + _show(result["slow"]))


@pytest.mark.parametrize("target", runner.TARGETS)
def test_generators_reach_past_the_first_check(fuzz_run, target):
    result = fuzz_run["report"]["targets"][target]
    for outcome in MUST_REACH[target]:
        assert result["outcomes"].get(outcome, 0) > 0, (target, outcome, result["outcomes"])
    if target == "formats":
        # many different refusals: the mutations get into every layer of every reader
        assert result["distinct_outcomes"] >= 25, result["distinct_outcomes"]
        assert result["outcomes"]["read"] >= result["count"] // 50


def test_no_hostile_pickle_ran_code(fuzz_run):
    markers = fuzz_run["markers"]
    assert (markers / "canary").is_file(), "a hostile pickle deleted the canary file"
    assert (markers / "canary_dir").is_dir(), "a hostile pickle deleted the canary folder"
    ran = sorted(p.name for p in markers.iterdir() if p.name not in ("canary", "canary_dir"))
    assert not ran, f"hostile pickles ran code: {ran}"
