"""The reference data of a kernel task in one worker session: inputs, seeds, and the reference job.

The worker's zygote generates a task's inputs once (`WorkloadData`) and its forked children inherit them.
The reference job (trusted code only, in a child of its own) computes the expected outputs of every
workload's seed pool and writes them to files that only the judge reads (`evo/eval/judge.py`): no process
that imports a candidate ever holds an expected output. It also times PyTorch eager and `torch.compile`,
the baselines of the SOL score.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from evo.eval.kernel_spec import Workload, as_tuple, stress_inputs
from evo.eval.timing import BenchConfig, L2Flusher, host_latency_s, time_call


def workloads_for(spec: Any, device: str) -> tuple[Workload, ...]:
    """The task's workloads, or on CPU (Triton's interpreter) its small shapes, every other one hidden."""
    if device.startswith("cuda"):
        return tuple(spec.workloads)
    return tuple(Workload(f"small_{i}", dict(p), "CPU shape", hidden=i % 2 == 1) for i, p in enumerate(spec.small))


CHECK_SEEDS = 3  # at least, per workload: the correctness rounds' fresh inputs


def seeds_per_workload(n_workloads: int, config: BenchConfig) -> int:
    """Seeds of the correctness rounds per workload (the timing's seeds are others: `WorkloadData.timing_seeds`)."""
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



class WorkloadData:
    """A task's inputs for one session, held on the CPU, and the seeds of every workload.

    The worker's zygote builds it once per task (generating inputs on the CPU is the slowest step
    of an evaluation: ~0.1-1 s a set at real sizes) and its forked children inherit it. It holds no
    expected output: those live in the judge only.
    """

    def __init__(self, reference: ModuleType, device: str, session_seed: int, config: BenchConfig,
                 with_inputs: bool = True):
        self.reference = reference
        self.workloads = workloads_for(reference.SPEC, device)
        n = seeds_per_workload(len(self.workloads), config)
        pools = {w.name: workload_seeds(session_seed, w, n + config.input_sets) for w in self.workloads}
        self.seeds = {name: pool[:n] for name, pool in pools.items()}
        # The timed calls' inputs: seeds no correctness round uses, so that a candidate meets them first in its
        # timing (an answer cached from a check cannot serve a timed call).
        self.timing_seeds = {name: pool[n:] for name, pool in pools.items()}
        self.inputs = {(w.name, s): tuple(reference.make_inputs(dict(w.params), s, "cpu"))
                       for w in self.workloads for s in pools[w.name]} if with_inputs else {}
        # The stress round (`SPEC.stress`): per workload, the first seed's inputs, scaled when handed out
        # (deterministic, so the reference job and the candidate job see the same inputs; nothing more held).
        stress = getattr(reference.SPEC, "stress", None)
        self.stress_seeds = {w.name: self.seeds[w.name][0] for w in self.workloads} if stress is not None else {}

    def workload(self, name: str) -> Workload:
        return next(w for w in self.workloads if w.name == name)

    def inputs_of(self, w: Workload, seed: int, device: str) -> tuple[Any, ...]:
        return tuple(_to(x, device) for x in self.inputs[(w.name, seed)])

    def stress_inputs_of(self, w: Workload, device: str) -> tuple[Any, ...]:
        return stress_inputs(self.reference.SPEC, self.inputs_of(w, self.stress_seeds[w.name], device))

    def expected_files(self, out_dir: Path) -> list[tuple[str, int, bool, Path]]:
        """Every expected-output file of the reference job: (workload, seed, stressed, path)."""
        files = [(w.name, s, False, expected_path(out_dir, w, s)) for w in self.workloads
                 for s in self.seeds[w.name] + self.timing_seeds[w.name]]
        files += [(w.name, self.stress_seeds[w.name], True, expected_path(out_dir, w, self.stress_seeds[w.name], True))
                  for w in self.workloads if w.name in self.stress_seeds]
        return files


# -- the reference job -----------------------------------------------------------------------------


def prepare_reference(reference: ModuleType, data: WorkloadData, out_dir: Path, device: str,
                      config: BenchConfig, l2_bytes: int) -> dict[str, Any]:
    """Expected outputs of every workload's seed pool (to files) and baseline times; trusted code only."""
    flush = L2Flusher(device, l2_bytes)
    latency = host_latency_s(device, flush)
    compiled = None
    if config.compile_baseline:
        try:
            compiled = torch.compile(reference.run)
        except Exception:  # noqa: BLE001 - no compiler here: eager is the baseline
            compiled = None
    baselines: dict[str, Any] = {}
    for w in data.workloads:
        seeds = data.seeds[w.name]
        (out_dir / w.name).mkdir(parents=True, exist_ok=True)
        input_sets = []
        for s in seeds + data.timing_seeds[w.name]:
            inputs = data.inputs_of(w, s, device)
            with torch.no_grad():
                out = as_tuple(reference.run(*inputs))
            torch.save([o.detach().cpu() for o in out], expected_path(out_dir, w, s))
            del out
            if s in data.timing_seeds[w.name]:  # the baselines are timed on the candidates' timing inputs
                input_sets.append(inputs)
        if w.name in data.stress_seeds:  # the stress round's expected outputs (see `kernel_spec.Stress`)
            with torch.no_grad():
                out = as_tuple(reference.run(*data.stress_inputs_of(w, device)))
            torch.save([o.detach().cpu() for o in out], expected_path(out_dir, w, data.stress_seeds[w.name], True))
            del out
        with torch.no_grad():
            eager = time_call(reference.run, input_sets, config, device, flush, latency)
        entry: dict[str, Any] = {"seeds": seeds, "eager": eager.to_dict(), "compile": None}
        if compiled is not None:
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

