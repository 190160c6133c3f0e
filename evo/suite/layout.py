"""Where a suite keeps what (evo/suite/run_dir.py tells the whole layout): light reads for the CLI and reports.

    RUN_DIR/evo.db                the suite's store, meta row `suite`
    RUN_DIR/tasks/<task>/evo.db   one task's run, meta row `suite_member` (the suite's directory, relative)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evo.store import DB_NAME, Store

SUITE_KEY = "suite"
MEMBER_KEY = "suite_member"
MEMBERS = "tasks"


def member_dir(run_dir: Path, task: str) -> Path:
    """Where a task of the suite keeps its store."""
    return Path(run_dir) / MEMBERS / task.strip("/").replace("/", "__")


def suite_meta(run_dir: Path) -> dict[str, Any] | None:
    """The suite's meta row of RUN_DIR, or None when RUN_DIR is not a suite's directory."""
    db = Path(run_dir) / DB_NAME
    if not db.is_file():
        return None
    store = Store(db, readonly=True)
    try:
        return store.get_meta(SUITE_KEY)
    finally:
        store.close()


def suite_of_member(run_dir: Path) -> str | None:
    """The suite directory a task's run directory belongs to (None for a run of its own)."""
    db = Path(run_dir) / DB_NAME
    if not db.is_file():
        return None
    store = Store(db, readonly=True)
    try:
        owner = store.get_meta(MEMBER_KEY)
    finally:
        store.close()
    return None if owner is None else str((Path(run_dir) / owner).resolve())
