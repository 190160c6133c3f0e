"""Prompt layout: the shared part first (prefix caching), the parent, feedback and instruction last."""

from __future__ import annotations

import pytest

from evo.llm.prompts import build_messages
from evo.program import Program


def _prog(text: str, score: float) -> Program:
    return Program(source=text, metrics={"sum_radii": score})


def test_requests_for_different_parents_share_a_long_prefix() -> None:
    inspirations = [_prog("def f():\n    return 1\n", 2.5), _prog("def f():\n    return 2\n", 2.4)]
    a = build_messages("diff", "Pack circles.", [_prog("X = 1\n", 2.0)], inspirations)
    b = build_messages("diff", "Pack circles.", [_prog("X = 2\n", 2.1)], inspirations)
    assert a[0] == b[0]
    ua, ub = a[1]["content"], b[1]["content"]
    shared = next(i for i, (x, y) in enumerate(zip(ua, ub, strict=False)) if x != y)
    assert ua.index("return 2") < shared  # inspirations sit inside the shared prefix
    assert ua.index("# The program to change") < shared <= ua.index("X = 1")
    assert ua.rstrip().endswith("explain nothing.")


def test_feedback_and_scores_reach_the_prompt() -> None:
    msgs = build_messages("rewrite", "T", [_prog("X = 1\n", 2.0)], feedback=["circle 3 overlaps circle 4"])
    user = msgs[1]["content"]
    assert "circle 3 overlaps circle 4" in user
    assert "sum_radii = 2" in user
    assert "```python" in user


def test_crossover_shows_both_parents_and_unknown_mode_is_refused() -> None:
    user = build_messages("crossover", "T", [_prog("A = 1\n", 1.0), _prog("B = 2\n", 2.0)])[1]["content"]
    assert "Parent 1" in user and "Parent 2" in user and "A = 1" in user and "B = 2" in user
    with pytest.raises(ValueError, match="unknown prompt mode"):
        build_messages("poetry", "T", [_prog("A = 1\n", 1.0)])
