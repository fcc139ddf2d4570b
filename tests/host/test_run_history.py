"""The live run history the training view reads (/tokensmith/runs): it keeps the newest MAX_RUNS runs
and at most MAX_EVENTS_PER_RUN events a run, thinning plain steps but never an event marker."""

from __future__ import annotations


def test_run_history_caps(pack):
    routes = pack("server_routes")
    before = routes.runs_snapshot()
    ids = [f"cap-test-{i}" for i in range(routes.MAX_RUNS + 3)]
    for i, run_id in enumerate(ids):
        routes.start_run(run_id, "1", 10, f"cap-{i}")
    kept = [r["run"] for r in routes.runs_snapshot()]
    assert kept == ids[-routes.MAX_RUNS:], kept  # the oldest went first, in order

    busy = ids[-1]
    total = routes.MAX_EVENTS_PER_RUN + 500
    for step in range(1, total + 1):
        data = {"step": step, "total": total, "loss": 0.1}
        if step % 250 == 0:
            data["event"] = {"kind": "snapshot", "step": step}
        routes.publish(busy, data)
    routes.finish_run(busy, "finished")
    run = next(r for r in routes.runs_snapshot() if r["run"] == busy)
    events = run["events"]
    assert len(events) <= routes.MAX_EVENTS_PER_RUN, len(events)
    markers = [e["event"]["step"] for e in events if e.get("event", {}).get("kind") == "snapshot"]
    assert markers == list(range(250, total + 1, 250)), markers  # every marker survives the thinning
    assert events[-1]["event"]["kind"] == "finished" and run["finished"]
    steps = [e["step"] for e in events if "step" in e]
    assert steps == sorted(steps) and steps[-1] == total  # thinned, still in order, the newest kept
    assert len(before) <= routes.MAX_RUNS


def test_a_rolled_back_step_is_published_as_valid_json(pack):
    """A rollback's report carries the non-finite loss that caused it: JSON has no NaN, and a browser's
    JSON.parse rejects the whole message, so the event would never reach the chart. Every non-finite
    number goes out as null; finite ones are kept as they are."""
    import json
    import math

    routes = pack("server_routes")
    routes.start_run("nan-test", "1", 10, "nan-run")
    routes.publish("nan-test", {"step": 3, "total": 10, "loss": math.nan, "lr": 5e-3, "norms": {"clip_l": math.inf},
                                "event": {"kind": "rollback", "step": 3, "lr_factor": 0.5}, "history": [1.0, -math.inf]})
    run = next(r for r in routes.runs_snapshot() if r["run"] == "nan-test")
    text = json.dumps(run["events"], allow_nan=False)  # raises on NaN / Infinity
    event = json.loads(text)[-1]
    assert event["loss"] is None and event["norms"] == {"clip_l": None} and event["history"] == [1.0, None]
    assert event["lr"] == 5e-3 and event["event"] == {"kind": "rollback", "step": 3, "lr_factor": 0.5}
