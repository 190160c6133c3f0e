"""Operator choice by a UCB1 bandit over admissions per cost, remembered by the store."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evo.config import RunConfig
from evo.engine import Engine
from evo.operators.bandit import OperatorBandit

TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")


def _simulate(bandit: OperatorBandit, success: dict[str, float], tokens: dict[str, int], steps: int) -> Counter:
    rng = np.random.default_rng(0)
    chosen: Counter = Counter()
    for _ in range(steps):
        name = bandit.names[bandit.choose(rng)]
        chosen[name] += 1
        bandit.record_call(name, tokens.get(name, 0))
        if rng.random() < success[name]:
            bandit.record_admission(name)
    return chosen


def test_the_operator_that_gets_admitted_is_chosen_most() -> None:
    bandit = OperatorBandit(["good", "bad"], [1.0, 1.0])
    chosen = _simulate(bandit, {"good": 0.5, "bad": 0.02}, {}, 2000)
    assert chosen["good"] > 4 * chosen["bad"]
    assert chosen["bad"] > 0  # still explored


def test_tokens_are_a_cost() -> None:
    bandit = OperatorBandit(["cheap", "costly"], [1.0, 1.0])
    chosen = _simulate(bandit, {"cheap": 0.3, "costly": 0.3}, {"costly": 4000}, 2000)
    assert chosen["cheap"] > 2 * chosen["costly"]


def test_weights_are_the_prior() -> None:
    bandit = OperatorBandit(["a", "b"], [9.0, 1.0])
    assert bandit.names[bandit.choose(np.random.default_rng(0))] == "a"
    with pytest.raises(ValueError, match="one weight per operator"):
        OperatorBandit(["a"], [1.0, 2.0])


def test_bandit_state_is_rebuilt_from_the_store_on_resume(tmp_path: Path) -> None:
    config = RunConfig.from_dict(dict(task=TOY, budget=30, workers=2, operator_selection="bandit", seed=3))
    engine = Engine.create(tmp_path / "run", config)
    assert engine.bandit is not None
    asyncio.run(engine.run_async())
    live = engine.bandit.snapshot()
    engine.close()
    assert sum(v["admissions"] for v in live.values()) > 1  # it learned something
    reopened = Engine.open(tmp_path / "run")
    assert reopened.bandit is not None
    assert reopened.bandit.snapshot() == live
    reopened.close()


def test_selection_mode_is_validated() -> None:
    from evo.errors import EvoError

    with pytest.raises(EvoError, match="operator_selection"):
        RunConfig(operator_selection="roulette")


# ----- the bandit over (operator, model) arms, with real servers -----


def _calls_by_model(store_path: Path) -> Counter:
    """Operator calls (answered ones, with or without a usable child) per model label, from the store."""
    import sqlite3

    with sqlite3.connect(store_path) as db:
        rows = db.execute("SELECT json_extract(data, '$.operator') FROM events"
                          " WHERE kind IN ('operator_call', 'operator_failed')").fetchall()
    return Counter(op.partition("@")[2] for (op,) in rows if op and op.startswith("llm_"))


def test_llm_operators_make_one_arm_per_model() -> None:
    from evo.llm.client import LLMClient, PreferredModel, parse_endpoints
    from evo.operators.llm import LLMOperator, llm_operators

    weights = {"constants": 1.0, "llm_diff": 2.0, "llm_rewrite": 0.0}
    one = LLMClient(parse_endpoints("http://a:8000#qwen@3,http://b:8000#qwen@1"))  # replicas of one model
    registry, out = llm_operators(one, weights)
    assert out == weights and set(registry) == {"llm_diff", "llm_rewrite"}  # one model: names unchanged

    # Two replicas of one model (same #name) are one arm; an unnamed server is its own arm.
    many = LLMClient(parse_endpoints("http://a:8000#qwen@2,http://b:8000#qwen@1,http://c:9000@1"))
    registry, out = llm_operators(many, weights, max_tokens=64)
    assert out == {"constants": 1.0, "llm_diff@qwen": 1.5, "llm_diff@c:9000": 0.5,
                   "llm_rewrite@qwen": 0.0, "llm_rewrite@c:9000": 0.0}
    op = registry["llm_diff@qwen"]()
    assert isinstance(op, LLMOperator) and op.name == "llm_diff@qwen" and op.max_tokens == 64
    assert isinstance(op.client, PreferredModel) and op.client.indices == [0, 1]


def test_model_group_is_asked_first_and_fails_over(llm_server: tuple[str, Path]) -> None:
    from llm_fixtures import ToyCoderServer, free_port

    from evo.llm.client import LLMClient, PreferredModel, parse_endpoints

    tiny_url, _ = llm_server
    coder = ToyCoderServer().start()
    dead = f"http://127.0.0.1:{free_port()}#toy-coder"
    client = LLMClient(parse_endpoints(f"{coder.url}#toy-coder@1,{tiny_url}@1,{dead}@50"), retries=2,
                       backoff_s=0.01)
    messages = [{"role": "user", "content": "## Parent (id x)\n```python\nA = 0.5\n```\nedit blocks"}]

    async def go() -> list[str]:
        try:
            served = []
            for _ in range(3):
                served.append((await PreferredModel(client, "toy-coder", [0]).chat(messages, max_tokens=8)).endpoint)
                served.append((await PreferredModel(client, "tiny", [1]).chat(messages, max_tokens=8)).endpoint)
            # The group {dead} fails: the call goes to a live endpoint instead of failing.
            served.append((await PreferredModel(client, "dead", [2]).chat(messages, max_tokens=8)).endpoint)
            return served
        finally:
            await client.aclose()

    try:
        served = asyncio.run(go())
    finally:
        coder.stop()
    assert served[:6] == [coder.url, tiny_url] * 3
    assert served[6] in (coder.url, tiny_url)
    assert client.failures[dead.partition("#")[0]] >= 1


def test_a_model_without_admissions_loses_share_and_resume_replays_it(
    llm_server: tuple[str, Path], tmp_path: Path
) -> None:
    """Two models behind two real servers: a coder whose children are admitted and the tiny random
    model, whose gibberish never applies. The bandit moves the calls to the coder; a resumed run
    starts from the same learned state, read back from the store."""
    from llm_fixtures import ToyCoderServer

    tiny_url, _ = llm_server
    tiny = tiny_url.removeprefix("http://")  # the arm label of a server without #model
    coder = ToyCoderServer().start()
    try:
        config = RunConfig.from_dict(dict(
            task=TOY, budget=70, workers=2, seed=5, operator_selection="bandit", proposal_concurrency=2,
            llm=f"{coder.url}#toy-coder,{tiny_url}", llm_max_tokens=12,
            operators={"llm_diff": 1.0, "llm_rewrite": 1.0}))
        engine = Engine.create(tmp_path / "run", config)
        assert engine.bandit is not None
        assert sorted(engine.bandit.names) == sorted(
            f"llm_{m}@{label}" for m in ("diff", "rewrite") for label in ("toy-coder", tiny))
        asyncio.run(engine.run_async())
        live = engine.bandit.snapshot()
        shares = engine.bandit.shares(by="model")
        engine.close()
    finally:
        coder.stop()

    calls = _calls_by_model(tmp_path / "run" / "evo.db")
    assert calls["toy-coder"] > 3 * calls[tiny] > 0, calls  # explored, then mostly left alone
    assert shares["toy-coder"] > 0.6 > shares[tiny]  # both started at 0.5 (equal weights)
    for mode in ("diff", "rewrite"):
        good, bad = live[f"llm_{mode}@toy-coder"], live[f"llm_{mode}@{tiny}"]
        assert good["value"] > bad["value"]
        assert bad["admissions"] == pytest.approx(0.5)  # the prior alone: never admitted
    assert sum(v["admissions"] for v in live.values()) > 5

    reopened = Engine.open(tmp_path / "run")
    assert reopened.bandit is not None
    assert reopened.bandit.snapshot() == live
    reopened.close()
