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
