"""The environment of a Python subprocess that must import this checkout's `evo`."""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def checkout_env(**extra: str) -> dict[str, str]:
    """This process's environment with the checkout first on PYTHONPATH, a PYTHONPATH already set kept after it
    (packages carried to a machine as wheels, say: a child that lost them failed to import the engine), and
    `extra` variables on top."""
    path = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
