"""The proposal process: evo's non-LLM operators and the embedder in a real child process."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import numpy as np

from evo.config import RunConfig
from evo.embed import make_embedder
from evo.engine import Engine
from evo.eval.backends.base import EvalResult
from evo.operators import ConstantMutation, ProposalRequest
from evo.program import Program
from evo.proposer import ProposalProcess, ProposalProcessDied

SEED = (Path(__file__).parent.parent / "tasks" / "math" / "circle_packing_26" / "seed.py").read_text()


class FastEvaluator:
    """Scores a program by its text length, after a short pause: no candidate code runs."""

    def __init__(self, workers: int = 2):
        self.workers = workers

    async def evaluate(self, program: Program) -> EvalResult:
        await asyncio.sleep(0.02)
        n = len(program.text)
        return EvalResult(ok=True, score=float(n % 997), descriptors=((n % 60) / 1000.0, (n % 70) / 100.0))

    def close(self) -> None:
        return None


def test_children_equal_those_made_in_the_loop_and_are_embedded() -> None:
    async def main() -> None:
        process = ProposalProcess(["constants", "crossover"], "ngram")
        await process.start()
        try:
            parent = Program(source=SEED)
            outcome = await process.propose("constants", [parent], seed=1234, parse=True)
            local = await ConstantMutation().propose(ProposalRequest([parent], rng=np.random.default_rng(1234)))
            assert [c.source for c in outcome.children] == [p.source for p in local]
            child = outcome.children[0]
            assert child.parents == (parent.id,) and child.operator == "constants" and child.parse_error is None
            expected = make_embedder("ngram").embed([child.source])[0]
            assert child.vector is not None and np.allclose(child.vector, expected, atol=1e-6)
            # An operator's error comes back as an outcome, not as a dead process.
            same = await process.propose("crossover", [parent, parent], seed=1, parse=True)
            assert same.children == [] and same.error is not None and "identical" in same.error
            assert process.alive
        finally:
            await process.close()

    asyncio.run(main())


def test_a_killed_process_fails_its_waiting_requests() -> None:
    async def main() -> None:
        process = ProposalProcess(["constants"], "ngram")
        await process.start()
        assert process._proc is not None
        os.kill(process._proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(process.propose("constants", [Program(source=SEED)], 1, True), 10)
        except ProposalProcessDied as e:
            assert "stopped answering" in str(e) or "gone" in str(e)
        else:
            raise AssertionError("a request to a killed proposal process was answered")
        assert not process.alive
        await process.close()

    asyncio.run(main())


def test_run_finishes_its_budget_when_the_proposal_process_is_killed(tmp_path: Path) -> None:
    config = RunConfig(task="math/circle_packing_26", budget=120, workers=2, proposal_processes=1)
    engine = Engine.create(tmp_path / "run", config, FastEvaluator())
    killed: list[int] = []

    def tick(_stats: object) -> None:
        proposer = engine._proposer
        if not killed and engine.stats.done >= 30 and proposer is not None and proposer._proc is not None:
            killed.append(proposer._proc.pid)
            os.kill(proposer._proc.pid, signal.SIGKILL)

    stats = asyncio.run(engine.run_async(on_tick=tick))
    assert killed, "the run never used a proposal process"
    assert stats.done == 120 and engine.store.count_evaluations() == 120
    assert engine.store.count_events("proposal_process_lost") == 1
    ids = [p.id for p in engine.store.iter_programs()]
    assert len(ids) == len(set(ids))
    # Children came from both sides of the kill: the process before it, the loop after it.
    operators = Counter(p.operator for p in engine.store.iter_programs())
    assert operators["seed"] == 1 and sum(operators.values()) >= 120
    assert engine._proposer is None  # the loop made the children after the kill
    engine.close()
