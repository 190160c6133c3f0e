"""Managed model servers: `vllm serve` (or any OpenAI-compatible server command) as a child process.

`ManagedServer` starts the command in its own session, waits until `GET {url}/health` answers 200,
and stops the whole process group on `stop()` (or when used as a context manager). A server that
exits before it is healthy raises `EvoError` with the tail of its log, so the user sees why.

`ManagedLLM` is what `evo run --llm vllm:PATH` uses: an `LLMClient` over a server that evo runs
for the run's lifetime, started on the first call and restarted if it dies. `vllm_command` builds
the `vllm serve` command line after checking that vllm and enough GPUs are there.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import numpy as np

from evo.errors import EvoError
from evo.llm.client import Completion, Endpoint, LLMClient, LLMUnavailable, LoopLock

log = logging.getLogger(__name__)

VLLM_EXTRA = "pip install 'evo[vllm]'"


class ManagedServer:
    """A server command run as a child process for the lifetime of a `with` block (or until `stop`).

    Its output goes to `log_path` (appended to, so a restarted server keeps the earlier log; a
    temporary file when not given). `env` replaces the child's environment when given.
    """

    def __init__(self, argv: list[str], url: str, health_path: str = "/health", start_timeout_s: float = 600.0,
                 log_path: Path | None = None, env: Mapping[str, str] | None = None):
        self.argv = argv
        self.url = url.rstrip("/")
        self.health_path = health_path
        self.start_timeout_s = start_timeout_s
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="evo-server-", suffix=".log")[1])
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def healthy(self) -> bool:
        try:
            # trust_env=False: a proxy from the environment must not stand between us and loopback.
            with httpx2.Client(trust_env=False, timeout=2.0) as http:
                return http.get(self.url + self.health_path).status_code == 200
        except httpx2.HTTPError:
            return False

    @property
    def running(self) -> bool:
        """Whether the child process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ManagedServer:
        """Start the command and wait until it is healthy; EvoError if it dies or takes too long."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"\n=== evo: starting {' '.join(self.argv)} at {time.ctime()} ===\n".encode())
            log_file.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=self.env)
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of `host` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _vllm_argv(what: str) -> list[str]:
    """How to run vllm's CLI here; EvoError naming the extra when vllm is not installed."""
    exe = shutil.which("vllm")
    if exe is not None:
        return [exe]
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise EvoError(f"{what} needs the vllm package, which is not installed. Install it with "
                       f"`{VLLM_EXTRA}` (CUDA only), or point evo at a running OpenAI-compatible "
                       "server with --llm http://HOST:PORT") from None
    return [sys.executable, "-m", "vllm.entrypoints.cli.main"]


def check_gpus(needed: int, what: str) -> None:
    """EvoError unless `needed` CUDA GPUs are visible to this process."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable torch.cuda
        gpus = 0
    if gpus < needed:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise EvoError(f"{what} needs {needed} CUDA GPU(s); {gpus} visible here{hint}. On a machine without a "
                       "GPU, use --llm transformers:PATH (CPU) or a server elsewhere: --llm http://HOST:PORT")


def check_vllm_and_gpus(needed: int, what: str) -> None:
    """EvoError unless vllm is installed and `needed` GPUs are visible."""
    _vllm_argv(what)
    check_gpus(needed, what)


def tensor_parallel_of(args: Sequence[str]) -> int:
    """The `--tensor-parallel-size`/`-tp` value among `vllm serve` arguments (1 when absent)."""
    args = list(args)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in ("--tensor-parallel-size", "-tp"):
            raw = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            try:
                return max(1, int(raw))
            except ValueError:
                raise EvoError(f"{name} needs a whole number of GPUs, got {raw!r}") from None
    return 1


def vllm_command(model: str, port: int, tensor_parallel: int = 1, extra: Sequence[str] | None = None,
                 host: str | None = None, what: str = "`evo llm serve`") -> list[str]:
    """The `vllm serve` command line, after checking that vllm and the GPUs are there (clear errors if not).

    `extra` are more `vllm serve` arguments; a `--tensor-parallel-size` among them wins over
    `tensor_parallel`. `host` None serves on every interface (vllm's default).
    """
    extra = list(extra or [])
    if any(a.partition("=")[0] in ("--tensor-parallel-size", "-tp") for a in extra):
        tensor_parallel = tensor_parallel_of(extra)
    else:
        extra = ["--tensor-parallel-size", str(tensor_parallel), *extra]
    exe_argv = _vllm_argv(what)
    check_gpus(tensor_parallel, f"{what} with tensor parallelism {tensor_parallel}" if tensor_parallel > 1 else what)
    return [*exe_argv, "serve", model, "--port", str(port), *(["--host", host] if host else []), *extra]


class ManagedLLM:
    """An `LLMClient` over a model server that evo runs as its child (`--llm vllm:PATH`).

    The server starts on the first `chat`, in a worker thread, so the seeds are evaluated while
    the model loads; concurrent calls wait for it. `aclose` stops it: the engine closes its LLM
    when a run ends, normally, by an error or by Ctrl-C (and an `atexit` hook stops it when the
    interpreter exits). A server that exits during the run is restarted on the same port, up to
    `max_restarts` times, with a warning and the end of its log; past that, or when it dies while
    starting, `chat` raises `EvoError` with its log. While it is down or restarting, calls wait
    (the client's outage pause): no proposal fails for it. `client_kwargs` go to `LLMClient`.
    """

    def __init__(self, argv: list[str], port: int, *, label: str, model: str | None = None,
                 log_path: Path | None = None, start_timeout_s: float = 1800.0, max_restarts: int = 3,
                 health_path: str = "/health", env: Mapping[str, str] | None = None, **client_kwargs: Any):
        self.url = f"http://127.0.0.1:{port}"
        self.label = label
        self.server = ManagedServer(argv, self.url, health_path, start_timeout_s, log_path, env)
        self.client = LLMClient([Endpoint(self.url, model)], **client_kwargs)
        self.max_restarts = max_restarts
        self.restarts = 0
        self._lock = LoopLock()
        self._up = False  # started by us and not stopped by us: an exit now is a crash
        self._atexit = False

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.client.endpoints

    async def __aenter__(self) -> ManagedLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ensure_running(self) -> None:
        """Start the server if it is not up (restart it, counted, if it crashed)."""
        if self._up and self.server.running:
            return
        async with self._lock.get():
            if self._up and self.server.running:
                return
            if self._up:  # it was up and has exited since: a crash
                code = self.server.proc.returncode if self.server.proc is not None else None
                tail = self.server.log_tail(1500)
                if self.restarts >= self.max_restarts:
                    self._up = False
                    raise EvoError(
                        f"the model server ({self.label}) exited with code {code} during the run, "
                        f"{self.restarts + 1} times: evo gives up. `evo resume` continues the run once it is "
                        f"mended. Its log ({self.server.log_path}) ends:\n{tail}")
                self.restarts += 1
                log.warning("the model server (%s) exited with code %s during the run; restarting it (%d of %d). "
                            "LLM proposals wait for it. Its log (%s) ends:\n%s", self.label, code, self.restarts,
                            self.max_restarts, self.server.log_path, tail)
            else:
                log.info("starting the model server (%s) on %s; its log: %s. LLM proposals wait until "
                            "it is ready.", self.label, self.url, self.server.log_path)
            self._up = False
            if not self._atexit:
                atexit.register(self.server.stop)
                self._atexit = True
            start = time.monotonic()
            await asyncio.to_thread(self.server.start)  # EvoError with its log if it dies or hangs
            self._up = True
            log.info("the model server (%s) is ready after %.0f s.", self.label, time.monotonic() - start)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        rng: np.random.Generator | None = None,
    ) -> Completion:
        """`LLMClient.chat` once the server is up; a server that died meanwhile is restarted first."""
        await self.ensure_running()
        try:
            return await self.client.chat(messages, n=n, max_tokens=max_tokens, temperature=temperature, rng=rng)
        except LLMUnavailable:
            if not (self._up and not self.server.running):
                raise  # up but not answering (overloaded, hung): the engine pauses and retries
        await self.ensure_running()  # it died during the call: restart it, then try once more
        return await self.client.chat(messages, n=n, max_tokens=max_tokens, temperature=temperature, rng=rng)

    async def aclose(self) -> None:
        """Stop the server (its whole process group) and close the connections; a later `chat`
        starts it again."""
        self._up = False
        await self.client.aclose()
        await asyncio.to_thread(self.server.stop)


def managed_vllm(model: str, *, serve_args: Sequence[str] = (), port: int | None = None,
                 log_path: Path | None = None, **kwargs: Any) -> ManagedLLM:
    """A `ManagedLLM` running `vllm serve MODEL` on a free loopback port (`--llm vllm:MODEL`).

    Checks at once that vllm is installed and that the GPUs are there (`--tensor-parallel-size`
    among `serve_args` says how many); nothing starts before the first call.
    """
    port = free_port() if port is None else port
    argv = vllm_command(model, port, tensor_parallel_of(serve_args), serve_args, host="127.0.0.1",
                        what=f"--llm vllm:{model}")
    kwargs.setdefault("concurrency", 32)  # one local vLLM batches many requests well
    return ManagedLLM(argv, port, label=f"vllm serve {model}", log_path=log_path, **kwargs)
