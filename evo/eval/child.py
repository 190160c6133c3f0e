"""Entry point of the sandboxed child: import the candidate, run it, save its raw outputs.

Run as `python -m evo.eval.child TASK_ROOT` inside the candidate's working directory (which
holds `candidate.py`). Nothing here is trusted: the outputs it writes to `outputs.npz` are
validated and scored by the engine side (`Task.score_outputs`), never taken at face value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evo.program import MAIN_FILE
from evo.task import load_module

OUTPUTS = "outputs.npz"


def main(argv: list[str]) -> int:
    task_root = Path(argv[1])
    workdir = Path.cwd()
    sys.path.insert(0, str(workdir))
    reference = load_module(task_root / "reference.py", "evo_reference")
    candidate = load_module(workdir / MAIN_FILE, "candidate")
    outputs = reference.run_candidate(candidate)
    if not isinstance(outputs, dict):
        raise TypeError(f"run_candidate returned {type(outputs).__name__}, expected dict")
    np.savez(workdir / OUTPUTS, **{str(k): np.asarray(v) for k, v in outputs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
