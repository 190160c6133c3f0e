"""A managed model server: `vllm serve` (or any OpenAI-compatible server command) as a child process.

`ManagedServer` starts the command in its own session, waits until `GET {url}/health` answers 200,
and stops the whole process group on `stop()` (or when used as a context manager). A server that
exits before it is healthy raises `EvoError` with the tail of its log, so the user sees why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from evo.errors import EvoError


class ManagedServer:
    """A server command run as a child process for the lifetime of a `with` block (or until `stop`)."""

    def __init__(self, argv: list[str], url: str, health_path: str = "/health", start_timeout_s: float = 600.0,
                 log_path: Path | None = None):
        self.argv = argv
        self.url = url.rstrip("/")
        self.health_path = health_path
        self.start_timeout_s = start_timeout_s
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="evo-server-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def healthy(self) -> bool:
        try:
            return httpx2.get(self.url + self.health_path, timeout=2.0).status_code == 200
        except httpx2.HTTPError:
            return False

    def start(self) -> ManagedServer:
        """Start the command and wait until it is healthy; EvoError if it dies or takes too long."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EvoError(f"the model server exited with code {self.proc.returncode} before it was ready "
                               f"({' '.join(self.argv[:3])} ...). Its log ({self.log_path}) ends:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise EvoError(f"the model server did not answer {self.url}{self.health_path} within {self.start_timeout_s:.0f} s;"
                       f" its log ({self.log_path}) ends:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def vllm_command(model: str, port: int, tensor_parallel: int = 1, extra: list[str] | None = None) -> list[str]:
    """The `vllm serve` command line, after checking that vllm and a GPU are there (clear errors if not)."""
    exe = shutil.which("vllm")
    if exe is None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise EvoError("`evo llm serve` needs the vllm package, which is not installed. Install it with "
                           "`pip install 'evo[vllm]'` (CUDA only), or point evo at a running OpenAI-compatible "
                           "server with --llm http://HOST:PORT") from None
        exe_argv = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    else:
        exe_argv = [exe]
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable torch.cuda
        gpus = 0
    if gpus < tensor_parallel:
        raise EvoError(f"`evo llm serve` with --tensor-parallel {tensor_parallel} needs {tensor_parallel} CUDA GPU(s); "
                       f"{gpus} visible here")
    return [*exe_argv, "serve", model, "--port", str(port), "--tensor-parallel-size", str(tensor_parallel),
            *(extra or [])]
