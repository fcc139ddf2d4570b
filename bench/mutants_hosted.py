"""Mutation testing of the pack modules mutmut cannot reach: nodes/ and server_routes.py.

ComfyUI imports the pack under its folder's name (custom_nodes.X.nodes.prompt), and mutmut's switch
only acts on the module name it derives from the path. So this runner starts one warm in-process
ComfyUI (devkit.comfy_host), and for each mutant forks a child that compiles the mutated function
into the loaded module and runs that module's tests (pytest -x; a timeout kills it).

A mutant changes one function or method (top level, or in a class at top level: define_schema,
execute, helpers). It is applied in the child only: a function replaces the original in every pack
module that holds it (`from .files import source_of` makes a second name for it); a method replaces
the original on its class, wrapped again as a classmethod or staticmethod where the original was.
Names: nodes.prompt._file_state__3, nodes.prompt.TokenSmithPrompt.execute__3, numbered per function
in a fixed order (stable while that function's source does not change). Module-level code (sockets,
NODES lists) runs at import, before any mutant, and is not mutated.
"""

from __future__ import annotations
import __future__

import ast
import copy
import difflib
import os
import signal
import sys
import tempfile
import time
import types
from dataclasses import dataclass

from devkit.comfy_host import REPO_ROOT

# module -> (functions to mutate, None for all; the tests run per mutant, fastest and most telling
# first, since -x stops at the first failure). The tests are the ones that call the module's nodes
# (grep node ids and `nodes.X` in tests/host); SCHEMAS compare every schema with js/docs.
SCHEMAS = ["tests/host/test_node_schemas.py", "tests/host/test_node_docs.py"]  # a second or two, so first
HOSTED: dict[str, tuple[tuple[str, ...] | None, list[str]]] = {
    "server_routes": (("embedding_info_reply",), ["tests/host/test_info_route.py"]),
    "nodes.sockets": (None, []),
    # not test_picture_loader.py's training run: it checks the trainer takes the outputs, which the
    # loader's own tests check value for value
    "nodes.pictures": (None, [*SCHEMAS, "tests/host/test_picture_loader_node.py",
                              "tests/host/test_picture_loader.py::test_phone_photos_come_out_upright_and_a_control_as_written",
                              "tests/host/test_picture_loader.py::test_a_broken_file_is_named_skipped_and_the_rest_load",
                              "tests/host/test_picture_loader.py::test_names_leading_out_of_the_input_folder_are_refused"]),
    "nodes.use": (None, [*SCHEMAS, "tests/host/test_use_node_texts.py", "tests/host/test_use_nodes.py"]),
    "nodes.prompt": (None, [*SCHEMAS, "tests/host/test_prompt_node_texts.py", "tests/host/test_prompt_node.py",
                            "tests/host/test_prompt_node_stored_order.py",
                            "tests/host/test_inspect_families.py::test_prompt_warnings_on_t5_clips"]),
    "nodes.inspection": (None, [*SCHEMAS, "tests/host/test_inspect_node_source.py",
                                "tests/host/test_inspect_stored_order.py",
                                *(f"tests/host/test_file_nodes.py::test_{t}" for t in (
                                    "inspect_without_clip_reports_shapes_stats_and_hash",
                                    "inspect_of_a_merged_embedding_has_no_file_hash",
                                    "inspect_verdict_matches_what_comfyui_does",
                                    "inspect_with_clip_shows_vocabulary_norms_and_nearest_tokens",
                                    "load_reads_a1111_pt_and_png_card")),
                                "tests/host/test_inspect_families.py"]),  # builds flow models: last
    "nodes.merge": (None, [*SCHEMAS, "tests/host/test_merge_node_inputs.py", "tests/host/test_merge_node.py"]),
    "nodes.files": (None, [*SCHEMAS, "tests/host/test_file_node_inputs.py", "tests/host/test_file_nodes.py",
                           "tests/host/test_embedding_use.py", "tests/host/test_diffusers_load.py",
                           "tests/host/test_merge_node.py"]),
    "nodes.train": (None, [*SCHEMAS, "tests/host/test_trainer.py", "tests/host/test_buckets.py",
                           "tests/host/test_caption_prompts.py", "tests/host/test_validation_split.py",
                           "tests/host/test_picture_loader.py"]),
}
NODE_MODULES = [m for m in HOSTED if m.startswith("nodes.")]

# mutant -> why no test can tell it from the original (kept here, apart from bench/mutants.py's
# EQUIVALENT for tokensmith/, which is edited separately)
ADV_EMPTY = ("**ADV dropped: ADV (comfy_adapter.advanced_input()) is {} on the pinned ComfyUI 0.3.75, whose "
             "inputs take no `advanced` flag, so the schema is the same; on hosts that take it the input would no "
             "longer fold under 'advanced'")
NODE_EQUIVALENT: dict[str, str] = {
    "nodes.pictures.LoadTrainingPictures.define_schema__12": ADV_EMPTY,
    "nodes.inspection.InspectEmbedding.define_schema__19": ADV_EMPTY,
    "nodes.use.EncodeWithEmbedding.execute__10":
        "a missing text's 'text or \"\"' -> 'or \"XXXX\"': neither holds embedding:KEYWORD, so the encoder finds no "
        "place for the vectors and the node refuses with the same message (test_use_node_texts.py checks it for "
        "text None)",
    "nodes.prompt._file_state__4":
        "except OSError -> ZeroDivisionError around os.stat: the path comes from embedding_path, which returns a "
        "path only after ComfyUI's get_full_path saw it as a file (os.path.isfile), so stat fails only if the file "
        "goes in the instant between the two",
    "nodes.prompt.TokenSmithPrompt.fingerprint_inputs__8":
        "the missing names left out of the state: a missing name's entry is the constant (name, None), and when its "
        "file appears the name is in report.found, whose state is added either way, so the fingerprint changes at "
        "the same moments",
    "nodes.prompt.TokenSmithPrompt.fingerprint_inputs__14":
        "the '*names' label of the name list -> 'XX*namesXX': a constant tag, the same in every fingerprint it is "
        "compared with",
    "nodes.prompt.TokenSmithPrompt.fingerprint_inputs__17": "the '*names' label dropped: as fingerprint_inputs__14",
    "nodes.prompt.TokenSmithPrompt.fingerprint_inputs__21":
        "bool(convert_keywords) -> bool() in the result: with convert_keywords on the state always ends with the "
        "('*names', ...) entry and with it off never, so the fingerprints of the two still differ",
}

PROSE = {"tooltip", "description"}
TIMEOUT = 36  # the child's exit code when the timeout killed it (mutmut's)


# ------------------------------------------------------------------------------------ the operators

_OPPOSITE = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
             ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Mod: ast.Mult}


class _Mutator(ast.NodeTransformer):
    """Counts the mutation points of a function in a fixed order; with `target` set, applies that one.

    Operators (as mutmut's): comparison swapped for its opposite, and/or swapped, `not` dropped, an
    if/while condition negated, a string constant changed ('XX'...'XX'), a number +1, True/False
    swapped, + - * / swapped, a returned value replaced by None, an element of a tuple or list
    literal dropped, an argument of a call dropped, an except clause catching another error."""

    def __init__(self, target: int = -1):
        self.target = target
        self.count = 0
        self.applied = ""

    def _hit(self, what: str) -> bool:
        hit = self.count == self.target
        self.count += 1
        if hit:
            self.applied = what
        return hit

    def visit_FunctionDef(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[:1] + [self.visit(s) for s in body[1:]]  # the docstring is not code
        else:
            node.body = [self.visit(s) for s in body]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_keyword(self, node):
        # a schema's prose (tooltip=, description=) is text for people: its wording is reviewed, not
        # tested (test_node_docs.py checks each input has a tooltip); dropping the keyword still counts
        if node.arg in PROSE and isinstance(node.value, (ast.Constant, ast.JoinedStr)):
            return node
        return self.generic_visit(node)

    def visit_Compare(self, node):
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            if type(op) in _OPPOSITE and self._hit(f"comparison {type(op).__name__} -> opposite"):
                node.ops[i] = _OPPOSITE[type(op)]()
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        if self._hit("and/or swapped"):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._hit("not dropped"):
            return node.operand
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        if self._hit("if condition negated"):
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        return node

    visit_While = visit_If

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            if self._hit(f"{v} -> {not v}"):
                return ast.Constant(not v)
        elif isinstance(v, (int, float)):
            if self._hit(f"{v} -> {v + 1}"):
                return ast.Constant(v + 1)
        elif isinstance(v, str):
            if self._hit(f"{v!r} -> 'XX{v}XX'"):
                return ast.Constant(f"XX{v}XX")
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if type(node.op) in _BINOP and self._hit(f"{type(node.op).__name__} swapped"):
            node.op = _BINOP[type(node.op)]()
        return node

    def visit_Return(self, node):
        self.generic_visit(node)
        is_none = isinstance(node.value, ast.Constant) and node.value.value is None  # no change to make
        if node.value is not None and not is_none and self._hit("return None"):
            node.value = ast.Constant(None)
        return node

    def _drop_elements(self, node):
        self.generic_visit(node)
        if len(node.elts) > 1:
            for i in range(len(node.elts)):
                if self._hit(f"element {i} dropped"):
                    node.elts = node.elts[:i] + node.elts[i + 1:]
                    break
        return node

    visit_Tuple = visit_List = _drop_elements

    def visit_Call(self, node):
        self.generic_visit(node)
        for i in range(len(node.args)):
            if self._hit(f"argument {i} dropped"):
                node.args = node.args[:i] + node.args[i + 1:]
                return node
        for i in range(len(node.keywords)):
            if self._hit(f"keyword {node.keywords[i].arg} dropped"):
                node.keywords = node.keywords[:i] + node.keywords[i + 1:]
                return node
        return node

    def visit_ExceptHandler(self, node):
        self.generic_visit(node)
        if node.type is not None and self._hit("except catches ZeroDivisionError"):
            node.type = ast.Name(id="ZeroDivisionError", ctx=ast.Load())
        return node


# ------------------------------------------------------------------------------------- the mutants


@dataclass
class Mutant:
    name: str  # nodes.prompt.TokenSmithPrompt.execute__3
    diff: str  # the operator, then the changed lines
    owner: str | None  # the class the method is in; None for a top-level function
    node: ast.FunctionDef  # the mutated function


def _path(module: str):
    return REPO_ROOT / (module.replace(".", "/") + ".py")


def functions_of(module: str) -> list[tuple[str | None, ast.FunctionDef]]:
    """(class name or None, function) for each top-level function and each method of a top-level class."""
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    only = HOSTED[module][0]
    found: list[tuple[str | None, ast.FunctionDef]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found.append((None, node))
        elif isinstance(node, ast.ClassDef):
            found += [(node.name, f) for f in node.body if isinstance(f, ast.FunctionDef)]
    return [(owner, f) for owner, f in found if only is None or f.name in only]


def _changed_lines(before: ast.AST, after: ast.AST) -> str:
    a, b = ast.unparse(before).splitlines(), ast.unparse(after).splitlines()
    return "\n".join(ln for ln in difflib.unified_diff(a, b, lineterm="", n=0)
                     if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


def mutants_of(module: str) -> list[Mutant]:
    out = []
    for owner, original in functions_of(module):
        counter = _Mutator()
        counter.visit(copy.deepcopy(original))
        prefix = ".".join(p for p in (module, owner, original.name) if p)
        for k in range(counter.count):
            m = _Mutator(k)
            mutated = ast.fix_missing_locations(m.visit(copy.deepcopy(original)))
            out.append(Mutant(f"{prefix}__{k + 1}", f"{m.applied}\n{_changed_lines(original, mutated)}",
                              owner, mutated))
    return out


# ------------------------------------------------------------------------- applying one in a child


def _compiled(mod, node: ast.FunctionDef, original: types.FunctionType) -> types.FunctionType:
    """The mutated function, made from its compiled code in the loaded module's globals (no exec),
    with the original's defaults. Compiled under the module's own `from __future__ import annotations`."""
    flags = __future__.annotations.compiler_flag if getattr(mod, "annotations", None) is __future__.annotations else 0
    module_code = compile(ast.Module(body=[node], type_ignores=[]), mod.__file__, "exec", flags=flags,
                          dont_inherit=True)
    code = next(c for c in module_code.co_consts if isinstance(c, types.CodeType) and c.co_name == node.name)
    fn = types.FunctionType(code, mod.__dict__, node.name, original.__defaults__)
    fn.__kwdefaults__ = original.__kwdefaults__
    fn.__qualname__ = original.__qualname__
    return fn


def apply(mod, mutant: Mutant) -> None:
    """Put the mutant in place of the original (in this process only: called in the forked child)."""
    name = mutant.node.name
    if mutant.owner is not None:
        cls = getattr(mod, mutant.owner)
        original = vars(cls)[name]
        wrap = type(original) if isinstance(original, (classmethod, staticmethod)) else None
        fn = _compiled(mod, mutant.node, original.__func__ if wrap else original)
        setattr(cls, name, wrap(fn) if wrap else fn)
        return
    original = getattr(mod, name)
    fn = _compiled(mod, mutant.node, original)
    package = mod.__name__.split(".nodes.")[0].rsplit(".server_routes", 1)[0]
    for other in list(sys.modules.values()):  # every pack module's name for it (from .x import f)
        if getattr(other, "__name__", "").startswith(package + "."):
            for key, value in list(vars(other).items()):
                if value is original:
                    setattr(other, key, fn)


# pytest's temporary folder for every child: the host fixture's base comes out as BASETEMP/comfy_base0
# each time (pytest empties BASETEMP first), the folders the parent's ComfyUI and the models built
# there point at (a CLIP keeps the embeddings folder it was built with)
BASETEMP = os.path.join(tempfile.gettempdir(), f"ts-hosted-mutants-{os.getpid()}")


def _child(mod, mutant: Mutant | None, tests: list[str]) -> int:
    import pytest

    if mutant is not None:
        apply(mod, mutant)
    return int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--basetemp", BASETEMP,
                            *tests]))


def in_fork(mod, mutant: Mutant | None, tests: list[str], timeout_s: float) -> int:
    """The child's exit code: 0 when every test passed, TIMEOUT when it ran past timeout_s."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = _child(mod, mutant, tests)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return TIMEOUT
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------- runs


def _key(module: str) -> str:
    # server_routes keeps the key its results were first written under (its one function)
    only = HOSTED[module][0]
    return f"{module}.{only[0]}" if module == "server_routes" else module


def run_module(module: str, equivalent: dict[str, str]) -> tuple[dict[str, dict], list[dict]]:
    from devkit import comfy_host

    started = time.monotonic()
    mod = comfy_host.pack_import(module)
    tests = HOSTED[module][1]
    mutants = mutants_of(module)
    survivors, killed = [], 0
    if mutants:
        clean_started = time.monotonic()
        clean = in_fork(mod, None, tests, 900)
        if clean != 0:
            raise SystemExit(f"{module}'s tests fail without a mutant (exit {clean}): {tests}")
        # a mutant may slow the tests (a loop made longer), not hang them: three clean runs' time
        timeout_s = 3 * (time.monotonic() - clean_started) + 30
        print(f"{module}: {len(mutants)} mutants, clean run {time.monotonic() - clean_started:.0f} s", flush=True)
    for m in mutants:
        code = in_fork(mod, m, tests, timeout_s)
        if code not in (0, 1, 2, 3, TIMEOUT):  # 99: the child failed before pytest ran; 4, 5: no tests ran
            raise SystemExit(f"{m.name}: the child exited {code}, not a test outcome")
        status = "timeout" if code == TIMEOUT else ("survived" if code == 0 else "killed")
        killed += status != "survived"
        print(f"  {m.name}: {status}", flush=True)
        if status == "survived":
            survivors.append({"mutant": m.name, "status": status, "diff": m.diff,
                              "equivalent": equivalent.get(m.name) or NODE_EQUIVALENT.get(m.name)})
    elapsed = time.monotonic() - started
    print(f"{module}: {killed}/{len(mutants)} killed in {elapsed:.0f} s", flush=True)
    return ({_key(module): {"total": len(mutants), "killed": killed,
                            "rate": round(killed / len(mutants), 4) if mutants else None,
                            "seconds": round(elapsed, 1)}}, survivors)


def _prebuild_models(families=("sd1", "sd2", "sdxl")) -> None:
    """The tiny models the tests build (devkit.model_factory.build_tiny, seed 0), built once here: each
    child gets them by fork, as fresh as a build of its own, instead of building them again."""
    from devkit import model_factory

    built = {f: model_factory.build_tiny(f, seed=0) for f in families}
    original = model_factory.build_tiny

    def build_tiny(family: str, seed: int = 0):
        return built[family] if seed == 0 and family in built else original(family, seed)

    model_factory.build_tiny = build_tiny


def run_hosted(modules: list[str], equivalent: dict[str, str]) -> tuple[dict[str, dict], list[dict]]:
    """Mutation results for these modules (keys of HOSTED), one warm ComfyUI for all of them."""
    from devkit import comfy_host

    sys.path.insert(0, str(REPO_ROOT))
    comfy_host.start_in_process(os.path.join(BASETEMP, "comfy_base0"))
    if any(m != "server_routes" for m in modules):
        _prebuild_models()
    results: dict[str, dict] = {}
    survivors: list[dict] = []
    for module in modules:
        m, s = run_module(module, equivalent)
        results.update(m)
        survivors += s
    return results, survivors


def hosted_modules(target) -> list[str]:
    """The HOSTED modules a command-line target names (server_routes.py, nodes, nodes/X.py); [] for others."""
    rel = target.relative_to(REPO_ROOT) if target.is_absolute() else target
    if rel.as_posix() == "nodes":
        return list(NODE_MODULES)
    module = rel.with_suffix("").as_posix().replace("/", ".")
    return [module] if rel.suffix == ".py" and module in HOSTED else []


def retry(names: list[str]) -> int:
    """Run the named mutants again and print each one's status (the result file is left as it is):
    python -m bench.mutants_hosted nodes.prompt._file_state__4 ... Returns how many survived."""
    from devkit import comfy_host

    sys.path.insert(0, str(REPO_ROOT))
    comfy_host.start_in_process(os.path.join(BASETEMP, "comfy_base0"))
    _prebuild_models()
    survived = 0
    for module in dict.fromkeys(next(m for m in HOSTED if n.startswith(m + ".")) for n in names):
        mod, tests = comfy_host.pack_import(module), HOSTED[module][1]
        for m in (m for m in mutants_of(module) if m.name in names):
            code = in_fork(mod, m, tests, 600)
            survived += code == 0
            print(f"  {m.name}: {'survived' if code == 0 else 'timeout' if code == TIMEOUT else 'killed'}", flush=True)
    return survived


if __name__ == "__main__":
    sys.exit(1 if retry(sys.argv[1:]) else 0)
