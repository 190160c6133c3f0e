"""Integrity facts a candidate's process reports about itself, and the helpers of the correctness calls.

These are the checks that can only be observed inside the process that ran the candidate (its threads,
its current stream, the identity of the functions the harness calls, torch's global flags, files left in
its folder). They are evidence, not verdicts: the judge requires every one of them in the report, and a
missing, malformed or contradictory one fails the candidate. Whatever decides correctness and time is
measured by the judge, outside this process.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evo.eval.kernel_spec import compare_outputs


def harness_identity() -> dict[str, int]:
    """Identities of the functions the harness trusts; a candidate that patches one is caught."""
    objs = {
        "torch.cuda.Event": torch.cuda.Event,
        "torch.cuda.Event.record": torch.cuda.Event.record,
        "torch.cuda.Event.elapsed_time": torch.cuda.Event.elapsed_time,
        "torch.cuda.synchronize": torch.cuda.synchronize,
        "torch.equal": torch.equal,
        "torch.allclose": torch.allclose,
        "torch.Tensor.to": torch.Tensor.to,
        "torch.Tensor.abs": torch.Tensor.abs,
        "torch.save": torch.save,
        "torch.load": torch.load,
        "time.perf_counter": time.perf_counter,
        "kernel_spec.compare_outputs": compare_outputs,
    }
    # The child's own timed-call path, looked up where the child calls it from (bench imports these names, so
    # a candidate that wants them changed must change bench's, or the module the call goes through).
    for module, names in (("evo.eval.bench", ("timed_replay", "timed_sample", "GraphedCalls")),
                          ("evo.eval.timed_graph", ("GraphedCalls.__call__", "GraphedCalls._record", "xor_philox",
                                                    "graph_events", "spin")),
                          ("evo.eval.masked_kernel", ("xor_philox",)),
                          ("evo.eval.masked", ("unmask", "unmask_into", "xor_stream")),
                          ("evo.eval.wire", ("send_packet", "next_packet")),
                          ("evo.eval.digest", ("digest", "state_of", "_level_torch", "_level_triton")),
                          ("evo.eval.timing", ("timed_replay", "timed_sample", "_on_idle_device", "graph_events",
                                               "graph_events_work", "spin"))):
        for name in names:
            obj: object = sys.modules.get(module)
            for part in name.split("."):  # a method: looked up on its class, where a patch would put it
                obj = getattr(obj, part, None)
            objs[f"{module.removeprefix('evo.eval.')}.{name}"] = obj
    return {k: id(v) for k, v in objs.items()}


def precision_flags() -> dict[str, Any]:
    return {
        "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "bf16_reduced_precision": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
        "fp16_reduced_precision": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
    }


def native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def storage_span(t: torch.Tensor) -> tuple[int, int]:
    start = t.untyped_storage().data_ptr()
    return start, start + t.untyped_storage().nbytes()


def aliases(outputs: Sequence[Any], inputs: Sequence[Any]) -> bool:
    spans = [storage_span(x) for x in inputs if isinstance(x, torch.Tensor) and x.numel()]
    for o in outputs:
        if isinstance(o, torch.Tensor) and o.numel():
            a, b = storage_span(o)
            if any(a < d and c < b for c, d in spans):
                return True
    return False


def poison_free_memory(device: str, nbytes: int) -> None:
    """Fill memory the allocator will hand out next with NaN, so an output never written reads as NaN."""
    if nbytes <= 0:
        return
    # Exactly `nbytes`, so that an output of that size is handed this very block; all-ones bytes are NaN
    # in every float format (and -1 in int8).
    junk = torch.empty(nbytes, dtype=torch.uint8, device=device)
    junk.fill_(255)
    del junk


def scrub(tensors: Sequence[Any]) -> None:
    """Overwrite tensors about to be freed (answers, outputs) with all-ones bytes: a block the allocator
    hands out later never holds a real answer."""
    for t in tensors:
        if not isinstance(t, torch.Tensor) or not t.numel():
            continue
        try:
            if t.is_contiguous():
                t.view(torch.uint8).fill_(255)
            else:
                t.fill_(float("nan") if t.is_floating_point() else -1)
        except (RuntimeError, TypeError):  # an odd output (read-only, exotic dtype): nothing to scrub there
            pass


def clone(inputs: Sequence[Any]) -> list[Any]:
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


@dataclass
class Snapshot:
    """What a candidate must leave as it found it: harness functions, flags, threads, files, stream."""

    files: set[str]
    identity: dict[str, int]
    flags: dict[str, Any]
    py_threads: int
    os_threads: int
    stream: Any

    @classmethod
    def take(cls, workdir: Path, device: str) -> Snapshot:
        return cls({p.name for p in workdir.iterdir()}, harness_identity(), precision_flags(),
                   threading.active_count(), native_threads(),
                   torch.cuda.current_stream() if device.startswith("cuda") else None)


CORRECTNESS_CHECKS = ("dynamic:stale_memory", "dynamic:hidden_shapes", "dynamic:precision", "dynamic:full_coverage",
                      "dynamic:output_type")


def classify_mismatch(reason: str, hidden: bool) -> str:
    """Which dynamic check a wrong output fails, from `compare_outputs`'s reason (first match wins)."""
    if any(k in reason for k in ("shape", "dtype", "tensor subclass", "not a torch.Tensor", "outputs, the", " is on ")):
        return "dynamic:output_type"
    if hidden:
        return "dynamic:hidden_shapes"  # the visible workloads, checked first, all passed
    n, total = _mismatch_counts(reason)
    if total and n / total < 0.05:
        return "dynamic:full_coverage"  # a few elements wrong or unwritten: part of the output skipped
    if "NaN/inf" in reason:
        return "dynamic:stale_memory"  # outputs are poisoned with NaN before each call: unwritten memory shows
    return "dynamic:precision"


def _mismatch_counts(reason: str) -> tuple[int, int]:
    m = re.search(r"(?:differs at|has) (\d+) of (\d+) (?:elements|values)", reason)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
