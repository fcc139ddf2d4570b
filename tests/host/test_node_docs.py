"""The help pages and tooltips agree with the node schemas ComfyUI loads: every input of every node
has a tooltip and is listed in its node's page (js/docs/<node_id>.md), fixed choices are spelled out,
the Train Embedding page's inputs table gives every input with the schema's default, and tooltips
carry no benchmark figures (those live in docs/performance.md, where they can be dated and sourced)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "js" / "docs"
# combo inputs whose options are files on disk, not a fixed list to document
FILE_LISTS = {("TokenSmithLoadEmbedding", "file"), ("TokenSmithPickEmbedding", "embedding"),
              ("TokenSmithSaveEmbedding", "base_checkpoint")}
FIGURES = re.compile(r"\d\s*(?:GiB|GB|MiB|MB|KB|it/s|ms)\b|\b(?:H100|H200|A100|V100|RTX)\b|\bmeasured\b|"
                     r"\b(?:previously|formerly|used to be|the earlier)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def schemas(node_classes):
    return {node_id: cls.define_schema() for node_id, cls in node_classes.items()}


def doc(node_id: str) -> str:
    return (DOCS / f"{node_id}.md").read_text(encoding="utf-8")


def listed(text: str, name: str) -> bool:
    return f"`{name}`" in text or f"**{name}**" in text


def test_every_node_has_a_help_page_and_every_page_a_node(schemas):
    assert len(schemas) >= 9
    assert {p.stem for p in DOCS.glob("*.md")} == set(schemas)


def test_every_input_has_a_tooltip(schemas):
    missing = [f"{node_id}.{i.id}" for node_id, s in schemas.items() for i in s.inputs
               if not (i.tooltip or "").strip()]
    assert not missing, f"inputs without a tooltip: {missing}"


def test_every_input_is_listed_in_its_node_doc(schemas):
    missing = [f"{node_id}.{i.id}" for node_id, s in schemas.items() for i in s.inputs
               if not listed(doc(node_id), i.id)]
    assert not missing, f"inputs their node's js/docs page does not list: {missing}"


def test_every_fixed_choice_is_in_the_doc(schemas):
    missing = []
    for node_id, s in schemas.items():
        text = doc(node_id)
        for i in s.inputs:
            if getattr(i, "options", None) and (node_id, i.id) not in FILE_LISTS:
                missing += [f"{node_id}.{i.id}={o}" for o in i.options if f"`{o}`" not in text and f"| {o} |" not in text]
    assert not missing, missing


def test_train_tooltips_name_every_choice(schemas):
    """The trainer's choices are explained where the user picks them (lr_shape listed only 'auto')."""
    missing = [f"{i.id}={o}" for i in schemas["TokenSmithTrainEmbedding"].inputs
               for o in (getattr(i, "options", None) or []) if not re.search(rf"\b{re.escape(o)}\b", i.tooltip)]
    assert not missing, missing


def expected_default(inp) -> str:
    value = getattr(inp, "default", None)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    return f"{value:g}"


def inputs_table(text: str) -> dict[str, list[str]]:
    """The rows of the table under '## Inputs', by input name."""
    section = text.split("\n## Inputs", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`([a-z0-9_]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_train_doc_table_has_every_input_with_its_default(schemas):
    schema = schemas["TokenSmithTrainEmbedding"]
    rows = inputs_table(doc("TokenSmithTrainEmbedding"))
    assert set(rows) == {i.id for i in schema.inputs}, (set(rows) ^ {i.id for i in schema.inputs})
    wrong = [(i.id, rows[i.id][0], expected_default(i)) for i in schema.inputs if rows[i.id][0] != expected_default(i)]
    assert not wrong, f"(input, doc default, schema default): {wrong}"
    empty = [name for name, cells in rows.items() if len(cells) < 2 or not cells[1]]
    assert not empty, f"rows without 'when to change it': {empty}"


def test_tooltips_and_descriptions_carry_no_benchmark_figures(schemas):
    found = []
    for node_id, s in schemas.items():
        texts = [("description", s.description or "")] + [(i.id, i.tooltip or "") for i in s.inputs]
        texts += [(f"output {o.id}", getattr(o, "tooltip", None) or "") for o in s.outputs]
        found += [f"{node_id}.{where}: {text!r}" for where, text in texts if FIGURES.search(text)]
    assert not found, found


def test_the_figure_check_can_fail():
    assert FIGURES.search("on an H200, SDXL 1024px peaked at 7.9 instead of 13.4 GiB")
    assert FIGURES.search("the earlier default, 1e-2") and not FIGURES.search("0 = the vocabulary's largest norm")
