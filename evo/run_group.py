"""Several `evo` processes side by side, as the benchmark scripts start them: each with this checkout's
environment and its own log, stopped cleanly at a wall limit or when the script is told to stop.

Cut from outside (a device call's `timeout`, Ctrl-C), a script used to die before its table while its runs
went on alone: the measured evaluations were in the stores but no figure was written (BENCHMARKS.md, session
9). `RunGroup.wait` turns SIGTERM into the same clean stop as Ctrl-C: every run gets SIGINT (an evo run then
records the evaluations in hand and stops, resumable), and one that is still up after the grace is killed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from evo.checkout_env import checkout_env


class RunGroup:
    """`evo` subprocesses started together, waited for together and stopped together."""

    def __init__(self, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.env = env if env is not None else checkout_env()
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.interrupted = False  # stopped at the wall limit or on a signal, not ended on its own

    def start(self, name: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        """`python -m evo ARGS` as `name`, its output into `log`."""
        with open(log, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "evo", *args], stdout=f, stderr=subprocess.STDOUT,
                                    cwd=self.cwd, env=self.env)
        self.procs[name] = proc
        return proc

    def wait(self, wall_limit_s: float | None = None, grace_s: float = 30.0) -> dict[str, int]:
        """Until every process has exited, or `wall_limit_s` has passed, or this process got SIGINT/SIGTERM;
        then stop what is still running. Returns each process's exit code."""
        started = time.monotonic()
        try:
            with _sigterm_as_interrupt():
                while any(p.poll() is None for p in self.procs.values()):
                    if wall_limit_s is not None and time.monotonic() - started >= wall_limit_s:
                        self.interrupted = True
                        break
                    time.sleep(0.5)
        except KeyboardInterrupt:
            self.interrupted = True
            print(f"stopping {sum(p.poll() is None for p in self.procs.values())} runs cleanly "
                  f"(up to {grace_s:.0f} s) to write what they measured", file=sys.stderr, flush=True)
        self.stop(grace_s)
        return {name: int(p.returncode) for name, p in self.procs.items()}

    def stop(self, grace_s: float) -> None:
        """SIGINT (a clean stop: evaluations in flight are recorded), then SIGKILL after `grace_s`."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def failed(self) -> dict[str, int]:
        """Runs that exited with an error (a clean stop on SIGINT is not one)."""
        return {name: p.returncode for name, p in self.procs.items()
                if p.returncode not in (0, 130, -signal.SIGINT, None)}


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
