"""GPU health: a known-good computation, in a fresh process, that a GPU must get right and finish in time.

    health = probe("cuda:0")        # Health(ok=True, reason="64x64 matmul ... in 0.41 s", ...)

The Ray backend's GPU actors (`ray_actor.py`) probe their GPU before they take jobs, and again after a job
failed the way a sick GPU makes jobs fail (a CUDA error, a crashed worker, a timeout, the harness itself
raising): a GPU whose probe errors, times out or computes a wrong product is drained (no new jobs; what it
was running is sent elsewhere) and reported by `evo cluster status`. The probe runs only evo's code (this
module as `python -m evo.eval.backends.gpu_health DEVICE`), never a candidate's: its answer is believed.
A fresh process each time, so a GPU that a crashed candidate's context poisoned is seen as the next job
would see it, and a hung driver call costs the probe, not the actor.

Without CUDA ("cpu": a custom resource stands in for a GPU in the tests) the same matmul runs on the CPU.

`EVO_GPU_FAULT_FILE` names a file whose first word makes the probe fail on purpose, as a failing GPU does:
`error` (a CUDA error), `hang` (never finishes), `wrong` (a wrong product); absent or empty, no fault. Set
in a node's environment before `ray start` (its workers inherit it), it drills the drain on healthy GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evo.checkout_env import checkout_env

FAULT_ENV = "EVO_GPU_FAULT_FILE"
PROBE_TIMEOUT_S = 120.0  # python, torch and a CUDA context, on a busy node: far more than a healthy GPU needs
SIZE = 64
# What a sick GPU (or its driver) writes into the error of the job it broke; a candidate's own bug rarely
# does, and when it does a probe that passes keeps the blame on the candidate.
CUDA_WORDS = ("cuda error", "cudaerror", "cuda_error", "illegal memory access", "device-side assert",
              "uncorrectable ecc", "gpu is lost", "xid", "cublas_status", "cudnn_status", "nvml")
SUSPICIOUS_FAILURES = ("crashed", "timeout")  # the worker died or hung: the GPU may have


@dataclass
class Health:
    """One probe's outcome: `ok`, why (or what it measured), how long it took, and when (epoch seconds)."""

    ok: bool
    reason: str
    seconds: float = 0.0
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def suspicious(failure: str | None, error: str | None) -> bool:
    """Whether a failed job's kind or error is one a sick GPU causes (then the GPU is probed again)."""
    text = (error or "").lower()
    return failure in SUSPICIOUS_FAILURES or any(word in text for word in CUDA_WORDS)


def probe(device: str, timeout_s: float = PROBE_TIMEOUT_S) -> Health:
    """Run the probe on `device` ("cuda:0", "cpu") in a fresh process; its `Health`."""
    start = time.monotonic()
    env = checkout_env(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    try:
        done = subprocess.run([sys.executable, "-m", "evo.eval.backends.gpu_health", device], env=env,
                              capture_output=True, text=True, timeout=timeout_s, start_new_session=True)
    except subprocess.TimeoutExpired:
        return Health(False, f"the health probe on {device} did not finish in {timeout_s:g} s",
                      time.monotonic() - start)
    seconds = time.monotonic() - start
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if done.returncode == 0 and answer.get("ok"):
        return Health(True, str(answer.get("detail", "ok")), seconds)
    why = str(answer.get("detail") or "") or _last_line(done.stderr) or f"exit code {done.returncode}"
    return Health(False, f"the health probe on {device} failed: {why}"[:500], seconds)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _fault() -> str:
    path = os.environ.get(FAULT_ENV)
    if not path:
        return ""
    try:
        words = Path(path).read_text().split()
    except OSError:
        return ""
    return words[0].lower() if words else ""


def _main(device: str) -> int:
    """The probe itself: a seeded matmul on `device`, checked against float64 on the CPU."""
    fault = _fault()
    if fault == "error":
        raise RuntimeError(f"CUDA error: unspecified launch failure (a fault drilled by {FAULT_ENV})")
    if fault == "hang":
        while True:
            time.sleep(3600)
    start = time.perf_counter()
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(SIZE, SIZE, generator=gen) for _ in range(2))
    expected = a.double() @ b.double()
    product = (a.to(device) @ b.to(device)).double().cpu()  # .cpu() waits for the GPU: errors surface here
    if fault == "wrong":
        product[0, 0] += 1.0
    error = float((product - expected).abs().max())
    # float32 with TF32 on Ampere and later: about 1e-3 relative at this size; a sick GPU is off by far more
    bound = 1e-2 * float(expected.abs().max())
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    if not error <= bound:
        print(json.dumps({"ok": False, "detail": f"a wrong {SIZE}x{SIZE} matmul on {name}: off by {error:.3g} "
                                                 f"(bound {bound:.3g})"}))
        return 1
    print(json.dumps({"ok": True, "detail": f"{SIZE}x{SIZE} matmul right on {name} in "
                                            f"{time.perf_counter() - start:.2f} s"}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
