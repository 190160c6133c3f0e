"""A proposal process: the non-LLM operators and the embedder, run beside the engine's loop.

The operators that need no model (constants, params, crossover) and the embedder are pure CPU
work, about two thirds of what the engine spends per candidate. `ProposalProcess` runs them in
one child process (`python -m evo.proposer`), so that they use another core while the engine's
loop samples, searches the novelty index, stores and admits. The engine sends a request (the
operator's name, the parents, a seed for the operator's RNG, whether to parse the children)
and receives the children with their embeddings or the operator's error.

The child runs only evo's own operators on program *texts*: no candidate code is executed
there, so it needs no sandbox. Messages are length-prefixed pickles over its stdin and stdout.
Requests are answered in the order they were sent. If the child dies, `ProposalProcess.propose`
raises `ProposalProcessDied` and the engine carries on with the operators in its own loop.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from evo.ast_parse import parse_source
from evo.errors import OperatorError
from evo.program import Program, source_text

_HEADER = struct.Struct("<Q")
_START_TIMEOUT_S = 60.0


class ProposalProcessDied(RuntimeError):
    """The proposal process exited or broke its protocol; its requests will not be answered."""


@dataclass
class Child:
    """One child made in the proposal process."""

    source: Any  # evo.program.Source
    parents: tuple[str, ...]
    operator: str
    meta: dict[str, Any]
    parse_error: tuple[int | None, str] | None  # (line, message) when the child does not parse
    vector: np.ndarray | None  # its embedding; None when it does not parse


@dataclass
class Outcome:
    """The answer to one request: children, or the operator's error."""

    children: list[Child]
    error: str | None = None
    error_meta: dict[str, Any] | None = None
    seconds: float = 0.0  # the operator's own time, as in the engine's `operator_call` events


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the non-LLM operators) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("an operator run in the proposal process awaited something; only non-LLM operators may run there")


# -- the child's side ------------------------------------------------------------------------
def _read_message(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None  # the engine closed our stdin: exit
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))


def _write_message(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's loop: build the operators and the embedder, then answer requests until EOF."""
    import time

    from evo.embed import make_embedder
    from evo.operators import OPERATORS, ProposalRequest

    setup = _read_message(stdin)
    if setup is None:
        return
    operators = {name: OPERATORS[name]() for name in setup["operators"]}
    embedder = make_embedder(setup["embedder"])
    _write_message(stdout, {"ready": os.getpid(), "dim": embedder.dim})
    answered = 0
    while True:
        request = _read_message(stdin)
        if request is None:
            print(f"proposal process: {answered} requests, {time.process_time():.2f} s CPU", file=sys.stderr)
            return
        answered += 1
        rid, name, parents, seed, parse = request
        op = operators[name]
        start = time.perf_counter()
        try:
            proposals = _run_sync(op.propose(ProposalRequest(parents=parents, rng=np.random.default_rng(seed))))
        except OperatorError as e:
            _write_message(stdout, (rid, Outcome([], str(e), dict(e.meta), time.perf_counter() - start)))
            continue
        seconds = time.perf_counter() - start
        children = []
        for prop in proposals:
            text = source_text(prop.source)
            error: tuple[int | None, str] | None = None
            if parse and not getattr(op, "checks_syntax", False):
                try:
                    parse_source(text)
                except SyntaxError as e:
                    error = (e.lineno, e.msg)
            vector = None if error else embedder.embed([text])[0]
            children.append(Child(prop.source, tuple(prop.parents), prop.operator, dict(prop.meta), error, vector))
        _write_message(stdout, (rid, Outcome(children, seconds=seconds)))


# -- the engine's side -----------------------------------------------------------------------
class ProposalProcess:
    """The engine's handle on one proposal process: `start`, then `propose` from any coroutine."""

    def __init__(self, operators: Sequence[str], embedder: str, log_path: Path | None = None):
        self.operators = list(operators)
        self.embedder = embedder
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        self._next_id = 0
        self._dead: str | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._dead is None

    async def start(self) -> None:
        """Start the child and wait until its operators and embedder are built."""
        stderr = open(self.log_path, "ab") if self.log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "evo.proposer", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=stderr)
        finally:
            if not isinstance(stderr, int):
                stderr.close()
        self._send({"operators": self.operators, "embedder": self.embedder})
        try:
            ready = await asyncio.wait_for(self._receive(), _START_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, pickle.UnpicklingError) as e:
            await self.close()
            raise ProposalProcessDied(f"the proposal process did not start: {e!r}; see {self.log_path}") from e
        if not isinstance(ready, dict) or "ready" not in ready:
            await self.close()
            raise ProposalProcessDied(f"the proposal process answered {ready!r} instead of its ready message")
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    def _send(self, message: Any) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._proc.stdin.write(_HEADER.pack(len(data)) + data)

    async def _receive(self) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        header = await self._proc.stdout.readexactly(_HEADER.size)
        return pickle.loads(await self._proc.stdout.readexactly(_HEADER.unpack(header)[0]))

    async def _read_loop(self) -> None:
        try:
            while True:
                rid, outcome = await self._receive()
                future = self._waiting.pop(rid, None)
                if future is not None and not future.done():
                    future.set_result(outcome)
        except asyncio.CancelledError:
            self._fail("the proposal process was closed")
            raise
        except Exception as e:  # noqa: BLE001 - any broken answer ends the protocol; the engine falls back
            self._fail(f"the proposal process stopped answering ({e!r}); see {self.log_path}")

    def _fail(self, reason: str) -> None:
        self._dead = reason
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ProposalProcessDied(reason))
        self._waiting.clear()

    async def propose(self, operator: str, parents: list[Program], seed: int, parse: bool) -> Outcome:
        """Make children with `operator` in the proposal process; raises ProposalProcessDied."""
        if not self.alive:
            raise ProposalProcessDied(self._dead or "the proposal process is not running")
        rid = self._next_id
        self._next_id += 1
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            self._send((rid, operator, parents, seed, parse))
        except (BrokenPipeError, ConnectionResetError) as e:
            self._waiting.pop(rid, None)
            self._fail(f"the proposal process is gone ({e!r}); see {self.log_path}")
            raise ProposalProcessDied(self._dead or "") from e
        return await future

    async def close(self) -> None:
        """Stop the child (EOF on its stdin, then a kill if it lingers)."""
        proc, self._proc = self._proc, None
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing: nothing to report
                pass
            self._reader = None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    # The protocol owns the real stdout; anything a library prints goes to the log instead.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Through the imported module, so that pickled `Child`s name `evo.proposer`, not `__main__`.
    from evo import proposer

    proposer.serve(sys.stdin.buffer, protocol_out)
