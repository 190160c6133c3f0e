"""The LLM path degrades gracefully: a model server that is away holds up only the LLM operators.

Everything here is real: a stdlib OpenAI-compatible server (`ToyCoderServer`) on a port where
nothing listens until the test starts it mid-run, sandboxed evaluations of a task folder written
under a temporary directory, and `evo run` as a subprocess for what the user sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from llm_fixtures import ToyCoderServer, free_port

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError, OperatorError
from evo.llm.client import LLMClient
from evo.llm.endpoints import Endpoint, probe_endpoints
from evo.operators import ConstantMutation, FunctionCrossover, ParamCrossover, ParamMutation, ProposalRequest
from evo.operators.choice import OperatorChoice
from evo.operators.llm import LLMOperator
from evo.program import Program

TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic"
PLAIN = "A = 0.5\nB = 0.1\n\n\ndef solve():\n    return [A, B, 0.9, -0.2]\n"
# A declaration whose bounds are the wrong way round: `params` applies (it is told so) and fails.
MALFORMED = "A = 0.5  # evo: float(1.0, 0.0)\nB = 0.1\n\n\ndef solve():\n    return [A, B, 0.9, -0.2]\n"


def _task(root: Path, seed: str) -> Path:
    """The toy task with one well-behaved seed, in a folder of the test's own."""
    folder = root / "quad"
    (folder / "seeds").mkdir(parents=True)
    shutil.copy(TOY / "reference.py", folder)
    toml = (TOY / "task.toml").read_text()
    (folder / "task.toml").write_text(toml[: toml.index("# The seeds misbehave")])
    (folder / "seeds" / "seed.py").write_text(seed)
    return folder


async def _until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _evaluated_by(db_path: Path, prefix: str) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM programs WHERE operator LIKE ? AND status = 'evaluated'",
                          (prefix + "%",)).fetchone()[0]


# -- 1. a server that is down, then up ----------------------------------------------------------------
def test_evaluations_go_on_while_the_llm_server_is_down_and_llm_children_come_once_it_is_up(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here until the server starts below
    config = RunConfig.from_dict(dict(
        task=str(_task(tmp_path, PLAIN)), budget=100_000, workers=2, seed=1, llm=f"http://127.0.0.1:{port}",
        operator_selection="weights", operators={"constants": 1.0, "llm_diff": 3.0}))
    engine = Engine.create(tmp_path / "run", config)
    client = engine.llm_client
    assert isinstance(client, LLMClient)
    # Short retries and outage pauses: the test is about who waits, not how long.
    client.backoff_s, client.failover.pause_s, client.failover.max_pause_s = 0.05, 0.2, 0.5
    db = tmp_path / "run" / "evo.db"
    seen: dict[str, int] = {}
    server: ToyCoderServer | None = None

    async def scenario() -> None:
        nonlocal server
        run = asyncio.create_task(engine.run_async())
        try:
            await _until(lambda: engine.stats.llm_unavailable >= 1, 60, "the LLM calls to find the server away")
            down_at = engine.stats.done
            # Today every proposal stream ends up waiting on the LLM and this never comes.
            await _until(lambda: engine.stats.done >= down_at + 25, 180, "evaluations while the server is down")
            seen["while_down"] = engine.stats.done - down_at
            seen["llm_children_while_down"] = _evaluated_by(db, "llm_")
            server = ToyCoderServer(port=port).start()
            await _until(lambda: _evaluated_by(db, "llm_") >= 3, 180, "LLM children after the server came up")
            seen["constants_before_stop"] = _evaluated_by(db, "constants")
        finally:
            engine.request_stop("test over")
            await run

    try:
        asyncio.run(scenario())
    finally:
        engine.close()
        if server is not None:
            server.stop()

    assert seen["while_down"] >= 25 and seen["llm_children_while_down"] == 0, seen
    assert server is not None and server.calls >= 3
    assert engine.stats.llm_unavailable >= 1
    # Back to normal: the model's operators are chosen again, beside the others.
    assert _evaluated_by(db, "llm_diff") >= 3 and seen["constants_before_stop"] >= 25
    # The outage failed no candidate and no operator call.
    assert not engine.stats.operator_errors
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'evaluated'"
                            " AND json_extract(data, '$.reason') LIKE '%LLM%'").fetchone()[0] == 0


# -- 2. the endpoint is checked before the run directory is made ---------------------------------------
def test_probe_endpoints_tells_down_wrong_model_and_well(tmp_path: Path) -> None:
    server = ToyCoderServer(model="toy-coder").start()
    try:
        assert probe_endpoints([Endpoint(server.url), Endpoint(server.url, "toy-coder")]) == []
        with pytest.raises(EvoError, match=r"does not serve the model 'qwen' \(it lists toy-coder\)"):
            probe_endpoints([Endpoint(server.url, "qwen")])
    finally:
        server.stop()
    (down,) = probe_endpoints([Endpoint(f"http://127.0.0.1:{free_port()}")])
    assert "does not answer" in down and "the run starts anyway" in down


def _evo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "evo", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_evo_run_warns_of_a_server_that_is_down_and_of_a_run_with_only_llm_operators(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "run.toml"
    config.write_text(f'llm = "{url}"\noperators = {{llm_diff = 1.0}}\n')
    # A budget of the seeds alone: the run starts, evaluates its seed, and ends without an LLM call.
    done = _evo("run", str(_task(tmp_path, PLAIN)), "--run-dir", str(tmp_path / "run"), "--budget", "1",
                "--config", str(config), "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "evo.db").exists()  # warned, not refused
    assert f"warning: the LLM server {url} does not answer" in done.stderr
    assert "every operator of this run calls the LLM" in done.stderr


# -- 3. operators that cannot apply are not chosen; operator errors are counted apart -------------------
def _parent(text: str, pid: str = "p0") -> Program:
    return Program(source=text, id=pid)


def test_operators_say_when_they_cannot_apply() -> None:
    plain, other = _parent(PLAIN), _parent(PLAIN.replace("0.9, -0.2", "0.8, -0.1"), "p1")
    declared = _parent(PLAIN.replace("A = 0.5", "A = 0.5  # evo: float(0.0, 1.0)"))
    assert not ParamMutation().applicable([plain]) and ParamMutation().applicable([declared])
    assert ParamMutation().applicable([_parent(MALFORMED)])  # in doubt: the call names the bad line
    assert not ParamCrossover().applicable([declared, declared])
    assert not FunctionCrossover().applicable([plain, plain]) and FunctionCrossover().applicable([plain, other])
    assert not ConstantMutation().applicable([_parent("def solve():\n    return []\n")])
    assert ConstantMutation().applicable([plain])
    llm = LLMClient([Endpoint("http://127.0.0.1:9")])
    assert not LLMOperator(llm, "crossover").applicable([plain, plain])
    assert LLMOperator(llm, "diff").applicable([plain])
    # What `applicable` rules out is what the call would refuse.
    with pytest.raises(OperatorError, match="no `# evo:` parameters"):
        asyncio.run(ParamMutation().propose(ProposalRequest(parents=[plain])))
    with pytest.raises(OperatorError, match="identical"):
        asyncio.run(FunctionCrossover().propose(ProposalRequest(parents=[plain, plain])))


def test_choice_falls_back_by_weight_among_the_operators_that_apply() -> None:
    ops = [(ParamMutation(), 5.0), (FunctionCrossover(), 3.0), (ConstantMutation(), 1.0)]
    choice = OperatorChoice(ops)
    rng = np.random.default_rng(0)
    plain = _parent(PLAIN)
    picked = {choice.settle(choice.first(rng), [plain, plain], rng) for _ in range(200)}
    assert picked == {2}  # params has nothing to tune, crossover a parent with itself: constants
    assert choice.settle(0, [_parent("def solve():\n    return []\n")], rng) is None


class _Model:
    """An operator whose calls wait on a model (as the LLM operators do)."""

    name, arity, calls_model = "model", 1, True

    async def propose(self, request: ProposalRequest) -> list:  # pragma: no cover - never called here
        return []


def test_model_calls_never_take_the_last_free_slot_from_the_other_operators() -> None:
    choice = OperatorChoice([(_Model(), 100.0), (ConstantMutation(), 1.0)], model_slots=2)
    rng = np.random.default_rng(0)
    with choice.calling(0), choice.calling(0):  # two model calls in flight: every slot held
        assert {choice.first(rng) for _ in range(50)} == {1}
    assert choice.model_calls == 0 and 0 in {choice.first(rng) for _ in range(50)}


def test_inapplicable_operators_are_not_called_and_operator_errors_are_counted_apart(tmp_path: Path) -> None:
    config = RunConfig.from_dict(dict(task=str(_task(tmp_path, PLAIN)), budget=60, workers=2, seed=2,
                                      operators={"params": 1.0, "crossover": 1.0, "constants": 1.0}))
    engine = Engine.create(tmp_path / "run", config)
    stats = asyncio.run(engine.run_async())
    engine.close()
    with sqlite3.connect(tmp_path / "run" / "evo.db") as db:
        failed = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'operator_failed'")]
        calls = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'operator_call'")]
    # The seed declares no parameter, and its first children are made from it alone.
    assert not [f for f in failed if f["operator"] == "params"], failed[:3]
    assert not [c for c in failed + calls if c["operator"] == "crossover" and len(set(c["parents"])) < 2]
    assert stats.done == 60 and any(c["operator"] == "crossover" for c in calls)
    assert sum(stats.operator_errors.values()) == len(failed)
    # A resumed run counts on from the store, each kind apart.
    reopened = Engine.open(tmp_path / "run")
    try:
        assert reopened.stats.operator_errors == stats.operator_errors
        assert reopened.stats.failures == stats.failures and reopened.stats.rejections == stats.rejections
    finally:
        reopened.close()


def test_progress_shows_operator_errors_apart_from_failed_evaluations(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("operators = {params = 1.0, constants = 1.0}\n")
    done = _evo("run", str(_task(tmp_path, MALFORMED)), "--run-dir", str(tmp_path / "run"), "--budget", "12",
                "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = {line.split("  ")[0]: line for line in done.stdout.splitlines()}
    errors = re.search(r"operator errors +(\d+) \(params (\d+)\)", table["operator errors"])
    assert errors and int(errors[1]) == int(errors[2]) > 0, table
    assert table["failed evaluations"].split()[-1] == "none"
    assert re.search(r"\d+ failed, [1-9]\d* operator errors", done.stderr)  # the progress line (not a terminal)
    shown = _evo("show", str(tmp_path / "run"), cwd=tmp_path)
    assert shown.returncode == 0 and f" {errors[1]} operator failures" in shown.stdout
