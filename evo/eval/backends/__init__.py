"""Evaluation backends: where candidates run (`local` process sandboxes; Ray later)."""

from evo.eval.backends.base import EvalResult, Evaluator

__all__ = ["EvalResult", "Evaluator"]
