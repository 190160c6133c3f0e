"""A kernel candidate that prints a checksum of every input it is called on, to tell which inputs a run showed it."""

from __future__ import annotations

from typing import Any

# Appended to the rmsnorm seed: wraps its `run` (the stdout comes back as the report's `log_tail`).
SEEN_PRINTER = '''
_seen_run = run


def run(x, weight):
    print(f"seen {float(x.float().sum()):.6e}", flush=True)
    return _seen_run(x, weight)
'''


def inputs_seen(report: dict[str, Any], reference: Any) -> set[str]:
    """The checksums a run's candidate printed, less the warm-up's small shapes (seed 0, never checked: the same
    in every session)."""
    warm = {f"{float(reference.make_inputs(dict(p), 0, 'cpu')[0].float().sum()):.6e}" for p in reference.SPEC.small}
    return {line.split()[1] for line in str(report.get("log_tail", "")).splitlines() if line.startswith("seen ")} - warm
