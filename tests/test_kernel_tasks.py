"""Every kernel task is well formed, and its Triton seed is correct under Triton's CPU interpreter."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evo.eval import kernel_spec
from evo.eval.kernel_spec import (
    CATEGORIES,
    KernelSpec,
    Stress,
    as_tuple,
    compare_outputs,
    reference_error,
    stress_inputs,
    upcast,
)
from evo.task import list_tasks, load_task

REPO = Path(__file__).resolve().parents[1]
KERNEL_TASKS = [name for name in list_tasks() if name.startswith("kernels/")]


def reference_of(name: str):
    return load_task(name).reference


def test_suite_has_the_promised_size_and_mix() -> None:
    counts = {c: 0 for c in CATEGORIES}
    for name in KERNEL_TASKS:
        counts[reference_of(name).SPEC.category] += 1
    total = sum(counts.values())
    assert total >= 30, counts
    # proportions like SOL-ExecBench: ~40% single ops, ~35% fused, ~15% quantisation, ~10% attention
    assert counts["single_op"] / total >= 0.3 and counts["fused"] / total >= 0.25, counts
    assert counts["quant"] >= 4 and counts["attention"] >= 3, counts


@pytest.mark.parametrize("name", KERNEL_TASKS)
def test_task_is_well_formed(name: str) -> None:
    task = load_task(name)
    ref = task.reference
    assert isinstance(ref.SPEC, KernelSpec)
    assert task.config.metric == "sol_score" and task.config.objective == "maximize"
    assert task.config.min_improvement > 0, "kernel scores are measured: elites need a noise margin"
    assert (REPO / "kernels" / f"{name.split('/')[1]}.py").is_file(), "every task has a Triton seed in kernels/"
    for w in ref.SPEC.workloads:
        assert ref.flops(dict(w.params)) >= 0 and ref.min_bytes(dict(w.params)) > 0, w.name
    assert any(ref.flops(dict(w.params)) > 0 for w in ref.SPEC.workloads) or ref.SPEC.category == "quant"


@pytest.mark.parametrize("name", KERNEL_TASKS)
def test_inputs_are_seeded_and_never_trivial(name: str) -> None:
    ref = reference_of(name)
    params = dict(ref.SPEC.small[0])
    a, b, c = (ref.make_inputs(params, s, "cpu") for s in (1, 1, 2))
    floats = [x for x in a if isinstance(x, torch.Tensor) and x.is_floating_point()]
    assert floats, "a kernel task takes at least one floating tensor"
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), "the same seed gives the same inputs"
    assert any(isinstance(x, torch.Tensor) and not torch.equal(x, z) for x, z in zip(a, c, strict=True))
    for x in floats:
        if x.numel() > 1:
            assert x.float().std() > 0, "an input tensor is constant (all ones or zeros?)"


@pytest.mark.parametrize("name", KERNEL_TASKS)
def test_tolerance_covers_the_reference_own_error(name: str) -> None:
    ref = reference_of(name)
    for params in ref.SPEC.small:
        # the stress round's inputs too (SPEC.stress): the reference must stay accurate on them
        for stressed in (False, True) if ref.SPEC.stress is not None else (False,):
            inputs = ref.make_inputs(dict(params), 3, "cpu")
            inputs = stress_inputs(ref.SPEC, inputs) if stressed else inputs
            low = as_tuple(ref.run(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]))
            high = as_tuple(ref.run(*upcast(inputs)))
            for lo, hi in zip(low, high, strict=True):
                if lo.is_floating_point():
                    # the reference in its own dtype must pass against fp64, or the tolerance is too tight
                    err = (lo.double() - hi.double()).abs()
                    allowed = ref.SPEC.atol + ref.SPEC.rtol * hi.double().abs()
                    assert bool((err <= allowed).all()), (params, stressed, err.max())
            abs_err, rel_err = reference_error(ref, params, seed=3, stressed=stressed)
            assert 0 <= rel_err and abs_err < float("inf")


# Tasks whose kernels reduce over inputs of unbounded magnitude: an fp16 accumulator or a softmax without
# the max subtracted passes on ordinary inputs and overflows on large ones (the stress round catches it).
STRESSED = {"rmsnorm_fwd", "layernorm_fwd", "add_rmsnorm", "add_layernorm", "rmsnorm_gemm", "softmax_fwd",
            "logsumexp_rows", "cross_entropy_fwd", "cross_entropy_bwd", "rmsnorm_bwd", "layernorm_bwd"}


def test_reduction_tasks_declare_a_stress_round() -> None:
    declared = {name.split("/")[1] for name in KERNEL_TASKS if reference_of(name).SPEC.stress is not None}
    assert STRESSED <= declared, STRESSED - declared


@pytest.mark.parametrize("name", sorted(f"kernels/{t}" for t in STRESSED))
def test_stress_inputs_are_scaled_exactly(name: str) -> None:
    ref = reference_of(name)
    st = ref.SPEC.stress
    inputs = ref.make_inputs(dict(ref.SPEC.small[0]), 5, "cpu")
    scaled = stress_inputs(ref.SPEC, inputs)
    assert scaled is not inputs and len(scaled) == len(inputs)
    for i, (x, y) in enumerate(zip(inputs, scaled, strict=True)):
        if i in st.inputs:
            assert y.dtype == x.dtype and y.shape == x.shape and torch.equal(y.double(), x.double() * st.scale)
            assert torch.isfinite(y).all(), "the scale overflows the input's dtype"
        else:
            assert y is x
    assert torch.equal(inputs[st.inputs[0]], ref.make_inputs(dict(ref.SPEC.small[0]), 5, "cpu")[st.inputs[0]])


def test_stress_declaration_is_checked() -> None:
    assert Stress().scale == 64.0 and Stress().inputs == (0,)
    for bad in (3.0, 1.0, 0.5, float("inf"), -64.0):
        with pytest.raises(ValueError, match="power of two"):
            Stress(bad)
    with pytest.raises(ValueError, match="input positions"):
        Stress(64.0, ())
    ref = reference_of("kernels/rmsnorm_fwd")
    spec = ref.SPEC
    inputs = ref.make_inputs(dict(spec.small[0]), 1, "cpu")
    with pytest.raises(ValueError, match="not a floating tensor"):
        stress_inputs(dataclasses.replace(spec, stress=Stress(64.0, (5,))), inputs)
    with pytest.raises(ValueError, match="no stress round"):
        stress_inputs(dataclasses.replace(spec, stress=None), inputs)


SEED_CHECK = """
import sys, torch
from evo.eval.kernel_spec import compare_outputs, stress_inputs
from evo.task import load_module, load_task
task = load_task(sys.argv[1])
ref = task.reference
seed = load_module(__import__("pathlib").Path(sys.argv[2]), "candidate")
for i, params in enumerate(ref.SPEC.small):
    # the ordinary inputs, then (where the task declares one) the stress round's inputs of large magnitude
    for stressed in (False, True) if ref.SPEC.stress is not None else (False,):
        inputs = ref.make_inputs(dict(params), 10 + i, "cpu")
        inputs = stress_inputs(ref.SPEC, inputs) if stressed else inputs
        expected = ref.run(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs])
        got = seed.run(*inputs)
        reason = compare_outputs(got, expected, ref.SPEC.atol, ref.SPEC.rtol)
        assert reason is None, (params, "stressed" if stressed else "ordinary", reason)
print("ok")
"""


@pytest.mark.parametrize("name", KERNEL_TASKS)
def test_seed_is_correct_under_the_triton_interpreter(name: str) -> None:
    seed = REPO / "kernels" / f"{name.split('/')[1]}.py"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SEED_CHECK, name, str(seed)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_compare_outputs_reasons() -> None:
    e = torch.randn(4, 8).to(torch.bfloat16)
    assert compare_outputs(e.clone(), e, 1e-2, 1e-2) is None
    assert "shape" in compare_outputs(e[:3], e, 1e-2, 1e-2)
    assert "dtype" in compare_outputs(e.float(), e, 1e-2, 1e-2)
    bad = e.clone()
    bad[2, 5] = float("nan")
    assert "NaN/inf" in compare_outputs(bad, e, 1e-2, 1e-2)
    off = e.clone()
    off[1, 1] += 1.0
    assert "differs at 1 of 32" in compare_outputs(off, e, 1e-2, 1e-2)
    assert "outputs" in compare_outputs((e, e), e, 1e-2, 1e-2)
    assert "exact" in compare_outputs(torch.tensor([1, 2]), torch.tensor([1, 3]), 0, 0)
    assert "not a torch.Tensor" in compare_outputs([1], e, 1e-2, 1e-2)


def test_compare_outputs_in_chunks_finds_the_worst_element_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_spec, "COMPARE_CHUNK", 7)  # many chunks, one boundary mid-row
    e = torch.randn(6, 10, dtype=torch.float32)
    off = e.clone()
    off[0, 1] += 0.5
    off[5, 9] += 3.0  # the worst, in the last chunk
    reason = compare_outputs(off, e, 1e-3, 1e-3)
    assert "differs at 2 of 60" in reason and "worst at (5, 9)" in reason
    assert compare_outputs(e.clone(), e, 1e-3, 1e-3) is None


def test_compare_outputs_nan_where_the_reference_is_finite_fails_even_if_it_has_inf_elsewhere() -> None:
    e = torch.randn(16)
    e[3] = float("inf")
    e[4] = float("nan")
    same = e.clone()
    assert compare_outputs(same, e, 1e-3, 1e-3) is None  # inf agrees with inf, NaN with NaN
    bad = e.clone()
    bad[9] = float("nan")
    assert "differs at 1 of 16" in compare_outputs(bad, e, 1e-3, 1e-3)
    flipped = e.clone()
    flipped[3] = -float("inf")
    assert "differs at 1 of 16" in compare_outputs(flipped, e, 1e-3, 1e-3)
