"""A model server that goes away during a run: the run pauses its LLM proposals and comes back.

Everything here is real: `transformers serve` over the tiny model, killed with SIGKILL in the
middle of an `Engine` run and started again on the same port; and, for `--llm vllm:PATH`, evo's
own managed server (`ManagedLLM`) running the same `transformers serve` command in place of
`vllm serve` (no vllm and no GPU here), crashed and restarted by evo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from llm_fixtures import free_port, serve_command, server_env, start_server, stop_server

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError
from evo.llm.client import LLMClient
from evo.llm.serve import ManagedLLM

TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")
MESSAGES = [{"role": "user", "content": "def f(x):\n    return x * 2\n"}]


async def _until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow  # tens of seconds on 2 cores: `make test-slow` (make test stays within CI's 20 minutes)
def test_run_pauses_while_the_server_is_down_and_resumes_when_it_is_back(
    llm_server: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, model_dir = llm_server
    port = free_port()
    url, process = start_server(model_dir, port=port)
    config = RunConfig.from_dict(dict(
        task=TOY, budget=100_000, workers=2, seed=1, llm=url, llm_max_tokens=8, proposal_concurrency=2,
        operator_selection="weights", operators={"constants": 1.0, "llm_diff": 3.0}))
    engine = Engine.create(tmp_path / "run", config)
    client = engine.llm_client
    assert isinstance(client, LLMClient)
    seen: dict[str, int] = {}

    async def scenario() -> None:
        nonlocal process
        run = asyncio.create_task(engine.run_async())
        try:
            await _until(lambda: client.successes[url] >= 3, 120, "LLM calls before the crash")
            process.kill()  # a crash: SIGKILL, no goodbye
            await asyncio.to_thread(process.wait)
            await _until(lambda: client.in_outage, 60, "the outage to be declared")
            failures_at_outage = client.failures[url]
            await asyncio.sleep(8)  # a while down
            seen["attempts_while_paused"] = client.failures[url] - failures_at_outage
            _, process = await asyncio.to_thread(start_server, model_dir, port=port)  # back, same port
            answered = client.successes[url]
            await _until(lambda: client.successes[url] > answered and not client.in_outage, 120,
                         "LLM calls after the restart")
        finally:
            engine.request_stop("test over")
            await run

    with caplog.at_level(logging.WARNING, logger="evo.llm"):
        try:
            asyncio.run(scenario())
        finally:
            engine.close()
            stop_server(process)

    assert engine.stats.llm_unavailable >= 1
    # Paused, not hammering: two proposal streams, a probe at a time, pauses of 5 s and more.
    assert seen["attempts_while_paused"] <= 12, seen
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in messages and "pause" in messages and "answer again" in messages

    with sqlite3.connect(tmp_path / "run" / "evo.db") as db:
        events = {k: n for k, n in db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind")}
        failed_llm = [json.loads(d) for (d,) in db.execute(
            "SELECT data FROM events WHERE kind = 'operator_failed'")]
        evaluated = db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        bad_evals = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'evaluated'"
                               " AND json_extract(data, '$.reason') LIKE '%LLM%'").fetchone()[0]
    assert events["llm_unavailable"] >= 1
    # No candidate and no operator call was failed for the outage: the LLM failures on record are
    # answered calls whose gibberish did not apply.
    assert bad_evals == 0
    assert all(f["reason"].startswith(f["operator"] + ": no usable reply") for f in failed_llm
               if f["operator"].startswith("llm_"))
    assert evaluated == engine.stats.done


def _managed(model_dir: Path, tmp_path: Path, **kwargs: object) -> ManagedLLM:
    port = free_port()
    return ManagedLLM(serve_command(model_dir, port), port, label="transformers serve (tiny)",
                      log_path=tmp_path / "llm-server.log", env=server_env(), start_timeout_s=120,
                      retries=1, backoff_s=0.1, pause_s=0.2, **kwargs)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_managed_server_starts_on_first_call_restarts_after_a_crash_and_stops(
    llm_server: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, model_dir = llm_server
    llm = _managed(model_dir, tmp_path, max_restarts=1)
    assert llm.server.proc is None  # nothing starts before the first call

    async def go() -> list[int]:
        pids = []
        try:
            first = await llm.chat(MESSAGES, max_tokens=4)
            assert first.texts and first.completion_tokens > 0
            assert llm.server.proc is not None
            pids.append(llm.server.proc.pid)
            os.killpg(llm.server.proc.pid, signal.SIGKILL)  # the server crashes between two calls
            await asyncio.to_thread(llm.server.proc.wait)
            again = await llm.chat(MESSAGES, max_tokens=4)  # restarted, then answered
            assert again.texts and llm.restarts == 1
            pids.append(llm.server.proc.pid)
            os.killpg(llm.server.proc.pid, signal.SIGKILL)  # and again: past max_restarts
            await asyncio.to_thread(llm.server.proc.wait)
            with pytest.raises(EvoError, match=r"exited with code -9 during the run, 2 times: evo gives up"):
                await llm.chat(MESSAGES, max_tokens=4)
        finally:
            await llm.aclose()
        return pids

    with caplog.at_level(logging.INFO, logger="evo.llm"):
        pids = asyncio.run(go())
    assert len(set(pids)) == 2 and not any(_alive(p) for p in pids)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "starting the model server" in messages and "restarting it (1 of 1)" in messages
    log = (tmp_path / "llm-server.log").read_text()
    assert log.count("=== evo: starting") == 2  # one log for the run, both starts in it


@pytest.mark.slow  # tens of seconds on 2 cores: `make test-slow` (make test stays within CI's 20 minutes)
def test_managed_server_is_stopped_when_closed_and_starts_afresh(llm_server: tuple[str, Path], tmp_path: Path) -> None:
    """aclose (what the engine does at the end of a run, also after an error or Ctrl-C) stops the
    server's whole process group, and a later call starts it afresh (not counted as a crash)."""
    _, model_dir = llm_server
    llm = _managed(model_dir, tmp_path)

    async def go() -> tuple[int, int]:
        await llm.chat(MESSAGES, max_tokens=4)
        assert llm.server.proc is not None
        first = llm.server.proc.pid
        await llm.aclose()
        assert not _alive(first) and not llm.server.healthy()
        await llm.chat(MESSAGES, max_tokens=4)
        second = llm.server.proc.pid
        await llm.aclose()
        return first, second

    first, second = asyncio.run(go())
    assert first != second and not _alive(second) and llm.restarts == 0
