"""evo: open-ended evolutionary search for automated AI research.

`evo.load(run_dir)` opens a run for analysis (see `evo.report.load`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["load"]

if TYPE_CHECKING:
    from evo.report.load import load


def __getattr__(name: str) -> object:
    # Imported on first use: `import evo` (every GPU worker does it) must not pull in pandas or the store.
    if name == "load":
        from evo.report.load import load

        return load
    raise AttributeError(f"module 'evo' has no attribute {name!r}")
