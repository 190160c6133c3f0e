"""Entry point of the sandboxed child: audit the candidate, import it, run it, save its raw outputs.

Run as `python -P -m evo.eval.child TASK_ROOT [--no-screen]` inside the candidate's working directory
(which holds `candidate.py`). The outputs it writes to `outputs.npz` are not trusted: they are validated
and scored by the engine side (`Task.score_outputs`), never taken at face value.

The auditor runs here first, before a line of the candidate's code and before its folder is on
`sys.path` (`-P` keeps the working directory off it at start, so a candidate's `evo/` cannot stand in
for the auditor). A CPU task's full audit has nothing to fold in beyond the static checks (and the task's
own), so this one audit is both the screen and the full audit of the candidate. It costs a few
milliseconds in this process, in parallel with other evaluations, not in the engine's loop. On a fail
the verdict goes to `verdict.json` and the child exits with `SCREEN_FAILED` without importing the
candidate. That file is trusted only together with that exit status; a candidate that runs can write
both, but only to fail itself.

The sandbox has restricted this process before it started (`evo/eval/sandbox.py`: a read-only mount view
and Landlock, `evo/eval/fs_guard.py`): it may write only in its working directory and private tmpfs. A
candidate that tries to write elsewhere (a `.pth` into site-packages, a cache under /tmp) fails here with a
reason that names the guard.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evo.audit import Level, audit
from evo.program import MAIN_FILE
from evo.task import load_module, load_task

OUTPUTS = "outputs.npz"
VERDICT = "verdict.json"
SCREEN_FAILED = 3  # exit status: the auditor refused the candidate, which never ran


def candidate_files(workdir: Path) -> dict[str, str]:
    """The candidate's files as the engine wrote them (nothing else is in its folder yet)."""
    return {p.relative_to(workdir).as_posix(): p.read_text(errors="replace")
            for p in sorted(workdir.rglob("*")) if p.is_file()}


def main(argv: list[str]) -> int:
    task_root = Path(argv[1])
    workdir = Path.cwd()
    if "--no-screen" not in argv[2:]:
        verdict = audit(candidate_files(workdir), Level.FULL, load_task(str(task_root)))
        if not verdict.passed:
            (workdir / VERDICT).write_text(verdict.to_json())
            return SCREEN_FAILED
    sys.path.insert(0, str(workdir))
    reference = load_module(task_root / "reference.py", "evo_reference")
    try:
        candidate = load_module(workdir / MAIN_FILE, "candidate")
        outputs = reference.run_candidate(candidate)
    except PermissionError as e:  # EACCES/EPERM: the filesystem guard refused a write (or a signal)
        raise SystemExit(f"dynamic:fs_guard: refused by the sandbox (a candidate may write only in its "
                         f"working directory): {e}") from e
    if not isinstance(outputs, dict):
        raise TypeError(f"run_candidate returned {type(outputs).__name__}, expected dict")
    np.savez(workdir / OUTPUTS, **{str(k): np.asarray(v) for k, v in outputs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
