"""What a kernel task declares, and the trusted comparison of a candidate's outputs with the reference.

A kernel task is a folder `tasks/kernels/<name>/` whose `reference.py` defines:

- `SPEC`: a `KernelSpec` (category, workloads with named-model shapes, CPU shapes, tolerances).
- `make_inputs(params, seed, device) -> tuple[Tensor, ...]`: fresh, non-trivial inputs for one call.
- `run(*inputs)`: the PyTorch reference; returns a tensor or a tuple of tensors.
- `flops(params) -> float` and `min_bytes(params) -> float`: hand-written counts for the speed of light
  (inputs read once, outputs written once).

The candidate is a Python file defining `run(*inputs)` with the same signature and outputs;
`kernels/<name>.py` is the task's Triton seed.

A task may declare a `Stress` (`SPEC.stress`): the harness then runs one more correctness call per
workload on inputs of large magnitude (`stress_inputs`), which catches low-precision accumulation that
the task's ordinary inputs let through (an fp16 sum of squares overflows at |x| ~ 100, D = 4096).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

CATEGORIES = ("single_op", "fused", "quant", "attention")


@dataclass(frozen=True)
class Workload:
    """One shape of a task: its parameters, where they come from, and whether the prompt may show it."""

    name: str
    params: Mapping[str, Any]
    source: str = ""  # the real model the shape comes from, e.g. "Llama-3-8B: hidden 4096"
    hidden: bool = False  # hidden workloads are checked and timed but never shown to an operator


@dataclass(frozen=True)
class Stress:
    """A correctness round on inputs of large magnitude: one extra call per workload, hidden ones included.

    The harness takes the inputs of the first seed of each workload's pool, multiplies the floating
    tensors at positions `inputs` (indices into `make_inputs`' tuple) by `scale` (`stress_inputs`), and
    compares the candidate's outputs with the trusted reference's on those same inputs (computed by the
    reference job, like every expected output), under the task's tolerance. It runs after every workload
    has passed on ordinary inputs, so a mismatch fails `dynamic:precision`, with a reason that names the
    scale and the magnitudes (`what`, `why`). Scale what a kernel may not assume small: activations,
    logits, upstream gradients. Leave weights alone, and inputs derived from others (a saved rstd must
    stay that of x). `scale` is a power of two, so the scaled inputs are exact (short of overflowing
    their dtype: mind fp16 and fp8 inputs). Declare it only where the reference in its dtype still meets
    the tolerance against float64 on the scaled inputs (`reference_error(..., stressed=True)`;
    tests/test_kernel_tasks.py checks the small shapes).
    """

    scale: float = 64.0
    inputs: tuple[int, ...] = (0,)
    what: str = "activations"  # what the scaled inputs are, for the failure reason
    why: str = "as massive activations in LLM residual streams"  # where such magnitudes occur

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 1 and math.frexp(self.scale)[0] == 0.5):
            raise ValueError(f"Stress.scale must be a power of two above 1 (exact scaling), not {self.scale!r}")
        if not self.inputs or any(not isinstance(i, int) or i < 0 for i in self.inputs):
            raise ValueError(f"Stress.inputs must be non-negative input positions, not {self.inputs!r}")


@dataclass(frozen=True)
class KernelSpec:
    """A kernel task's declaration (see the module docstring for the functions beside it)."""

    category: str
    workloads: tuple[Workload, ...]
    small: tuple[Mapping[str, Any], ...]  # shapes for Triton's CPU interpreter: tiny, and awkward
    atol: float
    rtol: float
    dtype: str = "bfloat16"
    notes: str = ""  # how the tolerance was calibrated, anything unusual
    extra: Mapping[str, Any] = field(default_factory=dict)
    stress: Stress | None = None  # an extra correctness round on inputs of large magnitude (see `Stress`)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, not {self.category!r}")
        if not self.workloads or not self.small:
            raise ValueError("a kernel task needs at least one workload and one small (CPU) shape")
        if not any(w.hidden for w in self.workloads) or all(w.hidden for w in self.workloads):
            raise ValueError("a kernel task needs both visible and hidden workloads")

    def visible(self) -> tuple[Workload, ...]:
        return tuple(w for w in self.workloads if not w.hidden)


def as_tuple(outputs: Any) -> tuple[Any, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def upcast(inputs: Sequence[Any]) -> tuple[Any, ...]:
    """Floating tensors to float64 (integers, quantised codes and non-tensors untouched)."""
    return tuple(
        x.to(torch.float64) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs
    )


def stress_inputs(spec: KernelSpec, inputs: Sequence[Any]) -> tuple[Any, ...]:
    """The stress round's inputs: `inputs` with the tensors at `spec.stress.inputs` times `spec.stress.scale`.

    The scaled tensors are new (the originals are untouched); the others are passed through as they are.
    Raises ValueError where the task's declaration does not fit its inputs.
    """
    st = spec.stress
    if st is None:
        raise ValueError("the task declares no stress round")
    out = list(inputs)
    for i in st.inputs:
        x = out[i] if i < len(out) else None
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            raise ValueError(f"Stress.inputs names input {i}, which is not a floating tensor")
        out[i] = x * st.scale
    return tuple(out)


def stress_description(spec: KernelSpec, stressed: Sequence[Any], names: Sequence[str] = ()) -> str:
    """How the stress round's inputs look, for a failure reason: which inputs, their scale and magnitude."""
    st = spec.stress
    assert st is not None
    which = ", ".join(names[i] if i < len(names) else f"input {i}" for i in st.inputs)
    xs = [stressed[i].detach().to(torch.float64) for i in st.inputs if stressed[i].numel()]
    rms = max((float(x.pow(2).mean().sqrt()) for x in xs), default=0.0)
    peak = max((float(x.abs().max()) for x in xs), default=0.0)
    return f"inputs scaled by {st.scale:g} ({which}: {st.what} of magnitude ~{rms:.3g}, up to {peak:.3g}, {st.why})"


COMPARE_CHUNK = 1 << 24  # elements compared at once, widened: bounds the harness's own memory (a
# vocabulary's logits in float64 are GBs, and several checking children share the GPU)


def _compare_floats(g: torch.Tensor, e: torch.Tensor, atol: float, rtol: float) -> str | None:
    """Why `g` is not `e` within atol + rtol * |e| elementwise (chunk by chunk), or None.

    Non-finite values agree only with the same value (NaN with NaN, inf with the same inf). Outputs of 16 or
    8 bits are compared in float32, which holds them exactly (half the traffic of float64); the rounding
    of their difference is ~1e-7 relative, far below any tolerance."""
    wide = torch.float32 if e.element_size() <= 2 else torch.float64
    g_flat, e_flat = g.reshape(-1), e.reshape(-1)
    bad_g = bad_e = over_n = 0
    worst: tuple[float, int, float, float] | None = None  # (excess, index, got, expected)
    for lo in range(0, e.numel(), COMPARE_CHUNK):
        gw = g_flat[lo:lo + COMPARE_CHUNK].to(wide)
        ew = e_flat[lo:lo + COMPARE_CHUNK].to(wide)
        finite_g, finite_e = torch.isfinite(gw), torch.isfinite(ew)
        err = (gw - ew).abs()
        allowed = atol + rtol * ew.abs()
        close = (finite_g & finite_e & (err <= allowed)) | (gw == ew) | (torch.isnan(gw) & torch.isnan(ew))
        over = ~close
        nonfinite_g, nonfinite_e, n = torch.stack([(~finite_g).sum(), (~finite_e).sum(), over.sum()]).tolist()
        bad_g += nonfinite_g
        bad_e += nonfinite_e
        if n:
            over_n += n
            excess = torch.where(over, (err - allowed).nan_to_num(nan=math.inf), torch.zeros_like(err))
            k = int(torch.argmax(excess))
            if worst is None or float(excess[k]) > worst[0]:
                worst = (float(excess[k]), lo + k, gw[k].item(), ew[k].item())
    if bad_g and not bad_e:
        return f"has {bad_g} of {e.numel()} values NaN/inf where the reference is finite"
    if worst is not None:
        idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(worst[1]), e.shape))
        return (f"differs at {over_n} of {e.numel()} elements; worst at {idx}: got {worst[2]:.6g}, "
                f"expected {worst[3]:.6g} (atol {atol:g}, rtol {rtol:g})")
    return None


def compare_outputs(got: Any, expected: Any, atol: float, rtol: float) -> str | None:
    """None when `got` matches `expected` everywhere; otherwise a reason a person can act on.

    Every element is checked (no matched-ratio slack); NaN or inf where the reference is finite fails;
    type, count, shape and dtype must match the reference's.
    """
    got_t, exp_t = as_tuple(got), as_tuple(expected)
    if len(got_t) != len(exp_t):
        return f"returned {len(got_t)} outputs, the reference returns {len(exp_t)}"
    for i, (g, e) in enumerate(zip(got_t, exp_t, strict=True)):
        where = f"output {i}" if len(exp_t) > 1 else "output"
        if not isinstance(g, torch.Tensor):
            return f"{where} is a {type(g).__name__}, not a torch.Tensor"
        if type(g) is not torch.Tensor:
            return f"{where} is a tensor subclass ({type(g).__name__}); return a plain torch.Tensor"
        if tuple(g.shape) != tuple(e.shape):
            return f"{where} has shape {tuple(g.shape)}, expected {tuple(e.shape)}"
        if g.dtype != e.dtype:
            return f"{where} has dtype {g.dtype}, expected {e.dtype}"
        if g.device != e.device:
            return f"{where} is on {g.device}, expected {e.device}"
        if e.is_floating_point():
            reason = _compare_floats(g.detach(), e.detach(), atol, rtol)
            if reason is not None:
                return f"{where} {reason}"
        elif not torch.equal(g, e):
            n = int((g != e).sum())
            return f"{where} differs at {n} of {e.numel()} elements (exact match required for {e.dtype})"
    return None


def reference_error(reference: Any, params: Mapping[str, Any], seed: int, device: str = "cpu",
                    stressed: bool = False) -> tuple[float, float]:
    """(max abs error, max error relative to max |value|) of the reference in its dtype against float64.

    Tolerances are set from this: a few times the reference's own rounding error in its dtype.
    `stressed`: on the stress round's inputs (`stress_inputs`) instead of the ordinary ones.
    """
    inputs = reference.make_inputs(dict(params), seed, device)
    if stressed:
        inputs = stress_inputs(reference.SPEC, inputs)
    low = as_tuple(reference.run(*inputs))
    high = as_tuple(reference.run(*upcast(inputs)))
    abs_err, rel_err = 0.0, 0.0
    for lo, hi in zip(low, high, strict=True):
        if not lo.is_floating_point():
            continue
        diff = (lo.to(torch.float64) - hi.to(torch.float64)).abs().max().item()
        scale = hi.to(torch.float64).abs().max().item() or 1.0
        abs_err, rel_err = max(abs_err, diff), max(rel_err, diff / scale)
    return abs_err, rel_err
