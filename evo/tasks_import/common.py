"""What both importers share: naming, calibrating the tolerance, checking the seed, writing the task folder."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.checkout_env import checkout_env
from evo.errors import EvoError

# The tolerance's floor per output dtype, relative: a kernel's own rounding (another summation order) is of
# the reference's own order, and these are about one ulp of the dtype (KernelBench checks fp32 at 1e-4).
RTOL_FLOOR = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 1e-2, "float16": 2e-3}
ERROR_MARGIN = 4.0  # the tolerance is this many times the reference's own error against float64


ORIGIN_FILE = "origin.json"  # an imported task's import record: evo/report/provenance.py shows it


@dataclass
class Calibration:
    """Tolerances and how they were set (written into SPEC.notes)."""

    atol: float
    rtol: float
    notes: str


def task_name(text: str) -> str:
    """A task folder name from a problem's name: lower case, words joined by underscores."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    name = re.sub(r"^\d+_", "", name) or "problem"  # KernelBench's "19_ReLU" is relu: the number is its index
    return name if name[0].isalpha() else f"k_{name}"


def calibrate(reference: Any, small: list[Mapping[str, Any]], dtype: str) -> Calibration:
    """atol from the reference's largest error against float64 on the small shapes (two seeds each), times
    `ERROR_MARGIN`; rtol the dtype's floor, or the measured relative error times the margin if larger."""
    from evo.eval.kernel_spec import reference_error

    abs_err = rel_err = 0.0
    for params in small:
        for seed in (1, 2):
            a, r = reference_error(reference, params, seed)
            abs_err, rel_err = max(abs_err, a), max(rel_err, r)
    floor = RTOL_FLOOR.get(dtype, 1e-2)
    rtol = max(floor, ERROR_MARGIN * rel_err)
    # The absolute part for values of order one (as the built-in tasks' atol): the error relative to the
    # largest value, with the margin; the outputs near zero then get what a value of one would.
    atol = max(ERROR_MARGIN * rel_err, floor * 1e-2)
    notes = (f"calibrated at import: the reference in {dtype} against float64 on the small shapes, max abs error "
             f"{abs_err:.3g}, relative to the largest value {rel_err:.3g}; rtol is the larger of the {dtype} floor "
             f"{floor:g} and {ERROR_MARGIN:g}x the relative error, atol {ERROR_MARGIN:g}x the relative error (for "
             "values of order one)")
    return Calibration(float(f"{atol:.3g}"), float(f"{rtol:.3g}"), notes)


_SEED_CHECK = """
import sys
from pathlib import Path
import torch
from evo.eval.kernel_spec import compare_outputs
from evo.task import load_module
folder, atol, rtol = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
ref = load_module(folder / "reference.py", "evo_import_reference")
seed = load_module(folder / "seed.py", "evo_import_seed")
for i, params in enumerate(ref.SPEC.small):
    inputs = ref.make_inputs(dict(params), 10 + i, "cpu")
    expected = ref.run(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs])
    reason = compare_outputs(seed.run(*inputs), expected, atol, rtol)
    if reason is not None:
        print(f"on {dict(params)}: {reason}")
        sys.exit(1)
print("ok")
"""


def check_seed(folder: Path, atol: float, rtol: float) -> None:
    """The seed's outputs match the reference's on every small shape, or an EvoError says where not.

    Checked in a child process (the seed may be a published solution: code from outside), on CPU with Triton's
    interpreter where there is no GPU; `evo eval` then takes it through the whole pipeline."""
    env = checkout_env()
    if not _has_cuda():
        env.setdefault("TRITON_INTERPRET", "1")
    proc = subprocess.run([sys.executable, "-c", _SEED_CHECK, str(folder), repr(atol), repr(rtol)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        why = proc.stdout.strip() or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EvoError(f"the imported seed does not match the reference {why}")


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# The head of every imported task's reference.py: the benchmark's code is problem.py beside it, unchanged;
# each importer adds its constants (`{constants}`) and, after the SPEC, the functions of evo's kernel interface.
_REFERENCE_HEAD = '''"""{title}: imported from {origin}.

{about}
"""

import functools
import importlib.util
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from evo.eval.kernel_spec import KernelSpec, Workload

PROBLEM = Path(__file__).with_name("problem.py")
{constants}

SPEC = KernelSpec(
    category={category!r},
    workloads=(
{workloads}
    ),
    small=({small}),
    atol={atol!r},
    rtol={rtol!r},
    dtype={dtype!r},
    notes={notes!r},
)


def _load_problem(name: str):
    """problem.py as a fresh module."""
    spec = importlib.util.spec_from_file_location(name, PROBLEM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _key(params: dict) -> str:
    return json.dumps(dict(params), sort_keys=True)
'''

_ADAPTER_HEAD = "\n\n# ---- evo's adapter (imported from {origin}): {what} ----\n"


@dataclass
class Reference:
    """What an importer says of its reference.py; `render` writes it with a tolerance (`body`: the functions
    `make_inputs`, `run`, `flops`, `min_bytes` and their helpers, plain code after the shared head)."""

    title: str
    origin: str
    about: str
    constants: str
    category: str
    workloads: list[str]  # `Workload(...)` expressions
    small: list[Mapping[str, Any]]
    dtype: str
    body: str

    def text(self, atol: float, rtol: float, notes: str) -> str:
        """The reference.py of this task with these tolerances."""
        return _REFERENCE_HEAD.format(
            title=self.title, origin=self.origin, about=self.about.strip(), constants=self.constants.strip(),
            category=self.category, workloads="\n".join(f"        {w}," for w in self.workloads),
            small="".join(f"{dict(p)!r}, " for p in self.small), atol=atol, rtol=rtol, dtype=self.dtype,
            notes=notes) + self.body

    def render(self, folder: Path, atol: float = 1.0, rtol: float = 1.0, notes: str = "") -> None:
        """Write reference.py into `folder` (a loose tolerance until `finish` calibrates it)."""
        (folder / "reference.py").write_text(self.text(atol, rtol, notes))


def adapter(origin: str, what: str, code: str) -> str:
    """The adapter appended to a seed: a headed block that gives the seed evo's `run(...)` interface."""
    return _ADAPTER_HEAD.format(origin=origin, what=what) + code.lstrip("\n")


def finish(folder: Path, reference: Reference, seed_text: str, module_name: str, stated: str = "") -> Calibration:
    """Calibrate the tolerance on `reference`'s small shapes, write reference.py with it and the seed, and check
    that the seed matches the reference (`stated`: what the benchmark says of its own tolerance, for the notes)."""
    from evo.task import load_module

    reference.render(folder)
    cal = calibrate(load_module(folder / "reference.py", module_name), reference.small, reference.dtype)
    reference.render(folder, cal.atol, cal.rtol, cal.notes + stated)
    (folder / "seed.py").write_text(seed_text)
    check_seed(folder, cal.atol, cal.rtol)
    return cal


def origin_json(benchmark: str, file: Path, text: str, **extra: str | None) -> str:
    """The task's import record (`origin.json`, shown by `evo report` and `Run.task_origin`): the benchmark, the
    file and its sha256, where it was read from, when; `extra` (a solution, its author, a licence) where known."""
    record: dict[str, Any] = {"benchmark": benchmark, "file": file.name, "path": str(file.resolve()),
                              "sha256": hashlib.sha256(text.encode()).hexdigest(),
                              "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record.update({k: v for k, v in extra.items() if v})
    return json.dumps(record, indent=1) + "\n"


def task_toml(description: str, source: str) -> str:
    """A kernel task's task.toml, as the built-in ones are written."""
    text = description.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").strip()
    return (f'description = "{text}"\nfamily = "kernels"\nobjective = "maximize"\nmetric = "sol_score"\n'
            f"# Imported by `evo tasks import` from {source}\n\n[evaluation]\n"
            "# Timing noise is at most 1% CV (BENCHMARKS.md): a new elite must win by two of those.\n"
            "min_improvement = 0.02\ntimeout_s = 120\nmemory_mb = 16384\n")


def prompt_md(title: str, what: str, signature: str, hidden_note: str, args_note: str = "") -> str:
    """What the LLM is told: the interface, the score, the rules (as the built-in prompts say them)."""
    return (f"# {title}\n\n{what}\n\nWrite `{signature}` in Triton with the same outputs (shapes and dtypes) as "
            f"the reference. {args_note}\n\n"
            "Score: 1 / (1 + (T - T_SOL) / (T_baseline - T_SOL)) per workload, where T_SOL is the speed of light "
            "(FLOPs at peak compute or bytes at peak bandwidth, whichever is slower) and T_baseline the faster of "
            "PyTorch eager and torch.compile. 0.5 is as fast as the baseline, 1.0 is the speed of light. Every "
            f"output element must match the reference within the tolerance, on shapes you are shown and on hidden "
            f"ones ({hidden_note}).\nRules: no calls to the reference, no caching of outputs between calls, no side "
            "streams, no changes to global torch settings; launch work on the current stream and return finished "
            "tensors.\n")


def write_folder(out: Path, name: str, files: dict[str, str], check: Any, force: bool) -> Path:
    """Write the task's files into a scratch folder, run `check(folder)` on it, then move it to OUT/NAME.

    A task that fails its check leaves nothing behind; an existing folder is replaced only with `force`."""
    dest = Path(out) / name
    if dest.exists() and not force:
        raise EvoError(f"{dest} exists: give --force to replace it, or another --out")
    Path(out).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        for rel, text in files.items():
            (scratch / rel).write_text(text)
        check(scratch)
        if dest.exists():
            shutil.rmtree(dest)
        scratch.rename(dest)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return dest
