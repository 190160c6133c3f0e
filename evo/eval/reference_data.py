"""The reference data of a kernel task in one worker session: inputs, seeds, and the reference job.

The worker's zygote generates a task's correctness inputs once (`WorkloadData`) and its forked children
inherit them. The reference job (trusted code only, in a child of its own) computes the expected outputs of
every workload's seed pool and writes them to files that only the judge reads (`evo/eval/judge.py`): no
process that imports a candidate ever holds an expected output. It also makes the timing's inputs, from
seeds only the judge and it know, and writes them masked (`evo/eval/masked.py`) for the zygote; and it
times PyTorch eager and `torch.compile` on them, the baselines of the SOL score.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import random
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from evo.eval import masked as masking
from evo.eval.kernel_spec import Workload, as_tuple, stress_inputs
from evo.eval.timing import BenchConfig, L2Flusher, host_latency_s, time_call


def workloads_for(spec: Any, device: str) -> tuple[Workload, ...]:
    """The task's workloads, or on CPU (Triton's interpreter) its small shapes, every other one hidden."""
    if device.startswith("cuda"):
        return tuple(spec.workloads)
    return tuple(Workload(f"small_{i}", dict(p), "CPU shape", hidden=i % 2 == 1) for i, p in enumerate(spec.small))


CHECK_SEEDS = 3  # at least, per workload: the correctness rounds' fresh inputs
# How a worker says that a candidate's job came before its task's reference job (or after the worker let that
# task's data go): the evaluator runs the reference job again and the candidate once more.
NO_REFERENCE_YET = "the task's reference job has not run"
# Tasks whose inputs (the zygote) and expected outputs (the judge) a worker keeps at once: a suite's tasks share
# one pool, their candidates interleaved. Past it the oldest task's go, and its evaluator runs its reference
# job again when a candidate of that task comes (`NO_REFERENCE_YET`).
TASKS_HELD = int(os.environ.get("EVO_TASKS_HELD", "8"))


def seeds_per_workload(n_workloads: int, config: BenchConfig) -> int:
    """Seeds of the correctness rounds per workload (the timing's are the judge's: `draw_timing_plan`)."""
    return max(CHECK_SEEDS, math.ceil(config.min_trials / max(n_workloads, 1)))


def workload_seeds(session_seed: int, workload: Workload, n: int) -> list[int]:
    """The seed pool of one workload in one worker session (fresh per session, not per candidate)."""
    base = (session_seed * 1_000_003 + sum(map(ord, workload.name)) * 7919) % (2**31 - 1)
    return [base + 101 * i for i in range(n)]


def expected_path(out_dir: Path, workload: Workload, seed: int, stressed: bool = False) -> Path:
    return out_dir / workload.name / (f"{seed}-stress.pt" if stressed else f"{seed}.pt")


def _to(x: Any, device: str) -> Any:
    if not isinstance(x, torch.Tensor):
        return x
    return x.to(device) if device != "cpu" else x.clone()  # never hand out the pristine copy



TimingPlan = dict[str, list[tuple[int, int]]]  # workload -> its timing's input sets, as (seed, mask key)


def draw_timing_plan(workloads: tuple[Workload, ...], config: BenchConfig, seeds: dict[str, list[int]]) -> TimingPlan:
    """The judge's secret: per workload, `config.input_sets` seeds that no correctness round uses, each with
    the key that masks its inputs until its timed calls (`evo/eval/masked.py`)."""
    rng = random.SystemRandom()
    plan: TimingPlan = {}
    for w in workloads:
        taken = set(seeds.get(w.name, []))
        drawn: list[int] = []
        while len(drawn) < config.input_sets:
            seed = rng.randrange(2**31 - 1)
            if seed not in taken:
                taken.add(seed)
                drawn.append(seed)
        plan[w.name] = [(seed, rng.randrange(1, 2**63)) for seed in drawn]
    return plan


class WorkloadData:
    """A task's inputs for one session, held on the CPU, and the seeds of every workload.

    The worker's zygote builds it once per task (generating inputs on the CPU is the slowest step
    of an evaluation: ~0.1-1 s a set at real sizes) and its forked children inherit it. It holds no
    expected output: those live in the judge only. Of the timing it holds only the masked sets
    (`masked`, loaded once the reference job wrote them) and never their seeds: those are the judge's
    (`timing_plan`, set in the judge and in the reference job only).
    """

    def __init__(self, reference: ModuleType, device: str, session_seed: int, config: BenchConfig,
                 with_inputs: bool = True):
        self.reference = reference
        self.workloads = workloads_for(reference.SPEC, device)
        n = seeds_per_workload(len(self.workloads), config)
        self.seeds = {w.name: workload_seeds(session_seed, w, n) for w in self.workloads}
        self.timing_plan: TimingPlan = {}
        self.masked: dict[str, list[masking.MaskedSet]] = {}
        self.inputs = {(w.name, s): tuple(reference.make_inputs(dict(w.params), s, "cpu"))
                       for w in self.workloads for s in self.seeds[w.name]} if with_inputs else {}
        # The stress round (`SPEC.stress`): per workload, the first seed's inputs, scaled when handed out
        # (deterministic, so the reference job and the candidate job see the same inputs; nothing more held).
        stress = getattr(reference.SPEC, "stress", None)
        self.stress_seeds = {w.name: self.seeds[w.name][0] for w in self.workloads} if stress is not None else {}

    def workload(self, name: str) -> Workload:
        return next(w for w in self.workloads if w.name == name)

    @property
    def timing_seeds(self) -> dict[str, list[int]]:
        return {name: [seed for seed, _ in sets] for name, sets in self.timing_plan.items()}

    def mask_keys(self, w: str) -> list[int]:
        return [key for _, key in self.timing_plan[w]]

    def inputs_of(self, w: Workload, seed: int, device: str) -> tuple[Any, ...]:
        return tuple(_to(x, device) for x in self.inputs[(w.name, seed)])

    def stress_inputs_of(self, w: Workload, device: str) -> tuple[Any, ...]:
        return stress_inputs(self.reference.SPEC, self.inputs_of(w, self.stress_seeds[w.name], device))

    def expected_files(self, out_dir: Path) -> list[tuple[str, int, bool, Path]]:
        """Every expected-output file of the reference job: (workload, seed, stressed, path)."""
        files = [(w.name, s, False, expected_path(out_dir, w, s)) for w in self.workloads
                 for s in self.seeds[w.name] + self.timing_seeds.get(w.name, [])]
        files += [(w.name, self.stress_seeds[w.name], True, expected_path(out_dir, w, self.stress_seeds[w.name], True))
                  for w in self.workloads if w.name in self.stress_seeds]
        return files

    def load_masked(self, masked_dir: Path) -> None:
        """The timing's masked sets, as the reference job wrote them (in the zygote, before a candidate forks)."""
        missing = [w.name for w in self.workloads if not masked_path(masked_dir, w).is_file()]
        if missing:
            raise FileNotFoundError(f"no masked timing inputs for workloads {', '.join(missing)} in {masked_dir}: "
                                    f"{NO_REFERENCE_YET} in this worker session")
        self.masked = {w.name: masking.load(masked_path(masked_dir, w)) for w in self.workloads}


def masked_path(masked_dir: Path, workload: Workload) -> Path:
    return masked_dir / f"{workload.name}.pt"


# -- the reference job -----------------------------------------------------------------------------


def compiled_baseline(reference: ModuleType, config: BenchConfig) -> Any:
    """`torch.compile` of the reference's `run` (compiled lazily, on its first calls), None without a compiler
    or where the config leaves it out."""
    if not config.compile_baseline:
        return None
    try:
        return torch.compile(reference.run)
    except Exception:  # noqa: BLE001 - no compiler here: eager is the baseline
        return None


def timing_sets_of(reference: ModuleType, w: Workload, plan: TimingPlan) -> list[tuple[Any, ...]]:
    """One workload's timing sets of the judge's plan, on the CPU (in the reference job only: trusted)."""
    return [tuple(reference.make_inputs(dict(w.params), seed, "cpu")) for seed, _ in plan[w.name]]


def save_expected(out: tuple[Any, ...], path: Path) -> None:
    """A reference call's outputs to a file for the judge. A full disk is named as such: torch's own error
    reads "unexpected pos ... iostream error" (five publish jobs filled a 64 GB disk on an H200)."""
    tensors = [o.detach().cpu() for o in out]
    need = sum(t.numel() * t.element_size() for t in tensors)
    try:
        torch.save(tensors, path)
        return
    except (OSError, RuntimeError):
        free = shutil.disk_usage(path.parent).free
        if free >= need + (16 << 20):
            raise
    # Out of the handler, the failed writer (still holding its file open) is let go; then the partial file.
    gc.collect()
    path.unlink(missing_ok=True)
    raise OSError(errno.ENOSPC, f"no space left on the disk of {path.parent} for a reference output of "
                  f"{need / 2**20:.0f} MB ({free / 2**20:.0f} MB free): a task's expected outputs are staged "
                  "there until the judge reads them; free space, or evaluate fewer tasks at once")


def stage_reference(reference: ModuleType, data: WorkloadData, w: Workload, cpu_sets: list[tuple[Any, ...]],
                    out_dir: Path, device: str, plan: TimingPlan, masked_dir: Path, compiled: Any) -> str | None:
    """The untimed part of the reference job for one workload, which shares the GPU: the expected outputs of its
    seed pool, timing sets (`cpu_sets`, from `timing_sets_of`) and stress round (to files for the judge), its
    timing sets masked (to a file for the zygote; also kept in `data` for the no-op calibration), and `compiled`
    warmed up on the timing sets as they will be timed (so that nothing compiles while the GPU is held alone).
    Trusted code only. Returns the compiler's error, if any (the baseline is then eager)."""
    (out_dir / w.name).mkdir(parents=True, exist_ok=True)
    for s in data.seeds[w.name]:
        with torch.no_grad():
            out = as_tuple(reference.run(*data.inputs_of(w, s, device)))
        save_expected(out, expected_path(out_dir, w, s))
        del out
    masked_sets = []
    compile_error = None
    for (seed, key), cpu_inputs in zip(plan[w.name], cpu_sets, strict=True):
        masked = masking.mask(cpu_inputs, key, device)
        inputs = masking.unmask(masked, key, device)  # the layout the timing will see (`time_baselines`)
        with torch.no_grad():
            out = as_tuple(reference.run(*inputs))
            save_expected(out, expected_path(out_dir, w, seed))
            del out
            if compiled is not None and compile_error is None:
                try:
                    compiled(*inputs)
                except Exception as e:  # noqa: BLE001 - a compile failure leaves eager as the baseline
                    compile_error = f"{type(e).__name__}: {e}"[:500]
        masked_sets.append(masked)
        del inputs
    masking.save(masked_sets, masked_path(masked_dir, w))
    data.masked[w.name] = masked_sets
    if w.name in data.stress_seeds:  # the stress round's expected outputs (see `kernel_spec.Stress`)
        with torch.no_grad():
            out = as_tuple(reference.run(*data.stress_inputs_of(w, device)))
        save_expected(out, expected_path(out_dir, w, data.stress_seeds[w.name], True))
        del out
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return compile_error


def time_baselines(reference: ModuleType, data: WorkloadData, device: str, config: BenchConfig, l2_bytes: int,
                   plan: TimingPlan, compiled: Any, compile_errors: dict[str, str | None]) -> dict[str, Any]:
    """The timed part of the reference job, with the GPU held alone: eager and compiled baselines per workload,
    on the timing's own sets (unmasked from `data.masked`), and the host's latency."""
    flush = L2Flusher(device, l2_bytes)
    latency = host_latency_s(device, flush)
    data.timing_plan = plan
    baselines: dict[str, Any] = {}
    for w in data.workloads:
        input_sets = [masking.unmask(m, key, device)
                      for m, (_, key) in zip(data.masked[w.name], plan[w.name], strict=True)]
        with torch.no_grad():
            eager = time_call(reference.run, input_sets, config, device, flush, latency)
        entry: dict[str, Any] = {"seeds": data.seeds[w.name], "eager": eager.to_dict(), "compile": None}
        if compile_errors.get(w.name):
            entry["compile_error"] = compile_errors[w.name]
        elif compiled is not None:
            try:
                with torch.no_grad():
                    entry["compile"] = time_call(compiled, input_sets, config, device, flush, latency).to_dict()
            except Exception as e:  # noqa: BLE001 - a compile failure leaves eager as the baseline
                entry["compile_error"] = f"{type(e).__name__}: {e}"[:500]
        times = [entry["eager"]["median_s"]] + ([entry["compile"]["median_s"]] if entry["compile"] else [])
        entry["baseline_s"] = min(times)
        baselines[w.name] = entry
        del input_sets, eager
    return {"workloads": baselines, "latency_s": latency}
