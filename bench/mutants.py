"""`make mutants`: mutation testing; prints the kill rate and the survivors, writes bench/results/mutants.json.

    python -m bench.mutants [TARGET ...]      (make mutants ARGS="tokensmith/names.py server_routes.py nodes/use.py")

TARGET is a file or folder under tokensmith/, server_routes.py, nodes or nodes/X.py; none means all of them. Takes long
(on this project's shared 2-core machine mutmut runs about one mutant a second, and tokensmith/ has
about 9,300), so run a subset while working on one module.

- tokensmith/: mutmut 3 (requirements-mutants.txt, configured in pyproject.toml [tool.mutmut]) copies
  the code to mutants/, mutates it there and runs, for each mutant, the tests/core tests that reach
  the mutated function; one worker. Its results accumulate in mutants/*.meta (a second run only tries
  what changed); `mutmut show NAME` shows one mutant, `rm -rf mutants` starts afresh.
- server_routes.py and nodes/: mutated by bench/mutants_hosted.py, because mutmut cannot reach them:
  ComfyUI imports the pack under its folder's name (custom_nodes.X.nodes.prompt), and mutmut's switch
  only acts on the module name it derived from the path. One warm in-process ComfyUI; each mutant is
  compiled into the loaded module (a method onto its class) in a forked child that runs the tests
  HOSTED lists for that module (a timeout kills it). server_routes.py: the info route's answer
  (embedding_info_reply: the name check, the files it tries, 400/404), with test_info_route.py.
  nodes/X.py: every function and method (define_schema, execute, helpers), with the host tests that
  run those nodes and test_node_docs.py (schemas against js/docs); its equivalents are listed in
  bench/mutants_hosted.py's NODE_EQUIVALENT.

A surviving mutant is either killed by a test or listed in EQUIVALENT below with why it cannot be.
The result file: {"total", "killed", "equivalent", "rate", "rate_of_non_equivalent", "seconds", "modules":
{module: {"total", "killed", "equivalent", "rate", "seconds"}}, "survived": [{"mutant", "status", "diff",
"equivalent"}]}; a subset run replaces its modules in the file. Timeouts count as killed, mutants no test
reaches as survived.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.mutants_hosted import NODE_EQUIVALENT, hosted_modules, run_hosted
from devkit.comfy_host import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results" / "mutants.json"
MUTMUT = Path(sys.executable).parent / "mutmut"

# mutant -> why no test can tell it from the original (mutmut's numbering is stable while the
# function's source does not change; a changed function shows its survivors again).
BIG_ENDIAN_ONLY = ("the big-endian byte swap: this branch runs only where sys.byteorder is 'big'; every machine this runs on (x86, ARM) is little-endian")

EQUIVALENT: dict[str, str] = {
    "tokensmith.formats.safetensors_fmt.x_parse_header__mutmut_43":
        "'utf-8' -> 'UTF-8': Python's codec names are case-insensitive",
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_43": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_44": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_45": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_46": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_47": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_48": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_49": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_50": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_51": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_52": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_53": BIG_ENDIAN_ONLY,
    "tokensmith.formats.safetensors_fmt.x_read_tensor__mutmut_54": BIG_ENDIAN_ONLY,
    "tokensmith.formats.torch_fmt.x__load__mutmut_17":
        "map_location='cpu' -> None: a file's tensors load where they were saved, and on this CPU-only machine "
        "no test can write a file whose tensors were saved anywhere else",
    "tokensmith.formats.torch_fmt.x__load__mutmut_20": "map_location dropped: as _load__mutmut_17",
    "tokensmith.formats.torch_fmt.x_load_torch__mutmut_5":
        "parameter_dict = False -> None: only ever read as a truth value, and None is false as False is",
    "tokensmith.formats.torch_fmt.x_load_torch__mutmut_9":
        "allow_parameter_dict=False -> None: _load reads it as 'not allow_parameter_dict', the same for None",
    "tokensmith.formats.layout.x__bundles__mutmut_13":
        "split(marker, 1)[0] -> split(marker)[0]: the part before the first marker is the same whatever the maxsplit",
    "tokensmith.formats.layout.x__bundles__mutmut_17": "split(marker, 1)[0] -> split(marker, 2)[0]: as _bundles__mutmut_13",
    "tokensmith.formats.layout.x_plan_flat__mutmut_17":
        "metadata.get('tool', '') -> get('tool', 'XXXX'): a file without a tool key is not ours either way, as "
        "neither default starts with 'tokensmith'",
    "tokensmith.formats.layout.x_plan_flat__mutmut_43":
        "the declared encoder of our emb_params file ignored (None): every encoder in ENCODER_WIDTHS has its own "
        "width, so a declared encoder of the tensor's width is the one encoder_for_width already gave",
    "tokensmith.formats.layout.x_plan_flat__mutmut_44": "the declared encoder read from key None: as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_flat__mutmut_45": "the declared encoder's default '' -> None: as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_flat__mutmut_46": "the declared encoder read from key '': as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_flat__mutmut_47": "the declared encoder's default dropped: as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_flat__mutmut_48": "the declared encoder read from 'XXencodersXX': as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_flat__mutmut_49": "the declared encoder read from 'ENCODERS': as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_flat__mutmut_50": "the declared encoder's default '' -> 'XXXX': as plan_flat__mutmut_43",
    "tokensmith.formats.layout.x_plan_object__mutmut_91":
        "'step if step is not None else plan.step' -> always step: when parse_step(obj['step']) is None so is "
        "plan_flat's, which parses meta['step'] = str(obj['step']) (none for a bool, None or non-scalar; a "
        "non-integral float's text such as '2.5' or 'nan' is no number; a string is the same string)",
    "tokensmith.training_math.x_stratified_timesteps__mutmut_27":
        "index * g -> index / g with g the golden ratio's conjugate: 1/g = 1 + g, so frac(offset + k/g) = "
        "frac(offset + k*g) up to the last bits of a float64",
    "tokensmith.names.x_safe_join__mutmut_13":
        "startswith('/') -> startswith('XX/XX'): on POSIX every name starting with '/' is already refused by "
        "os.path.isabs(name) in the same condition (the '/' test is there for Windows, where '/x' has no drive)",
    "tokensmith.writer.x_embedding_to_state_dict__mutmut_2":
        "to(device='cpu') -> to(device=None): the same tensors wherever the vectors already are on the CPU, as "
        "in every core test (this machine has no accelerator); with a GPU tensor the file would still be written",
    "tokensmith.writer.x_embedding_to_state_dict__mutmut_4":
        "the device argument dropped: as _2, equivalent for CPU tensors",
    "tokensmith.writer.x_atomic_write_bytes__mutmut_8":
        "the reason's 'isinstance(exc, OSError) and exc.strerror' -> '... or True': the ValueError branch it "
        "guards cannot be reached on Python 3.11, whose Path.is_dir()/exists() return False on a ValueError "
        "(NUL byte) instead of raising, and every OSError from stat() carries a strerror",
    "tokensmith.writer.x_atomic_write_bytes__mutmut_9": "'and' -> 'or' in the same test: as _8",
    "tokensmith.writer.x_atomic_write_bytes__mutmut_10": "str(exc) -> str(None) in the same branch: as _8",
    "tokensmith.schedule.x__step_points__mutmut_49":
        "'continue' -> 'break' after a part without a step: only the last part can have none (_step_part "
        "refuses a stepless or ':-1' part anywhere else), so there is nothing left to break out of",
    "tokensmith.schedule.x_parse_schedule__mutmut_35":
        "'warmup_steps > 0' -> '>= 0': with warmup_steps 0 the other half, 0 >= total_steps, is never true "
        "(total_steps is at least 1)",
    "tokensmith.writer.x__current_umask__mutmut_1":
        "not reachable by mutmut (not equivalent): _current_umask runs once, at import, to set _FILE_MODE, "
        "before a mutant is switched on in the forked test process; the mode it gives is checked by "
        "test_writer_contract.py::test_a_written_file_gets_the_usual_permissions",
    "tokensmith.writer.x__current_umask__mutmut_2": "as _current_umask__mutmut_1 (runs at import only)",
    "tokensmith.writer.x__current_umask__mutmut_3": "as _current_umask__mutmut_1 (runs at import only)",
    "tokensmith.writer.x__current_umask__mutmut_4": "as _current_umask__mutmut_1 (runs at import only)",
    "tokensmith.schedule.xǁScheduleǁvalue__mutmut_44":
        "warmup 'step <= warmup_steps' -> '<': at step == warmup_steps the ramp multiplies by "
        "warmup_steps / warmup_steps == 1.0 exactly, so the rate is the same float either way",
    "tokensmith.schedule.xǁScheduleǁvalue__mutmut_13":
        "cosine warmup 'step <= warmup_steps' -> '<': at step == warmup_steps the ramp gives peak * w / w and "
        "the curve gives floor + (peak - floor) * 0.5 * (1 + cos(0)); both are the peak (they can differ in "
        "the last bit of the float, which no caller can tell)",
    "tokensmith.merge.x__slerp_rows__mutmut_51":
        "'sin.abs() < _PARALLEL_EPS' -> '<=': slerp works in fp32 (float_vectors), where the sines acos can "
        "give next to 0 are 0, |sin(fp32 pi)| (about 8.7e-8) and then those of the cosines one step from +-1 "
        "(about 3.5e-4): no row has |sin| equal to fp32(1e-6)",
    "tokensmith.merge.x_collapse__mutmut_6":
        "keepdim dropped from the sum: the one vector comes out 1-D, and Embedding() makes a 1-D tensor one "
        "row, so the result is the same [1, d] embedding",
    "tokensmith.merge.x_collapse__mutmut_8": "keepdim=True -> False: as _6",
    "tokensmith.merge.x_concat__mutmut_12": "torch.cat's dim=0 dropped: 0 is torch.cat's default",
    "tokensmith.merge.x_concat_rows__mutmut_8": "torch.cat's dim=0 dropped: 0 is torch.cat's default",
    "tokensmith.merge.x_pad_rows__mutmut_19": "torch.cat's dim=0 dropped: 0 is torch.cat's default",
    "tokensmith.merge.x_pad_rows__mutmut_3":
        "'t.shape[0] >= n' -> '>': at t.shape[0] == n the other branch appends zero rows of zero count, a new "
        "tensor with the same values and dtype as the clone",
    "tokensmith.merge.x_roll_rows__mutmut_2":
        "the zero-row guard made always true: torch.roll of a [0, d] tensor is a new [0, d] tensor, as the "
        "clone (the guard only spares the call)",
    "tokensmith.merge.x_roll_rows__mutmut_11":
        "guard on t.shape[1] instead of [0]: rolls or clones differ only for empty tensors, where both give "
        "the same empty tensor (as _2)",
    "tokensmith.merge.x_weighted_sum__mutmut_27":
        "zip(strict=True) -> strict=None: rows and weights always have the same length (checked at the "
        "top, ws built one per weight), so strictness never fires",
    "tokensmith.merge.x_weighted_sum__mutmut_30": "zip's strict dropped: as _27",
    "tokensmith.merge.x_weighted_sum__mutmut_31": "zip(strict=False): as _27",
    "tokensmith.expression.x__fmt_name__mutmut_15":
        "'c in \".-\"' -> 'c in \"XX.-XX\"' after '_is_name_char(c) or': the only character added is X, already a "
        "name character",
    "tokensmith.expression.x__fmt_name__mutmut_25":
        "zip(strict=False) -> strict=None: name and name[1:] differ in length by design; both are non-strict",
    "tokensmith.expression.x__fmt_name__mutmut_28": "zip's strict=False dropped: False is the default",
    "tokensmith.expression.xǁ_Parserǁop__mutmut_3":
        "'tok.value in \"*/\"' -> 'in \"XX*/XX\"': op() is entered only on '*', '/' or ':', never on 'X'",
    "tokensmith.expression.xǁ_Parserǁtake__mutmut_3":
        "take() past the end token: every caller peeks first and takes only a token of the kind it expects, "
        "never the end token",
    "tokensmith.expression.xǁ_Parserǁtake__mutmut_4": "as take__mutmut_3",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_3":
        "a Sum's pos None: pos is out of equality and no message reports a Sum's column (errors name the "
        "operand or the '+', '-' or ',' that fails)",
    "tokensmith.expression.xǁ_Parserǁop__mutmut_90":
        "a Roll's pos None: out of equality, and rolling never fails, so no message reports its column",
    "tokensmith.expression.xǁ_Parserǁop__mutmut_92": "a Roll's pos dropped (0): as op__mutmut_90",
    "tokensmith.expression.xǁ_Parserǁop__mutmut_104":
        "a Resize's pos None: out of equality, and ':N' is checked while parsing (with the number's column), "
        "never reported at evaluation",
    "tokensmith.expression.xǁ_Parserǁop__mutmut_106": "a Resize's pos dropped (0): as op__mutmut_104",
    "tokensmith.expression.xǁ_Evaluatorǁcombine__mutmut_19":
        "the working-limit check of a sum: a sum has max(a.n, b.n) vectors and every side is already within "
        "the limit (each operand checked when resolved, ':N' at most 75, ',' checked itself), so the sum's "
        "check never fires and its wording is never shown",
    "tokensmith.expression.xǁ_Evaluatorǁcombine__mutmut_25": "the sum's wording: as combine__mutmut_19",
    "tokensmith.expression.xǁ_Evaluatorǁcombine__mutmut_26": "the sum's wording: as combine__mutmut_19",
    "tokensmith.expression.x__as_rows__mutmut_24":
        "to(device='cpu') -> to(device=None): the same tensors for operands already on the CPU, as in every "
        "core test (as writer.x_embedding_to_state_dict__mutmut_2)",
    "tokensmith.expression.x__as_rows__mutmut_26": "the device argument dropped: as _as_rows__mutmut_24",
    "tokensmith.training_math.x_loss_weights__mutmut_2":
        "default prediction 'eps' -> 'EPS': _prediction lower-cases the name first, so both mean eps-MSE",
    "tokensmith.training_math.x_diffusion_loss__mutmut_2": "default prediction 'eps' -> 'EPS': as loss_weights__mutmut_2",
    "tokensmith.training_math.x_diffusion_loss__mutmut_12":
        "the weights' to(err.device) -> to(None): the same tensor when the latents are on the CPU, as in every "
        "core test (CPU only here, as writer.x_embedding_to_state_dict__mutmut_2)",
    "tokensmith.training_math.x_diffusion_loss__mutmut_42":
        "the mask's device=err.device -> None: CPU only here (as diffusion_loss__mutmut_12)",
    "tokensmith.training_math.x_diffusion_loss__mutmut_44": "the mask's device argument dropped: CPU only here",
    "tokensmith.training_math.x_optimizer_state_to_tensors__mutmut_9":
        "a state tensor's to('cpu') -> to(None): the same tensor for CPU optimizer state (CPU only here)",
    "tokensmith.training_math.x_optimizer_state_to_tensors__mutmut_23":
        "a group tensor's to('cpu') -> to(None): CPU only here (as optimizer_state_to_tensors__mutmut_9)",
    "tokensmith.training_math.x_optimizer_state_to_tensors__mutmut_47":
        "json.dumps allow_nan=False -> None: every float reaches the JSON through _to_json, which refuses "
        "non-finite ones first, so dumps never sees a NaN or infinity",
    "tokensmith.training_math.x_optimizer_state_to_tensors__mutmut_50":
        "json.dumps allow_nan dropped: as optimizer_state_to_tensors__mutmut_47",
    "tokensmith.training_math.x_optimizer_state_to_tensors__mutmut_52":
        "json.dumps allow_nan=True: as optimizer_state_to_tensors__mutmut_47",
    "tokensmith.training_math.x_spread_init_vectors__mutmut_19":
        "the zeros' device=token_vectors.device -> None: CPU only here",
    "tokensmith.training_math.x_spread_init_vectors__mutmut_23": "the zeros' device argument dropped: CPU only here",
    "tokensmith.training_math.x_spread_init_vectors__mutmut_27":
        "the index's device=tokens.device -> None: CPU only here",
    "tokensmith.training_math.x_spread_init_vectors__mutmut_29": "the index's device argument dropped: CPU only here",
    "tokensmith.training_math.x_vector_norms__mutmut_2":
        "norm(dim=-1) -> dim=+1: the same axis for the [n, d] tensors it is documented for and given",
    "tokensmith.training_math.xǁNaNGuardǁrestore__mutmut_3":
        "zip(strict=True) -> strict=None: _vectors is built from params one for one, so strictness never fires",
    "tokensmith.training_math.xǁNaNGuardǁrestore__mutmut_6": "zip's strict dropped: as restore__mutmut_3",
    "tokensmith.training_math.xǁNaNGuardǁrestore__mutmut_7": "zip(strict=False): as restore__mutmut_3",
    "tokensmith.hashing.x_sha256_file__mutmut_9":
        "fh.read(_CHUNK) -> fh.read(None): the whole file in one read, then b'' ends the loop; the same "
        "bytes reach the digest (only the memory used differs)",
    "tokensmith.objective.xǁFlowMatchingǁloss__mutmut_9":
        "the sigmas' to(x0.device) -> to(None): the same tensor when sigmas and latents are on the CPU, as in "
        "every core test (CPU only here, as writer.x_embedding_to_state_dict__mutmut_2)",
    "tokensmith.objective.xǁFlowMatchingǁloss__mutmut_11": "the sigmas' device argument dropped: CPU only here",
    "tokensmith.objective.xǁFlowMatchingǁloss__mutmut_45": "the mask's to(err.device) -> to(None): CPU only here",
    "tokensmith.objective.xǁFlowMatchingǁloss__mutmut_47": "the mask's device argument dropped: CPU only here",
    "tokensmith.convert.x__checked_rows__mutmut_2":
        "the given rows' to(device='cpu') -> to(device=None): the same tensor for CPU input, as in every core "
        "test (CPU only here, as writer.x_embedding_to_state_dict__mutmut_2)",
    "tokensmith.convert.x__checked_rows__mutmut_4": "the device argument dropped: CPU only here",
    "tokensmith.convert.x_to_sdxl__mutmut_36": "the G vectors' device='cpu' -> None: CPU only here",
    "tokensmith.convert.x_to_sdxl__mutmut_38": "the G vectors' device argument dropped: CPU only here",
    "tokensmith.use.x_prompt_reference__mutmut_13":
        "float('inf') -> float('INF'): float() reads the name in any case, so both are infinity",
    "tokensmith.history.x_draw_history__mutmut_12":
        "the background (255, 255, 255) -> (256, 255, 255): PIL clamps a colour channel to 255, so the "
        "canvas is the same white",
    "tokensmith.history.x_draw_history__mutmut_13": "the background's green 256: as draw_history__mutmut_12",
    "tokensmith.history.x_draw_history__mutmut_14": "the background's blue 256: as draw_history__mutmut_12",
    "tokensmith.history.x_draw_history__mutmut_53":
        "'history.val_steps or [0]' -> '[1]': x_max = max(..., 1) already takes 1 as its floor, so a "
        "missing validation counts as 0 or 1 to the same result",
    "tokensmith.history.x_draw_history__mutmut_58":
        "a lower line's zip(strict=False) -> strict=None: both are non-strict (lists of unequal length are "
        "cut to the shorter, test_history_uneven_exact.py)",
    "tokensmith.history.x_draw_history__mutmut_61": "a lower line's zip strict=False dropped: False is the default",
    "tokensmith.history.x_draw_history__mutmut_72":
        "a lower line's 'hi - lo or 1.0' -> 'or 2.0': the span is used only when hi == lo, and then every "
        "y - lo is 0 (finite floats subtract to 0 only when equal), so 0 / 1.0 == 0 / 2.0",
    "tokensmith.history.x_draw_history__mutmut_116": "the loss panel's 'hi - lo or 1.0' -> 'or 2.0': as _72",
    "tokensmith.history.x_draw_history__mutmut_126":
        "smooth(history.loss, LOSS_SMOOTHING) -> smooth(history.loss): smooth's default alpha is 0.9, "
        "LOSS_SMOOTHING's value",
    "tokensmith.history.x_draw_history__mutmut_141":
        "the loss panel's zip(strict=False) -> strict=None: both non-strict (as _58)",
    "tokensmith.history.x_draw_history__mutmut_144": "the loss panel's zip strict=False dropped: the default",
    "tokensmith.history.x_draw_history__mutmut_147":
        "'len(pts) > 1' -> '>= 1' before draw.line: PIL draws nothing for a one-point line (draw_lines has "
        "no segment), and the one point gets its dot anyway",
    "tokensmith.history.x_draw_history__mutmut_278":
        "an event mark's panels[0][0] -> panels[1][0]: both panels start at x = margin",
    "tokensmith.history.x_draw_history__mutmut_283":
        "an event mark's panels[0][2] -> panels[1][2]: both panels end at x = width - margin",
    "tokensmith.history.x_draw_history__mutmut_285": "an event mark's second panels[0][0] -> panels[1][0]: as _278",
    "tokensmith.history.x_draw_history__mutmut_294":
        "the mark's width=1 dropped: 1 is ImageDraw.line's default width",
    "tokensmith.embedding.xǁEmbeddingǁfloat_vectors__mutmut_1":
        "to(device='cpu') -> to(device=None): the same tensors for vectors already on the CPU, as in every core "
        "test (CPU only here, as writer.x_embedding_to_state_dict__mutmut_2)",
    "tokensmith.embedding.xǁEmbeddingǁfloat_vectors__mutmut_3": "the device argument dropped: CPU only here",
    "tokensmith.modelspec.x__architecture__mutmut_6":
        "SD2's 'prediction or \"\"' -> 'or \"XXXX\"': neither is a key of _SD2, so a missing prediction finds "
        "no architecture either way",
    "tokensmith.modelspec.x__architecture__mutmut_9":
        "'family or \"\"' -> 'or \"XXXX\"': neither is a key of _ARCHITECTURES",
    "tokensmith.modelspec.x__training_resolution__mutmut_8":
        "no tokensmith.training: json.loads('XX{}XX') raises ValueError, caught, 0; the original's {} has no "
        "resolution, also 0",
    "tokensmith.modelspec.x__training_resolution__mutmut_15":
        "'value > 0' -> '>= 0': a resolution of 0 is then returned as 0, the same as the refusal's 0 (the "
        "caller takes '0 or the family's')",
    "tokensmith.modelspec.x_modelspec_keys__mutmut_54":
        "'prediction or \"\"' -> 'or \"XXXX\"': neither is a key of _PREDICTION, so no prediction_type either way",
    "tokensmith.modelspec.x_thumbnail_data_url__mutmut_34":
        "format 'JPEG' -> 'jpeg': PIL's Image.save looks the format up upper-cased (SAVE[format.upper()])",
    "tokensmith.modelspec.x_thumbnail_data_url__mutmut_39": "format 'PNG' -> 'png': as thumbnail_data_url__mutmut_34",
    "tokensmith.modelspec.x_thumbnail_data_url__mutmut_45":
        "decode('ascii') -> decode('ASCII'): codec names are case-insensitive; the same codec",
    "tokensmith.modelspec.x_thumbnail_of__mutmut_4":
        "a missing thumbnail 'or \"\"' -> 'or \"XXXX\"': neither starts with a picture data URL's prefix, so None "
        "either way",
    "tokensmith.run_state.x_copy_vectors__mutmut_3":
        "vectors[k].to(p.device, p.dtype) -> to(None, p.dtype): p.copy_ itself casts and moves the source to "
        "p's dtype and device, so the .to() before it changes nothing p ends up holding",
    "tokensmith.run_state.x_copy_vectors__mutmut_4": "to(p.device, None): as copy_vectors__mutmut_3 (copy_ casts)",
    "tokensmith.run_state.x_copy_vectors__mutmut_5": "to(p.dtype) without the device: as copy_vectors__mutmut_3",
    "tokensmith.run_state.x_copy_vectors__mutmut_6": "to(p.device) without the dtype: as copy_vectors__mutmut_3",
    "tokensmith.prompt_fix.x__depth_at__mutmut_17":
        "the escape test 'text[i + 1] in \"()\"' -> 'in \"XX()XX\"': it adds only 'X', and a backslash taken with "
        "an X gives each the same depth as when both are read one by one (neither is a parenthesis)",
    "tokensmith.prompt_fix.x_convert_keywords__mutmut_15":
        "the text's end 'after = \"\"' -> '\"XXXX\"': after is only tested for membership in a set of single "
        "characters and for == ':', both false for '' and for 'XXXX'",
    "tokensmith.prompt_fix.x_convert_keywords__mutmut_22":
        "'.' left out of the characters subtracted from _WORD_CHARS: the character after a _WORD_RE match is never "
        "'.', '/' or '-' (the match is greedy over [A-Za-z0-9._/-]), so subtracting them or not changes nothing",
    "tokensmith.prompt_fix.x_convert_keywords__mutmut_23": "'/' left out of the subtraction: as convert_keywords__mutmut_22",
    "tokensmith.prompt_fix.x_convert_keywords__mutmut_24": "'-' left out of the subtraction: as convert_keywords__mutmut_22",
    "tokensmith.prompt_fix.x_fix_prompt__mutmut_8":
        "'changes += [...]' -> 'changes = [...]': changes is the empty list made two lines above",
    "tokensmith.prompt_fix.x_fix_prompt__mutmut_41":
        "group_weight = False -> None: it is only read as 'not group_weight', the same for both",
    "tokensmith.prompt_fix.x_fix_prompt__mutmut_47":
        "a weight at the end 'after_weight = \"\"' -> '\"XXXX\"': after_weight is only compared with ')', unequal to both",
    "tokensmith.prompt_fix.xǁEmbeddingIndexǁ__post_init____mutmut_17":
        "name.rsplit('/', 1)[-1] -> rsplit('/')[-1]: the last piece is the same however many splits are made",
    "tokensmith.prompt_fix.xǁEmbeddingIndexǁ__post_init____mutmut_20": "rsplit('/', 2)[-1]: as __post_init____mutmut_17",
    "tokensmith.prompt_fix.xǁEmbeddingIndexǁsuggest__mutmut_7": "get_close_matches's n=3 dropped: 3 is its default",
    "tokensmith.prompt_fix.xǁEmbeddingIndexǁsuggest__mutmut_8": "get_close_matches's cutoff=0.6 dropped: 0.6 is its default",
    "tokensmith.report.x_encoder_stats__mutmut_2":
        "to(device='cpu') -> to(device=None): the same tensor for vectors on the CPU, as in every core test (CPU "
        "only here, as writer.x_embedding_to_state_dict__mutmut_2)",
    "tokensmith.report.x_encoder_stats__mutmut_4": "the device argument dropped: CPU only here",
    "tokensmith.report.x_encoder_stats__mutmut_17":
        "vector_norm(dim=-1) -> dim=+1: the same axis for the [n, d] tensors an Embedding holds (it refuses others)",
    "tokensmith.report.x_encoder_stats__mutmut_67": "all(dim=-1) -> dim=+1: the same axis for [n, d] (as _17)",
    "tokensmith.report.x_encoder_stats__mutmut_34":
        "the mean's 'if vals.numel()' made always true: the mean of no values is NaN, which _num turns into None, "
        "the other branch's value",
    "tokensmith.report.x_encoder_stats__mutmut_39": "the std's guard made always true: as _34 (the std of no values is NaN)",
    "tokensmith.report.x_human_size__mutmut_27":
        "the loop's fall-through 'return str(n)' -> str(None): never reached, the last unit (GiB) always returns",
    "tokensmith.pictures.x__caption__mutmut_20":
        "encoding 'utf-8-sig' -> 'UTF-8-SIG': codec names are looked up case-insensitively; the same codec",
    "tokensmith.pictures.x__pixels__mutmut_28":
        "grey.max(initial=0) -> initial=None: initial only matters for an array of no pixels, and no picture file "
        "(PNG, JPEG, WebP, BMP) decodes to a 0-pixel image",
    "tokensmith.pictures.x__pixels__mutmut_29":
        "grey.max(initial=0) -> initial=1: the test is 'max > 255', and max(values, 1) > 255 exactly when max(values) > 255",
    "tokensmith.pictures.x_resolve_folder__mutmut_29":
        "startswith('/') -> startswith('XX/XX'): on POSIX every name starting with '/' is already refused by "
        "os.path.isabs (as names.x_safe_join__mutmut_13; the '/' test is for Windows)",
    "tokensmith.pictures.x_resolve_folder__mutmut_55":
        "the empty parts no longer dropped: Path.joinpath ignores '' parts, so the same path is built",
    "tokensmith.pictures.x_resolve_folder__mutmut_56":
        "the '.' parts no longer dropped: pathlib drops '.' components when it parses the parts, the same path",
    "tokensmith.pictures.x_size_warnings__mutmut_17":
        "16 MP as 16 * 1000001: the limits differ only for w * h in 16,000,001..16,000,016 with both sides at most "
        "4096 (larger sides warn anyway), and no two such whole numbers have a product in that range",
    "tokensmith.expression.x__tokenize__mutmut_25":
        "an unclosed quote's 'k < 0' -> 'k <= 0': find() starts at j >= 1 (after the opening quote), so it returns "
        "-1 or at least 1, never 0",
    "tokensmith.expression.x__tokenize__mutmut_26": "'k < 0' -> 'k < 1': as _tokenize__mutmut_25",
    "tokensmith.expression.x__tokenize__mutmut_129":
        "'text[j] in \".-\"' -> 'in \"XX.-XX\"': it adds only 'X', already a name character taken by the other test "
        "(as _fmt_name__mutmut_15)",
    "tokensmith.expression.x__tokenize__mutmut_170":
        "the end token's value '' -> None: never read (_describe names the end by its kind; the one value test, "
        "== ')', is false for both)",
    "tokensmith.expression.x__tokenize__mutmut_177": "the end token's value 'XXXX': as _tokenize__mutmut_170",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_60":
        "a Whole's pos None: out of equality, and a Whole's column is never reported (each of its ops reports "
        "its own)",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_62": "a Whole's pos dropped (0): as expr__mutmut_60",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_68": "a Sum's pos None: as expr__mutmut_3 (never reported)",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_71": "a Sum's pos dropped: as expr__mutmut_3",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_76": "a Sum's pos None: as expr__mutmut_3",
    "tokensmith.expression.xǁ_Parserǁexpr__mutmut_79": "a Sum's pos dropped: as expr__mutmut_3",
    "tokensmith.expression.xǁ_Parserǁterm__mutmut_28":
        "a Chain's pos None: out of equality; it is only read as the start of a Sum, whose column is never "
        "reported (expr__mutmut_3)",
    "tokensmith.expression.xǁ_Parserǁterm__mutmut_31": "a Chain's pos dropped: as term__mutmut_28",
    "tokensmith.expression.xǁ_Parserǁterm__mutmut_36": "a Chain's pos None: as term__mutmut_28",
    "tokensmith.expression.xǁ_Parserǁterm__mutmut_39": "a Chain's pos dropped: as term__mutmut_28",
    "tokensmith.cli.x_cmd_inspect__mutmut_15":
        "json.dumps allow_nan=False -> None: the report holds no float that is not finite (report._num turns NaN "
        "and infinity into None first), so dumps never meets one",
    "tokensmith.cli.x_cmd_inspect__mutmut_18": "allow_nan dropped: as cmd_inspect__mutmut_15",
    "tokensmith.cli.x_cmd_inspect__mutmut_20": "allow_nan=True: as cmd_inspect__mutmut_15",
    "tokensmith.comfy_reads.x_prompt_warnings__mutmut_72":
        "_not_read_notes(unloaded=False) -> unloaded=None: it is only read as 'if not unloaded', the same for both",
    "tokensmith.training_data.xǁTrainingSetǁdraw__mutmut_12":
        "torch.randint(0, n, ...) -> randint(n, ...): low defaults to 0, the same call",
    "tokensmith.training_data.xǁTrainingSetǁdraw__mutmut_25": "randint's low 0 dropped: as draw__mutmut_12",
    "tokensmith.training_data.xǁTrainingSetǁdraw__mutmut_36": "randint's low 0 dropped: as draw__mutmut_12",
    "tokensmith.training_data.xǁTrainingSetǁ_draw_training__mutmut_7": "randint's low 0 dropped: as draw__mutmut_12",
    "tokensmith.training_data.xǁTrainingSetǁ_draw_training__mutmut_22": "randint's low 0 dropped: as draw__mutmut_12",
    "tokensmith.training_data.xǁTrainingSetǁ_draw_training__mutmut_29":
        "the positions' dtype=torch.long dropped (None): torch.tensor of a non-empty list of Python ints is int64 "
        "(long) by default, and the list has batch_size >= 1 entries",
    "tokensmith.training_data.xǁTrainingSetǁ_draw_training__mutmut_31": "dtype dropped: as _draw_training__mutmut_29",
    "tokensmith.training_data.xǁTrainingSetǁvalidation_batches__mutmut_32":
        "the positions' dtype=torch.long -> None: a non-empty list of ints (a bucket without items is skipped) is "
        "int64 by default (as _draw_training__mutmut_29)",
    "tokensmith.training_data.xǁTrainingSetǁvalidation_batches__mutmut_34": "dtype dropped: as validation_batches__mutmut_32",
    "tokensmith.training_data.xǁTrainingSetǁvalidation_batches__mutmut_62":
        "the slice's index dtype=torch.long -> None: items[sl] is a non-empty list of ints (range steps within "
        "len(items)), int64 by default",
    "tokensmith.training_data.xǁTrainingSetǁvalidation_batches__mutmut_64": "dtype dropped: as validation_batches__mutmut_62",
    "tokensmith.training_data.xǁTrainingDataǁreport__mutmut_6":
        "zip(strict=True) -> strict=None: sizes and original_sizes always have one entry per picture "
        "(original_sizes defaults to sizes), so strictness never fires",
    "tokensmith.training_data.xǁTrainingDataǁreport__mutmut_9": "zip's strict dropped: as report__mutmut_6",
    "tokensmith.training_data.xǁTrainingDataǁreport__mutmut_10": "zip(strict=False): as report__mutmut_6",
    "tokensmith.training_data.xǁTrainingDataǁprepared__mutmut_54":
        "interpolate size mean.shape[-2:] -> shape[+2:]: the latents are [k, C, h, w], for which both are (h, w)",
    "tokensmith.training_data.x_bucket_for__mutmut_18":
        "the tie-break -h*w -> -h/w: the only ties in aspect distance found (resolutions 64..1096, pictures up to "
        "64 x 64) are a bucket and its transpose, of equal area; there -h/w picks the taller one, which bucket_sizes "
        "lists first (widths ascending), the one min() keeps on the original's area tie",
    "tokensmith.training_data.x_bucket_for__mutmut_19":
        "the tie-break -h*w -> +h*w: on the only ties found (a bucket and its transpose, as bucket_for__mutmut_18) "
        "the areas are equal, so either sign keeps the first",
    "tokensmith.training_data.x__pictures__mutmut_3":
        "'items = images if it is a list' made always true: check_pictures hands _pictures a 4-D batch or a "
        "list, and iterating a [B, H, W, C] batch gives its [H, W, C] pictures, the same pictures as [batch] does",
    "tokensmith.training_data.x_check_masks__mutmut_50":
        "the expand made unconditional: masks.shape[0] is 1 or count (checked just above), and expanding a "
        "[count, H, W] tensor to count is the same tensor",
    "tokensmith.training_data.x_check_masks__mutmut_73":
        "zip(strict=False) -> strict=None: len(items) != count is tested first, so the zip only ever sees lists "
        "of equal length",
    "tokensmith.training_data.x_check_masks__mutmut_76": "zip's strict dropped: as check_masks__mutmut_73",
    "tokensmith.training_data.x_check_masks__mutmut_77": "zip(strict=True): as check_masks__mutmut_73",
    "tokensmith.training_data.x_fit__mutmut_2":
        "x.shape[-2:] -> shape[+2:]: fit is given [N, C, H, W] tensors, for which both are (H, W)",
    "tokensmith.training_data.x_fit__mutmut_35":
        "interpolate's align_corners=False -> None: torch takes None as False for bilinear",
    "tokensmith.training_data.x_fit__mutmut_40": "align_corners dropped: its default None is taken as False",
    "tokensmith.cli.x_cmd_card__mutmut_9":
        "the picture's im.convert('RGB') -> im.convert(None): convert(None) is a copy (P becomes RGB or RGBA), and "
        "png_card_bytes converts the picture to RGB itself, to the same pixels",
    "tokensmith.cli.x_inspect_folder__mutmut_13":
        "entry.pop('path', None) -> pop('path'): every header read_header returns has a 'path' (_header_dict "
        "writes it), so the default is never needed",
    # tokensmith.formats.png_fmt (tests: tests/core/test_png_card_exact.py, test_png_read_exact.py)
    "tokensmith.formats.png_fmt.x__lcg_jumps__mutmut_12": "while < count -> <= count: at most one more doubling, which the return's [:count] slices off",
    "tokensmith.formats.png_fmt.x__lcg_chunks__mutmut_1": "count <= 0 -> < 0: for count 0 the loop 'while done < count' (0 < 0) yields nothing either way",
    "tokensmith.formats.png_fmt.x_parse_embedding_json__mutmut_31": "'utf-8' -> 'UTF-8': Python's codec names are case-insensitive",
    "tokensmith.formats.png_fmt.x_embedding_json_bytes__mutmut_3": ".to(torch.float32) -> .to(None): every tensor reaching default() comes from emb.float_vectors(), already float32 (to(None) leaves it as is)",
    "tokensmith.formats.png_fmt.x_embedding_json_bytes__mutmut_13": "'utf-8' -> 'UTF-8': Python's codec names are case-insensitive",
    "tokensmith.formats.png_fmt.x_find_text__mutmut_4": "'latin-1' -> 'LATIN-1': Python's codec names are case-insensitive",
    "tokensmith.formats.png_fmt.x_decode_text_payload__mutmut_3": "MAX_JSON_BYTES * 4 // 3 + 16 -> * 4 / 3 + 16: the two bounds differ by 2/3 and no integer length lies between them",
    "tokensmith.formats.png_fmt.x__drawn_strips__mutmut_2": "an RGB image is converted to RGB too: convert('RGB') of an RGB image is a copy with the same pixels",
    "tokensmith.formats.png_fmt.x__drawn_strips__mutmut_5": "mode == 'XXRGBXX': an RGB image is converted to RGB, a copy with the same pixels",
    "tokensmith.formats.png_fmt.x__drawn_strips__mutmut_6": "mode == 'rgb': an RGB image is converted to RGB, a copy with the same pixels",
    "tokensmith.formats.png_fmt.x__drawn_strips__mutmut_12": "np.asarray(rgb, dtype=None): an RGB image's array is uint8 already",
    "tokensmith.formats.png_fmt.x__drawn_strips__mutmut_14": "np.asarray(rgb) without dtype: an RGB image's array is uint8 already",
    "tokensmith.formats.png_fmt.x__drawn_strips__mutmut_18": "cropped.size == 0 -> == 1: an (h, w, 3) array's size is never 1, and an empty crop then finds no black column (black.size < 2) and returns None just the same",
    "tokensmith.formats.png_fmt.x__drawn_byte_chunks__mutmut_35": "reshape(-1, ...) -> reshape(-2, ...): numpy (2.4.6 here) reads any negative size as 'the rest'",
    "tokensmith.formats.png_fmt.x__style_nibbles__mutmut_3": "vector.astype(None): None means float64, and the only caller passes a float64 array already",
    "tokensmith.formats.png_fmt.x__style_nibbles__mutmut_13": "0.0 -> 1.0 when there are no magnitudes: mags / top of an empty array is empty either way, and empty shades are replaced by ones(1)",
    "tokensmith.formats.png_fmt.x__style_nibbles__mutmut_35": "ones(1) -> ones(2) for empty shades: indexing all-ones shades gives 1 whatever their count",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_31": "style ones(1) -> ones(2) without a style vector: magnitudes all 1 give shade 15 everywhere either way",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_34": "np.asarray(style_vector, dtype=None): _style_nibbles casts to float64 itself, the same values",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_36": "np.asarray(style_vector) without dtype: _style_nibbles casts to float64 itself, the same values",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_56": "reshape(h, -1, 3) -> reshape(h, -2, 3): numpy (2.4.6 here) reads any negative size as 'the rest'",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_74": "Image.fromarray(mode=None): a uint8 (h, w, 3) array is read as RGB anyway",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_76": "Image.fromarray without mode: a uint8 (h, w, 3) array is read as RGB anyway",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_84": "Image.new(..., None) instead of (0, 0, 0): Pillow (13.0 here) returns zeroed memory for color None, i.e. the same black card",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_87": "Image.new without a colour: the default colour is 0, black, the same as (0, 0, 0)",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_101": "paste(low, None): a box of None pastes at (0, 0)",
    "tokensmith.formats.png_fmt.x_draw_data_strips__mutmut_103": "paste(low) without a box: pastes at (0, 0)",
    "tokensmith.formats.png_fmt.x_draw_embedding__mutmut_20": "the path given to extract_drawn_bytes: that function never uses its path argument",
    "tokensmith.formats.png_fmt.x_draw_embedding__mutmut_23": "the path given to extract_drawn_bytes: that function never uses its path argument",
    "tokensmith.formats.png_fmt.x_draw_embedding__mutmut_24": "the path given to extract_drawn_bytes: that function never uses its path argument",
    "tokensmith.formats.png_fmt.x_load_png__mutmut_27": "a1111_format=None: plan_object uses it only as the Plan's source_format, which load_png overwrites with fmt on the next line",
    "tokensmith.formats.png_fmt.x_load_png__mutmut_31": "a1111_format dropped: plan_object uses it only as the Plan's source_format, which load_png overwrites with fmt on the next line",
    "tokensmith.formats.png_fmt.x__decompress_drawn__mutmut_14": "max_length MAX - total + 1 -> + 2: at most one byte more is inflated, and a total over MAX is refused either way (the result, and the refusal, are the same)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_3": "astype(None): None means float64, the same values",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_11": "scale 'or 1.0' -> 'or 2.0': used only when every value is 0, and 0 / 1 == 0 / 2",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_14": "'if first.size' -> 'or True': the else branch is dead, an empty vector already raises in np.abs(first).max() on the line before",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_19": "first[:48] -> first[:64]: np.resize(vals, 48) on the next line keeps only the first 48 anyway",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_20": "first[:48] -> first[:51]: np.resize(vals, 48) on the next line keeps only the first 48 anyway",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_23": "np.full(3, 0.5) changed in the dead else branch (an empty vector raises in np.abs(first).max() before)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_24": "np.full(3, 0.5) changed in the dead else branch (an empty vector raises in np.abs(first).max() before)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_25": "np.full(3, 0.5) changed in the dead else branch (an empty vector raises in np.abs(first).max() before)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_26": "np.full(3, 0.5) changed in the dead else branch (an empty vector raises in np.abs(first).max() before)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_27": "np.full(3, 0.5) changed in the dead else branch (an empty vector raises in np.abs(first).max() before)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_28": "np.full(3, 0.5) changed in the dead else branch (an empty vector raises in np.abs(first).max() before)",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_48": "clip lower bound 0 -> None: |v| <= scale, so v / scale * 0.5 + 0.5 lies in [0, 1] and the clip never acts",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_49": "clip upper bound 1 -> None: v / scale * 0.5 + 0.5 lies in [0, 1] (|v| <= scale), the clip never acts",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_54": "clip upper bound 1 -> 2: v / scale * 0.5 + 0.5 lies in [0, 1] (|v| <= scale), the clip never acts",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_73": "Image.fromarray(mode=None): a uint8 (h, w, 3) array is read as RGB anyway",
    "tokensmith.formats.png_fmt.x__default_picture__mutmut_75": "Image.fromarray without mode: a uint8 (h, w, 3) array is read as RGB anyway",
    "tokensmith.formats.png_fmt.x_png_card_bytes__mutmut_24": "'ascii' -> 'ASCII': Python's codec names are case-insensitive",
    "tokensmith.formats.png_fmt.x_png_card_bytes__mutmut_33": "format 'PNG' -> 'png': Pillow looks the format name up upper-cased",
    # tokensmith.formats (__init__.py; tests: tests/core/test_formats_dispatch_exact.py)
    "tokensmith.formats.x_read_embedding_with_header__mutmut_57": "fh.read(MAX_FILE_BYTES + 1) -> fh.read(None): the size was checked <= MAX_FILE_BYTES just before, so all of the file is the same bytes",
    "tokensmith.formats.x_read_embedding_with_header__mutmut_59": "fh.read(MAX_FILE_BYTES + 1) -> + 2: the size was checked <= MAX_FILE_BYTES just before, the same bytes are read",
    "tokensmith.formats.x_read_embedding_with_header__mutmut_104": "device='cpu' -> None: the pickle and PNG loaders give CPU tensors only (torch_fmt loads with map_location='cpu', PNG tensors are built on the CPU)",
    "tokensmith.formats.x_read_embedding_with_header__mutmut_106": "device='cpu' dropped: the pickle and PNG loaders give CPU tensors only (torch_fmt loads with map_location='cpu', PNG tensors are built on the CPU)",
}

KILLED = {"killed", "timeout", "caught by type check"}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          37: "caught by type check", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          -11: "segfault", -9: "segfault", None: "not checked"}


# ---------------------------------------------------------------------------------------------- mutmut


def _module_of(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _mutmut_globs(targets: list[Path]) -> list[str]:
    globs = []
    for t in targets:
        if t.is_dir():
            globs.append(_module_of(t) + ".*")
        else:
            mod = _module_of(t)
            # a package's __init__ mutants are named after the package: pkg.x_f__mutmut_1
            globs.append(mod + ".x*" if t.name == "__init__.py" else mod + ".*")
    return globs


def run_mutmut(targets: list[Path], report_only: bool = False) -> tuple[dict[str, dict], list[dict]]:
    files = sorted({f for t in targets for f in ([t] if t.is_file() else t.rglob("*.py"))})
    if not report_only:
        _mutmut(targets)
    return _mutmut_results(files)


def _mutmut(targets: list[Path]) -> None:
    started = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # Stats (which tests reach which function) afresh every run: mutmut 3.8 updates them only for new
    # tests, so a function added since (a helper split out) would count as reached by no test.
    (REPO_ROOT / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    cmd = [str(MUTMUT), "run", "--max-children", "1", *_mutmut_globs(targets)]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)  # its progress line shows as it goes
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"mutmut exited with {proc.returncode}")
    print(f"mutmut: {elapsed:.0f} s for {', '.join(_mutmut_globs(targets))}")


def _mutmut_results(files: list[Path]) -> tuple[dict[str, dict], list[dict]]:
    modules: dict[str, dict] = {}
    survivors: list[dict] = []
    for f in files:
        meta = REPO_ROOT / "mutants" / (str(f.relative_to(REPO_ROOT)) + ".meta")
        if not meta.is_file():
            continue
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        durations = data.get("durations_by_key", {})
        statuses = {k: STATUS.get(v, "suspicious") for k, v in codes.items()}
        killed = sum(s in KILLED for s in statuses.values())
        modules[_module_of(f)] = {"total": len(codes), "killed": killed,
                                  "rate": round(killed / len(codes), 4) if codes else None,
                                  "seconds": round(sum(durations.values()), 1)}
        for name, status in sorted(statuses.items()):
            if status not in KILLED:
                survivors.append({"mutant": name, "status": status, "diff": _mutmut_diff(name),
                                  "equivalent": EQUIVALENT.get(name)})
    return modules, survivors


def _mutmut_diff(name: str) -> str:
    proc = subprocess.run([str(MUTMUT), "show", name], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    lines = proc.stdout.splitlines()
    return "\n".join(ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


# ---------------------------------------------------------------------------------------------- main


def _in_module(mutant: str, module: str) -> bool:
    """tokensmith.names.x_safe_join__mutmut_3 is in tokensmith.names; server_routes.f__2 in server_routes.f;
    nodes.use.PickEmbedding.execute__2 in nodes.use."""
    if mutant.startswith(module + "__") or (module.startswith("nodes.") and mutant.startswith(module + ".")):
        return True
    head, _, last = mutant.rpartition(".")
    return head == module and (last.startswith("x") or "__" in last)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("targets", nargs="*", help="files or folders under tokensmith/, server_routes.py, nodes, nodes/X.py")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: report mutmut's stored results for the tokensmith/ targets (e.g. after "
                         "`mutmut run NAME...` retried single mutants)")
    args = ap.parse_args(argv)
    targets = [(REPO_ROOT / t).resolve() for t in (args.targets or ["tokensmith", "server_routes.py", "nodes"])]
    hosted = [m for t in targets for m in hosted_modules(t)]
    core = [t for t in targets if not hosted_modules(t)]
    for t in core:
        if not t.exists() or (REPO_ROOT / "tokensmith") not in [t, *t.parents]:
            raise SystemExit(f"{t}: not a file or folder under tokensmith/")
    started = time.monotonic()
    modules: dict[str, dict] = {}
    survivors: list[dict] = []
    if core:
        m, s = run_mutmut(core, report_only=args.report_only)
        modules.update(m)
        survivors += s
    if hosted and not args.report_only:
        m, s = run_hosted(hosted, {**EQUIVALENT, **NODE_EQUIVALENT})
        modules.update(m)
        survivors += s
    for name, m in modules.items():
        m["equivalent"] = sum(1 for s in survivors if s["equivalent"] and _in_module(s["mutant"], name))
    this_run = round(time.monotonic() - started, 1)
    # a subset run replaces its modules' figures in the file and keeps the others'
    if args.out.is_file() and args.targets:
        old = json.loads(args.out.read_text())
        kept = {k: v for k, v in old.get("modules", {}).items() if k not in modules}
        survivors = [s for s in old.get("survived", []) if not any(_in_module(s["mutant"], k) for k in modules)
                     ] + survivors
        modules = {**kept, **modules}
    total = sum(m["total"] for m in modules.values())
    killed = sum(m["killed"] for m in modules.values())
    equivalent = sum(m.get("equivalent", 0) for m in modules.values())
    result = {"total": total, "killed": killed, "equivalent": equivalent,
              "rate": round(killed / total, 4) if total else None,
              "rate_of_non_equivalent": round(killed / (total - equivalent), 4) if total > equivalent else None,
              "seconds": round(sum(m["seconds"] for m in modules.values()), 1), "last_run_seconds": this_run,
              "modules": dict(sorted(modules.items())), "survived": sorted(survivors, key=lambda s: s["mutant"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    for name, m in sorted(modules.items()):
        print(f"{name:48} {m['killed']:5}/{m['total']:<5} {100 * (m['rate'] or 0):6.1f}%"
              f"{'  (' + str(m['equivalent']) + ' equivalent)' if m.get('equivalent') else ''}")
    print(f"{'all':48} {killed:5}/{total:<5} {100 * (result['rate'] or 0):6.1f}%   "
          f"({equivalent} equivalent; this run {this_run:.0f} s)")
    survivors = result["survived"]
    open_ones = [s for s in survivors if not s["equivalent"]]
    for s in survivors:
        print(f"\n{s['mutant']} ({s['status']}{'; equivalent: ' + s['equivalent'] if s['equivalent'] else ''})")
        print("    " + s["diff"].replace("\n", "\n    "))
    print(f"\n{len(survivors)} survived ({len(open_ones)} not known to be equivalent); written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
