"""The second half of every static reason, in the words of the task's family.

The rules (`evo.audit.rules`) are shared by every family, but why a rule matters is not: a kernel is timed
over many calls, so a clock read is a warm-up detector; a math candidate runs once in a fresh process and
is scored on what it returns, so a clock read cannot change its score and is refused only because the
task did not allow it. A reason that speaks of timers and kernels to the author of a circle packing
teaches nothing. `why(check, family, names)` picks the family's sentence (the kernel one, `WHY`, where the
family has none of its own) and, where the family can reasonably allow what was found, says how:
`[audit] allow = [...]` in the task's `task.toml` (the README's "Allowing a check" says what each name
costs in trust).

Stdlib only: a GPU worker imports the auditor.
"""

from __future__ import annotations

from collections.abc import Iterable

from evo.audit.rules import WHY

_CPU_ONLY = ("A math candidate runs on the CPU and is scored on what it returns; {what} has no place in it. "
             "Remove it.")

# -- math: one sandboxed CPU process per evaluation, scored on its outputs by the task's trusted evaluate ----
MATH: dict[str, str] = {
    "threads": "A math task collects what your program returns and ends its process: work left in another "
               "thread is cut off or changes the answer after it was handed over, and the audit cannot follow "
               "it. Compute on the calling thread.",
    "processes": "A child process runs code the audit never read, with the sandbox's limits as its only "
                 "bound. Do the work in this process.",
    "network": "The evaluation sandbox is offline, and a connection could fetch a published solution instead "
               "of computing one. Compute everything locally.",
    "ctypes": "Foreign calls and raw pointers reach past Python: they can read or change the memory of the "
              "task's code that collects your answer. Use Python and numpy.",
    "gc": "The garbage collector hands out every live object in the process, the task's own code and data "
          "included. A math candidate computes its answer itself and has no use for it.",
    "inspect": "Introspection reads the task's code and the frames that call yours. A math candidate "
               "computes its answer itself and has no use for it.",
    "frame_walking": "Walking the call stack reads the local variables of the task's code that calls yours. "
                     "Use only what your program is given.",
    "import_tricks": "Changing how modules are found, loaded or built in lets a candidate replace numpy or "
                     "the task's own code; reaching a module through another module's attributes (`os.sys`, "
                     "`np.os`) or through `sys.modules` uses what the screen refuses by name without naming "
                     "it. Import modules with plain import statements.",
    "monkeypatching": "Replacing a function or attribute of an imported module (numpy, math, the task's code) "
                      "changes what the task's code computes with your answer. Leave library objects as they "
                      "are; define your own helpers.",
    "precision_flags": "Global numeric settings of torch (default dtype, TF32, autocast) change how every "
                       "later computation in the process rounds. Choose the dtype of your own arrays instead.",
    "l2_persistence": _CPU_ONLY.format(what="a GPU cache policy"),
    "native_code": "Native code (compiled at evaluation time or loaded from a library) escapes the audit: its "
                   "source is not Python and it runs with full access to the process. Write the program in "
                   "Python (numpy is fine).",
    "side_streams": _CPU_ONLY.format(what="a CUDA stream or device switch"),
    "cuda_graphs": _CPU_ONLY.format(what="a CUDA graph"),
    "tensor_subclass": "The task's evaluate reads your outputs as plain arrays: a subclass or a swapped "
                       "__class__ can defer or fake values until they are read. Return plain numpy arrays or "
                       "lists.",
    "dispatch_override": "Intercepting torch's dispatcher changes what torch computes for every caller, the "
                         "task's own code included. Call libraries as they are.",
    "reference": "The score is for your program: importing or reading the task's reference.py (its evaluate, "
                 "its best-known values) or evo itself gives you the task's code instead of yours. Compute "
                 "the answer yourself.",
    "module_state": "State kept at module level (caches, counters, globals, closures, mutable defaults) is "
                    "refused by default because a program called more than once could hand back stale "
                    "answers; a math task runs your program once, in a fresh process, where it cannot. Keep "
                    "the state inside functions, unless the task allows it.",
    "environment": "The sandbox gives your program a fixed environment, and numpy and its BLAS read theirs "
                   "from it (thread counts); changing it changes how the task's code runs. Leave os.environ "
                   "alone.",
    "sleep_and_clock": "A math task is scored on what your program returns, not on time, so a clock read "
                       "cannot change the score here; evo refuses sleeps and clock reads by default because "
                       "timed tasks (kernels, training) are fooled by them (warm-up detectors, busy-waits). "
                       "Remove the clock reads (count iterations instead), unless the task allows them (a "
                       "search that stops after a few seconds needs the clock).",
    "signals": "Handlers that run later (signals, atexit, audit hooks, finalizers, __del__) do work after "
               "your answer was handed over, where the audit does not follow. Do all the work before you "
               "return.",
    "file_writes": "Each evaluation starts in a fresh working directory; a file written elsewhere (a .pth, a "
                   "module named like numpy, a cache under /tmp) can carry answers to later evaluations or "
                   "change the environment. Return results; write no files.",
    "file_reads": "A math candidate has nothing to read on disk: listing directories, reading outside the "
                  "working directory or next to __file__ is how the task's reference, its best-known values "
                  "or other candidates' files are found. Compute from what your program is given.",
}

# -- training: fixed-budget language-model training on a GPU, scored by time to a target loss --------------
TRAINING: dict[str, str] = {
    "threads": "Training is scored by the time it takes to reach the target loss: work in another thread can "
               "run outside the measured time or change the model after it was evaluated. Train on the "
               "calling thread (torch's own intra-op threads are fine).",
    "processes": "A child process trains or computes outside the harness's accounting of time and memory, and "
                 "runs code the audit never read. Train in this process.",
    "network": "The training machine is offline, and a connection could fetch pretrained weights, the "
               "validation data or its answers. Train from the data you are given.",
    "ctypes": "Foreign calls and raw pointers reach past torch: they can read the harness's validation data, "
              "call the CUDA driver or patch the harness. Use torch (and Triton).",
    "gc": "The garbage collector lists every live object, the harness's validation batches and loss "
          "function included. A training program has no use for it.",
    "inspect": "Introspection reads the harness's frames and source (its validation data, its target). A "
               "training program has no use for it.",
    "frame_walking": "Walking the call stack reads the harness's local variables (validation batches, the "
                     "target loss, its clock). Use only what your training function receives.",
    "monkeypatching": "Replacing a function of an imported module (torch, its loss functions, time, the "
                      "harness) changes what the harness measures: a patched clock or loss is a fake score. "
                      "Leave library objects as they are; define your own helpers.",
    "precision_flags": "Global numeric settings (TF32, reduced-precision reductions, autocast, default dtype) "
                       "change the numerics of the harness's evaluation too, not only your training; the task "
                       "fixes them. Cast your own tensors and modules instead.",
    "l2_persistence": "A persisting-L2 window changes the cache behaviour of the harness's measurements as "
                      "well as yours. Leave the cache configuration alone.",
    "native_code": "Native code (compiled at evaluation time, loaded from a library, or driver calls) escapes "
                   "the audit, and compiling is paid from the training budget. Write the model in torch, or "
                   "kernels with @triton.jit; `torch.compile` is refused unless the task allows it.",
    "side_streams": "The harness times training on the current stream and device: work on another stream or "
                    "device escapes the measured time. Launch everything on the current stream.",
    "cuda_graphs": "A captured graph replays into the same buffers and skips the launch work that is part of "
                   "the training time. Run the steps directly.",
    "tensor_subclass": "The harness reads losses and logits as plain tensors: a subclass or a swapped "
                       "__class__ can defer or fake their values. Return plain tensors.",
    "dispatch_override": "Intercepting torch's dispatcher changes what torch computes for the harness too "
                         "(its loss and its causality probe). Call torch as it is.",
    "reference": "The score is for your training: importing or reading the task's reference or the harness "
                 "gives you their model, data or target instead. Write your own training.",
    "module_state": "State kept at module level between calls (caches of batches or outputs, counters, "
                    "globals) lets the program remember the validation data or behave differently once it "
                    "is measured. Keep state inside your model and optimiser.",
    "environment": "The harness, torch and CUDA read environment variables (CUDA_*, NCCL_*, TORCH_*, EVO_*); "
                   "changing them alters how the harness runs and measures. Leave os.environ alone.",
    "sleep_and_clock": "Training is scored by the time it takes to reach the target loss, measured by the "
                       "harness: a program that reads the clock can tell when it is measured and behave "
                       "differently, and a sleep moves work out of the measured time. Train for a number of "
                       "steps or tokens, not of seconds.",
    "signals": "Handlers that run later (signals, atexit, audit hooks, finalizers, __del__) train or compute "
               "outside the measured time. Do all the work in the training function.",
    "file_writes": "A file outlives the evaluation and can carry a trained model or cached batches from one "
                   "evaluation to the next (or change the environment: a .pth, a torch.py). Keep everything "
                   "in memory.",
    "file_reads": "Listing directories, reading outside the working directory or next to __file__ is how "
                  "checkpoints of earlier runs, the validation data or harness files are found. Train from "
                  "the data you are given.",
}

WHY_BY_FAMILY: dict[str, dict[str, str]] = {"kernels": {}, "math": MATH, "training": TRAINING}

# What a task of each family may reasonably allow, by check: the names (checks or capabilities) that the
# hint offers. A name that is missing here is still allowed by the gate if a task names it; the reason just
# does not suggest it, because for that family it opens a real hole (the README says what each one costs).
ALLOWABLE: dict[str, dict[str, frozenset[str]]] = {
    "kernels": {},
    "math": {
        "sleep_and_clock": frozenset({"sleep_and_clock"}),
        "module_state": frozenset({"module_state"}),
        "threads": frozenset({"threads", "asyncio"}),
        "file_writes": frozenset({"file_write"}),  # inside the fresh working directory only
    },
    "training": {
        "native_code": frozenset({"torch_compile"}),
        "precision_flags": frozenset({"precision_flags"}),
    },
}


def why(check: str, family: str | None, names: Iterable[str] = ()) -> str:
    """Why `check` is refused, in the words of `family`, and how the task can allow what was found.

    `names` are the capabilities of the findings (a capability equal to the check stands for the whole
    check). The hint is added only when the family can reasonably allow every one of them."""
    text = WHY_BY_FAMILY.get(family or "", {}).get(check) or WHY.get(check, "")
    allowable = ALLOWABLE.get(family or "", {}).get(check, frozenset())
    found = sorted(set(names))
    if found and allowable and set(found) <= allowable:
        listed = ", ".join(f'"{n}"' for n in found)
        text += (f" If this {family} task means its candidates to do this, its task.toml can allow it: "
                 f"`[audit] allow = [{listed}]` (the README's \"Allowing a check\" says what that costs).")
    return text
