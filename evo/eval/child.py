"""Entry point of the sandboxed child: import the candidate, run it, save its raw outputs.

Run as `python -P -m evo.eval.child TASK_ROOT` inside the candidate's working directory (which holds
`candidate.py`). It decides nothing: the candidate was screened on the trusted side before this process
started, and its outputs (`outputs.npz`) are validated and scored there afterwards, then audited in full
(`evo/eval/pipeline.py`); nothing this process writes is taken at face value. `-P` keeps the working
directory off `sys.path` until the task's reference is loaded, so a candidate's folder cannot stand in for
the modules this file imports.

The sandbox has restricted this process before it started (`evo/eval/sandbox.py`: a read-only mount view
and Landlock, `evo/eval/fs_guard.py`): it may write only in its working directory and private tmpfs. A
candidate that tries to write elsewhere (a `.pth` into site-packages, a cache under /tmp) fails here with a
reason that starts with `dynamic:fs_guard:` (the local backend reports it as that dynamic check).

What the candidate prints goes to this process's stdout and stderr as usual (the sandbox keeps their
tails) and, in the order it was printed, to `output.log` in the working directory, so that `evo eval` can
show the user more of it than those tails. The local backend reads back a bounded tail of that file; it is
shown to people and never believed.

Exit status: 0 with `outputs.npz` written; anything else is a failure of the candidate (the message of a
`SystemExit` or the traceback is on stderr, and in `output.log`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from evo.program import MAIN_FILE
from evo.task import load_module

OUTPUTS = "outputs.npz"
OUTPUT_LOG = "output.log"  # what the candidate printed, stdout and stderr in the order written
FS_GUARD = "dynamic:fs_guard"  # the prefix of the message of a write the sandbox refused


class _Tee:
    """A text stream that writes to the stream it replaces and to the shared output log.

    Everything else (fileno, buffer, encoding, isatty) is the replaced stream's, so a candidate sees an
    ordinary sys.stdout. The log stops at its first failed write (the sandbox's file-size limit): the
    replaced stream, whose tail the sandbox keeps, goes on alone."""

    def __init__(self, stream: TextIO, log: list[TextIO]):
        self._stream = stream
        self._log = log  # one list shared by both tees: emptied when the log fails

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if self._log:
            try:
                self._log[0].write(text)
            except (OSError, ValueError):
                self._log.clear()
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()
        if self._log:
            try:
                self._log[0].flush()
            except (OSError, ValueError):
                self._log.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _capture_output(workdir: Path) -> None:
    """Copy what is printed through sys.stdout and sys.stderr into OUTPUT_LOG (line-buffered, so that a
    candidate killed at its deadline leaves what it printed up to then)."""
    try:
        log = open(workdir / OUTPUT_LOG, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError:
        return  # no log: the sandbox's tails of stdout and stderr are all there is
    shared: list[TextIO] = [log]
    sys.stdout = _Tee(sys.stdout, shared)  # type: ignore[assignment]
    sys.stderr = _Tee(sys.stderr, shared)  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    task_root = Path(argv[1])
    workdir = Path.cwd()
    _capture_output(workdir)
    reference = load_module(task_root / "reference.py", "evo_reference")  # before the candidate's folder
    sys.path.insert(0, str(workdir))  # is on sys.path: the candidate's own modules import from it
    try:
        candidate = load_module(workdir / MAIN_FILE, "candidate")
        outputs = reference.run_candidate(candidate)
    except PermissionError as e:  # EACCES/EPERM: the filesystem guard refused a write (or a signal)
        raise SystemExit(f"{FS_GUARD}: refused by the sandbox (a candidate may write only in its "
                         f"working directory): {e}") from e
    if not isinstance(outputs, dict):
        raise TypeError(f"run_candidate returned {type(outputs).__name__}, expected dict")
    np.savez(workdir / OUTPUTS, **{str(k): np.asarray(v) for k, v in outputs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
