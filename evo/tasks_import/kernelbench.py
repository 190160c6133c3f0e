"""KernelBench problems as evo kernel tasks.

A KernelBench problem is one Python file: `class Model(nn.Module)` (its `forward` is the reference),
`get_init_inputs()` (the Model's constructor arguments) and `get_inputs()` (the forward's inputs), both reading
module-level size globals (`batch_size = 16`, `dim = 16384`). The imported task keeps the file unchanged as
`problem.py`; its `reference.py` adapts it to evo's kernel interface:

- the Model's parameters and buffers become inputs after the forward's own (made by its own initialisation, under
  the workload's seed), so that `run(*inputs, *weights)` is a pure function (`torch.func.functional_call`);
- a workload sets size globals: KernelBench's own sizes (visible), the same made awkward (hidden: each size
  cut by an eighth and made odd), and two small ones for Triton's interpreter on CPU;
- `flops` is counted by `torch.utils.flop_counter.FlopCounterMode` on the reference (on the meta device, so a
  large workload costs nothing to count); `min_bytes` is the size of the inputs, weights and outputs.

The seed is the problem's own code with the same adapter: a PyTorch starting point for a Triton rewrite.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evo.ast_parse import parse_source
from evo.errors import EvoError
from evo.tasks_import.common import (
    ORIGIN_FILE,
    Reference,
    adapter,
    finish,
    origin_json,
    prompt_md,
    task_name,
    task_toml,
    write_folder,
)

log = logging.getLogger("evo.tasks_import")

# Globals that are not sizes: changing them changes the problem, not its shape.
_NOT_SIZES = {"dim", "axis", "kernel_size", "stride", "padding", "dilation", "groups", "output_padding", "eps",
              "num_groups", "num_heads", "heads", "k", "top_k", "p", "seed"}
_SMALL_NUMEL = 1 << 17  # inputs, weights and outputs of a small shape: Triton's interpreter runs it in seconds

_ABOUT = '''The problem's code is problem.py, unchanged. The Model's parameters and buffers are inputs after the forward's
own; `run(*inputs, *weights)` calls Model.forward with them. A workload sets the problem's size globals.'''

_CONSTANTS = '''N_INPUTS = {n_inputs}  # what get_inputs() returns; the weights follow
# The shapes of every argument of run, per workload: which sizes and constructor arguments they belong to.
SIGNATURES = {signatures}'''

# After the shared head (common.Reference): plain code, not a format string.
_BODY = '''

def _problem(params: dict):
    module = _load_problem("kernelbench_problem")
    for name, value in params.items():
        setattr(module, name, value)
    return module


def _state(model: torch.nn.Module) -> list:
    return list(model.named_parameters()) + list(model.named_buffers())


def make_inputs(params: dict, seed: int, device: str) -> tuple:
    module = _problem(params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = module.Model(*module.get_init_inputs())
        inputs = list(module.get_inputs())
    weights = [t.detach() for _, t in _state(model)]
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs + weights)


def signature(args) -> str:
    return repr(tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args))


@functools.cache
def _skeleton(key: str):
    """The Model's structure on the meta device (no memory), and its weights' names."""
    module = _problem(json.loads(key))
    with torch.device("meta"):
        model = module.Model(*module.get_init_inputs())
    return model, [name for name, _ in _state(model)]


def run(*args):
    model, names = _skeleton(_key(SIGNATURES[signature(args)]["params"]))
    return torch.func.functional_call(model, dict(zip(names, args[N_INPUTS:])), tuple(args[:N_INPUTS]))


@functools.cache
def _counts(key: str) -> tuple:
    """(FLOPs counted by FlopCounterMode, bytes of inputs, weights and outputs), on the meta device."""
    module = _problem(json.loads(key))
    with torch.device("meta"):
        model = module.Model(*module.get_init_inputs())
        inputs = list(module.get_inputs())
        with FlopCounterMode(display=False) as counter:
            out = model(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    tensors = [t for t in inputs + [w for _, w in _state(model)] + outs if isinstance(t, torch.Tensor)]
    return float(counter.get_total_flops()), float(sum(t.numel() * t.element_size() for t in tensors))


def flops(params: dict) -> float:
    return _counts(_key(params))[0]


def min_bytes(params: dict) -> float:
    return _counts(_key(params))[1]
'''

_SEED = '''_N_INPUTS = {n_inputs}
_INIT = {init}  # the Model's constructor arguments, by the shapes of run's arguments


def _skeleton(init):
    """The Model on the meta device (no memory), and its weights' names."""
    with torch.device("meta"):
        model = Model(*init)
    return model, [n for n, _ in list(model.named_parameters()) + list(model.named_buffers())]


# Made once, at import: a Model built on every call cost 0.5 ms of Python a call (on a CPU), in the seed's time.
_SKELETONS = {{key: _skeleton(init) for key, init in _INIT.items()}}


def run(*args):
    model, names = _SKELETONS[repr(tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args))]
    return torch.func.functional_call(model, dict(zip(names, args[_N_INPUTS:])), tuple(args[:_N_INPUTS]))
'''


def _sizes(tree: ast.Module) -> dict[str, int]:
    """Module-level `name = <int>` assignments that look like sizes (not a dim, a stride, a kernel size...)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant) and type(value.value) is int:
                name = node.targets[0].id
                if name not in _NOT_SIZES and value.value >= 8:
                    out[name] = value.value
    return out


def _check_problem(tree: ast.Module, path: Path) -> None:
    names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    missing = [n for n in ("Model", "get_inputs", "get_init_inputs") if n not in names]
    if missing:
        raise EvoError(f"{path} is not a KernelBench problem: it defines no {', '.join(missing)} (a problem file has "
                       "class Model(nn.Module), get_inputs() and get_init_inputs())")


def _probe(reference: Any, params: Mapping[str, Any], real: bool) -> dict[str, Any] | None:
    """Shapes, constructor arguments and sizes of one workload, or None if the problem cannot take these sizes."""
    import torch

    try:
        module = reference._problem(dict(params))
        init = list(module.get_init_inputs())
        reference._counts(json.dumps(dict(params), sort_keys=True))  # runs the forward on meta: shapes agree
        if real:
            inputs = reference.make_inputs(dict(params), 0, "cpu")
        else:
            with torch.device("meta"):
                model = module.Model(*init)
                inputs = tuple(module.get_inputs()) + tuple(t for _, t in reference._state(model))
    except Exception:  # noqa: BLE001 - any failure means: not these sizes
        return None
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    return {"signature": reference.signature(inputs), "init": init, "numel": sum(t.numel() for t in tensors),
            "dtype": str(next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)).split(".")[-1]}


def import_kernelbench(path: Path, out: Path, force: bool = False) -> list[Path]:
    """Import a KernelBench problem file (or every `*.py` of a folder) as kernel tasks under `out`."""
    path = Path(path)
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise EvoError(f"{path}: no KernelBench problem file there (give a .py file or a folder of them)")
    if path.is_dir() and not force:  # a folder imported again: the tasks already there are kept, the others added
        there = [f for f in files if (Path(out) / task_name(f.stem)).exists()]
        if there:
            log.warning(f"kept {len(there)} task folder(s) that exist in {out} ({', '.join(task_name(f.stem) for f in there)}): "
                        "--force replaces them")
        files = [f for f in files if f not in there]
    return [_import_one(f, Path(out), force) for f in files]


def _import_one(path: Path, out: Path, force: bool) -> Path:
    try:
        text = path.read_text()
        tree = parse_source(text)
    except (OSError, UnicodeDecodeError, SyntaxError) as e:
        raise EvoError(f"cannot read the KernelBench problem {path}: {e}") from e
    _check_problem(tree, path)
    name = task_name(path.stem)
    sizes = _sizes(tree)
    model_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model")
    doc = ast.get_docstring(model_cls) or ast.get_docstring(tree) or f"KernelBench problem {path.stem}"
    forward = next((f for f in model_cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
    calls = sum(isinstance(n, ast.Call) for n in ast.walk(forward)) if forward else 0
    category = "single_op" if calls <= 1 else "fused"
    digest = hashlib.sha256(text.encode()).hexdigest()
    ref = Reference(title=doc.splitlines()[0].strip().rstrip("."), origin=f"KernelBench ({path.name}, sha256 "
                    f"{digest[:16]})", about=_ABOUT, constants=_CONSTANTS.format(n_inputs=0, signatures="{}"),
                    category=category, workloads=["Workload('x', {})", "Workload('y', {}, hidden=True)"],
                    small=[{}], dtype="float32", body=_BODY)

    def check(folder: Path) -> None:
        from evo.task import load_module

        ref.render(folder)
        reference = load_module(folder / "reference.py", f"evo_import_{name}")
        visible = _probe(reference, {}, real=False)
        if visible is None:
            raise EvoError(f"{path}: the reference does not run on the meta device with its own sizes (a problem "
                           "that makes tensors on a fixed device, or reads files, cannot be imported)")
        n_inputs = len(list(reference._problem({}).get_inputs()))
        hidden_params = _first_that_runs(reference, _awkward(sizes))
        if hidden_params is None:
            raise EvoError(f"{path}: no awkward sizes fit the problem (sizes {sizes}); evo needs a hidden workload")
        small: list[dict[str, int]] = []
        for target in (8, 16, 32, 64):
            params = {k: min(v, target + 1) for k, v in sizes.items()}
            probe = _probe(reference, params, real=True)
            if probe is not None and probe["numel"] <= _SMALL_NUMEL and params not in small:
                small.append(params)
            if len(small) == 2:
                break
        if not small:
            raise EvoError(f"{path}: no small sizes fit the problem for the CPU checks (sizes {sizes})")
        table = {}
        for params in [{}, hidden_params, *small]:
            probe = _probe(reference, params, real=False)
            assert probe is not None
            table.setdefault(probe["signature"], {"params": params, "init": probe["init"]})
        ref.constants = _CONSTANTS.format(n_inputs=n_inputs, signatures=repr(table))
        ref.dtype, ref.small = visible["dtype"], small
        own = f"KernelBench's own sizes: {sizes}"
        ref.workloads = [f"Workload('kernelbench', {{}}, {own!r})",
                         f"Workload('kernelbench_awkward', {hidden_params!r}, 'the same cut by an eighth, odd', "
                         "hidden=True)"]
        init = {sig: entry["init"] for sig, entry in table.items()}
        seed = text.rstrip("\n") + "\n" + adapter(
            "KernelBench", "run(*inputs, *weights) calls Model.forward with the weights",
            _SEED.format(n_inputs=n_inputs, init=repr(init)))
        finish(folder, ref, seed, f"evo_import_{name}_1")

    files = {
        "problem.py": text,
        ORIGIN_FILE: origin_json("KernelBench", path, text),
        "task.toml": task_toml(f"{doc.splitlines()[0].strip()} (KernelBench {path.stem})", f"KernelBench {path.name}"),
        "prompt.md": prompt_md(path.stem, doc.strip() + f"\n\nThe PyTorch reference (KernelBench's problem):\n\n"
                               f"```python\n{text.strip()}\n```",
                               "run(*inputs, *weights)", "every size cut by an eighth and made odd",
                               "The arguments are the forward's inputs, then the Model's parameters and buffers "
                               "in `named_parameters()` then `named_buffers()` order."),
    }
    return write_folder(out, name, files, check, force)


def _awkward(sizes: dict[str, int]) -> list[dict[str, int]]:
    """Hidden sizes to try, in order: every size cut by an eighth and made odd; then one size at a time."""
    def cut(v: int) -> int:
        return (v - v // 8) | 1

    tries = [{k: cut(v) for k, v in sizes.items()}] if sizes else []
    tries += [{k: cut(v)} for k, v in sizes.items()]
    return [t for t in tries if t]


def _first_that_runs(reference: Any, candidates: list[dict[str, int]]) -> dict[str, int] | None:
    for params in candidates:
        if _probe(reference, params, real=False) is not None:
            return params
    return None
