"""The run store (SQLite, WAL): every program, evaluation and event of a run."""

from evo.store.sqlite import DB_NAME, EvaluationRecord, Store

__all__ = ["DB_NAME", "EvaluationRecord", "Store"]
