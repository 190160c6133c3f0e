"""SOL-ExecBench problems as evo kernel tasks.

A SOL-ExecBench problem is a folder: `definition.json` (named axes, constant or variable; inputs and outputs with
their shapes in axis names and dtypes, a shape of null for a scalar; the reference as a code string defining
`run(...)`) and `workload.jsonl` (one workload a line: the variable axes' values and each input's kind, random or
scalar; a line may wrap it as {"workload": {...}}). The imported task keeps the reference code unchanged as
`problem.py`. Tensors are inputs of `run`, in the definition's order; scalars (an epsilon, a scale) are
constants of the task, as in the built-in tasks. Every third workload is hidden. FLOPs are counted with
`FlopCounterMode` on the reference (meta device); minimum bytes are the inputs' and outputs' sizes.

A published solution (JSON: `definition`, `spec` with `entry_point` such as `kernel.py::rmsnorm` and
`destination_passing_style`, `sources` with each file's `path` and `content`) becomes the task's seed, behind an
adapter that calls its entry point; without one the seed is the reference itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

_SUPPORTED = ("random", "scalar")

_ABOUT = '''The definition's reference code is problem.py, unchanged. Tensor inputs are run's arguments in the definition's
order; scalar inputs are the task's constants (SCALARS).'''

_CONSTANTS = '''INPUTS = {inputs}  # name -> (shape in axis names or sizes, dtype); shape None: a scalar
OUTPUTS = {outputs}
SCALARS = {scalars}'''

# After the shared head (common.Reference): plain code, not a format string.
_BODY = '''

@functools.cache
def _problem():
    return _load_problem("solexecbench_reference")


def _shape(shape, params: dict) -> tuple:
    return tuple(params[a] if isinstance(a, str) else int(a) for a in shape)


def make_inputs(params: dict, seed: int, device: str) -> tuple:
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for name, (shape, dtype) in INPUTS.items():
        if shape is None:
            continue
        size, dt = _shape(shape, params), getattr(torch, dtype)
        if dt.is_floating_point:
            x = torch.randn(size, generator=g)
        elif dt == torch.bool:
            x = torch.rand(size, generator=g) < 0.5
        else:
            x = torch.randint(0, 16, size, generator=g)
        out.append(x.to(device, dt))
    return tuple(out)


def _args(tensors) -> list:
    it = iter(tensors)
    return [SCALARS[name] if shape is None else next(it) for name, (shape, _) in INPUTS.items()]


def run(*tensors):
    return _problem().run(*_args(tensors))


@functools.cache
def _flops(key: str) -> float:
    params = json.loads(key)
    with torch.device("meta"):
        tensors = [torch.empty(_shape(s, params), dtype=getattr(torch, d)) for s, d in INPUTS.values() if s is not None]
    try:
        with FlopCounterMode(display=False) as counter:
            run(*tensors)
    except Exception:  # a reference that reads values (.item()) cannot run on meta: bytes bound its T_SOL
        return 0.0
    return float(counter.get_total_flops())


def flops(params: dict) -> float:
    return _flops(_key(params))


def min_bytes(params: dict) -> float:
    total = 0
    for shape, dtype in list(INPUTS.values()) + list(OUTPUTS.values()):
        if shape is not None:
            n = 1
            for s in _shape(shape, params):
                n *= s
            total += n * getattr(torch, dtype).itemsize
    return float(total)
'''

_ADAPTER = '''_INPUTS = {inputs}
_OUTPUTS = {outputs}
_SCALARS = {scalars}


def run(*tensors):
    it = iter(tensors)
    args = [_SCALARS[name] if shape is None else next(it) for name, (shape, _) in _INPUTS.items()]
    if not {dps!r}:
        return {entry}(*args)
    sizes = {{}}
    for (shape, _), t in zip([v for v in _INPUTS.values() if v[0] is not None], tensors):
        sizes.update({{a: n for a, n in zip(shape, t.shape) if isinstance(a, str)}})
    outs = [torch.empty([sizes.get(a, a) for a in shape], dtype=dt, device=tensors[0].device)
            for shape, dt in _OUTPUTS.values()]
    {entry}(*args, *outs)
    return outs[0] if len(outs) == 1 else tuple(outs)
'''


def _adapter(name: object, entry: str, **fields: object) -> str:
    return adapter(f"the SOL-ExecBench solution {name!r}", f"run(*tensors) calls {entry}",
                   _ADAPTER.format(entry=entry, **fields))


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EvoError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from e


def _workloads(path: Path) -> list[dict[str, Any]]:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        rows = [json.loads(line) for line in lines]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EvoError(f"cannot read the workloads {path}: {getattr(e, 'strerror', None) or e}") from e
    return [r.get("workload", r) if isinstance(r, dict) else {} for r in rows]


def import_solexecbench(path: Path, out: Path, solution: Path | None = None, force: bool = False) -> Path:
    """Import the SOL-ExecBench problem folder `path` (definition.json, workload.jsonl) as a kernel task under `out`,
    with the published `solution` JSON as its seed where given."""
    path = Path(path)
    if not (path / "definition.json").is_file() or not (path / "workload.jsonl").is_file():
        raise EvoError(f"{path} is not a SOL-ExecBench problem folder: it needs definition.json and workload.jsonl")
    d = _load_json(path / "definition.json", "the definition")
    try:
        axes = {k: v for k, v in d["axes"].items()}
        inputs = {k: (v.get("shape"), v["dtype"]) for k, v in d["inputs"].items()}
        outputs = {k: (v["shape"], v["dtype"]) for k, v in d["outputs"].items()}
        code, def_name = str(d["reference"]), str(d["name"])
    except (KeyError, TypeError, AttributeError) as e:
        raise EvoError(f"{path / 'definition.json'}: missing or malformed key {e}: a definition has name, axes, "
                       "inputs, outputs and reference") from None
    consts = {k: int(v["value"]) for k, v in axes.items() if v.get("type") == "const"}
    variables = [k for k, v in axes.items() if v.get("type") != "const"]
    usable, skipped, scalars = [], 0, {}
    for w in _workloads(path / "workload.jsonl"):
        kinds = {k: (v or {}).get("type", "random") for k, v in (w.get("inputs") or {}).items()}
        if any(kind not in _SUPPORTED for kind in kinds.values()) or any(a not in (w.get("axes") or {}) for a in variables):
            skipped += 1  # safetensors or custom inputs: data evo does not have
            continue
        for k, v in (w.get("inputs") or {}).items():
            if kinds[k] == "scalar":
                if k in scalars and scalars[k] != v["value"]:
                    raise EvoError(f"{path}: scalar input {k!r} differs between workloads ({scalars[k]} and "
                                   f"{v['value']}); evo makes scalars constants of the task")
                scalars[k] = v["value"]
        usable.append(w)
    for name, (shape, _) in inputs.items():
        if shape is None and name not in scalars:
            raise EvoError(f"{path}: scalar input {name!r} has no value in any workload")
    if len(usable) < 2:
        raise EvoError(f"{path}: {len(usable)} usable workloads ({skipped} with safetensors or custom inputs skipped); "
                       "evo needs two, one visible and one hidden")
    rows = []
    for i, w in enumerate(usable):
        params = {**consts, **{a: int(w["axes"][a]) for a in variables}}
        uid = str(w.get("uuid", i)).replace("-", "")[-8:]
        rows.append(f"Workload({f'wl_{i}_{uid}'!r}, {params!r}, 'SOL-ExecBench workload {uid}', "
                    f"hidden={i % 3 == 2})")
    dtype = next((dt for _, dt in outputs.values()), "bfloat16")
    name = task_name(def_name)
    src = f"SOL-ExecBench {path.name}" + (f", solution {solution.name}" if solution else "")
    smalls = [{**{k: min(v, 64) for k, v in consts.items()}, **{a: 3 for a in variables}},
              {**{k: min(v, 96) for k, v in consts.items()}, **{a: 17 for a in variables}},
              {**consts, **{a: 3 for a in variables}}]
    published = _load_json(Path(solution), "the solution") if solution else None
    if solution and not isinstance(published, dict):
        raise EvoError(f"{solution}: not a JSON object; a solution has name, author, spec and sources")
    seed_text = (_seed(published, Path(solution), inputs, outputs, scalars) if published is not None and solution
                 else _reference_seed(code, inputs, scalars))
    ref = Reference(title=def_name, origin=src, about=_ABOUT, constants=_CONSTANTS.format(
        inputs=repr(inputs), outputs=repr(outputs), scalars=repr(scalars)), category=_category(d), workloads=rows,
        small=[], dtype=dtype, body=_BODY)

    def check(folder: Path) -> None:
        from evo.task import load_module

        small: list[dict[str, int]] = []
        for candidate in smalls:
            ref.small = [candidate]
            ref.render(folder)
            probe = load_module(folder / "reference.py", f"evo_import_{name}_probe")
            try:
                probe.run(*probe.make_inputs(candidate, 0, "cpu"))
            except Exception:  # noqa: BLE001 - these sizes do not fit the reference: try the next
                continue
            small.append(candidate)
            if len(small) == 2:
                break
        if not small:
            raise EvoError(f"{path}: the reference does not run on small sizes on CPU: {smalls[-1]}")
        ref.small = small
        stated = (usable[0].get("tolerance") or {})
        finish(folder, ref, seed_text, f"evo_import_{name}_1", (
            f"; the benchmark states atol {stated.get('max_atol')}, rtol {stated.get('max_rtol')} with a matched "
            f"ratio of {stated.get('required_matched_ratio')} (evo checks every element)" if stated else ""))

    tensors = ", ".join(k for k, (s, _) in inputs.items() if s is not None)
    author = published.get("author") if isinstance(published, dict) else None
    files = {
        "problem.py": code,
        ORIGIN_FILE: origin_json("SOL-ExecBench", path / "definition.json", code, problem=path.name,
                                 solution=solution.name if solution else None, author=str(author) if author else None),
        "task.toml": task_toml(str(d.get("description") or def_name), src),
        "prompt.md": prompt_md(def_name, str(d.get("description") or "") + "\n\nThe reference:\n\n```python\n"
                               + code.strip() + f"\n```\n\nScalars are constants: {scalars}.", f"run({tensors})",
                               "every third of the benchmark's workloads"),
    }
    return write_folder(out, name, files, check, force)


def _category(d: dict[str, Any]) -> str:
    op = str(d.get("op_type", "")).lower()
    if "attention" in op or "attn" in op:
        return "attention"
    if "quant" in op or "fp8" in op:
        return "quant"
    return "single_op" if op in ("rmsnorm", "layernorm", "softmax", "silu", "gelu") else "fused"


def _reference_seed(code: str, inputs: dict[str, Any], scalars: dict[str, Any]) -> str:
    """Without a solution: the reference's code itself, behind the same adapter (a PyTorch starting point)."""
    renamed = code.replace("def run(", "def _reference_run(", 1)
    return renamed.rstrip("\n") + "\n" + _adapter("the reference", "_reference_run", inputs=repr(inputs),
                                                   outputs="{}", scalars=repr(scalars), dps=False)


def _seed(s: dict[str, Any], solution: Path, inputs: dict[str, Any], outputs: dict[str, Any], scalars: dict[str, Any]) -> str:
    try:
        spec, sources = s["spec"], {str(f["path"]): str(f["content"]) for f in s["sources"]}
        file, _, entry = str(spec["entry_point"]).partition("::")
    except (KeyError, TypeError) as e:
        raise EvoError(f"{solution}: missing or malformed key {e}: a solution has spec.entry_point and sources") from None
    if file not in sources or not entry:
        raise EvoError(f"{solution}: the entry point {spec['entry_point']!r} names no function of its sources "
                       f"({', '.join(sources)}); write it as FILE::FUNCTION")
    if len(sources) > 1:
        raise EvoError(f"{solution}: a solution of several files ({', '.join(sources)}) is not supported yet: "
                       "join them into one file")
    head = f"# Seed: the SOL-ExecBench solution {s.get('name')!r} by {s.get('author', 'unknown')} ({Path(solution).name})\n"
    # dtypes written out (torch.bfloat16), never looked up by name: the audit reads every call
    outs = "{" + ", ".join(f"{k!r}: ({shape!r}, torch.{dt})" for k, (shape, dt) in outputs.items()) + "}"
    return head + sources[file].rstrip("\n") + "\n" + _adapter(
        s.get("name"), entry, inputs=repr(inputs), outputs=outs, scalars=repr(scalars),
        dps=bool(spec.get("destination_passing_style", False)))
