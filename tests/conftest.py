"""Fixtures shared by several test modules."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_fixtures import build_tiny_model, start_server, stop_server


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`(base_url, model_dir)` of a live `transformers serve` over a tiny model built here."""
    missing = [m for m in ("fastapi", "uvicorn", "openai", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"`transformers serve` needs {', '.join(missing)}: pip install -e '.[dev]'")
    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny-chat-model"))
    # A failure to start is a test failure, not a skip: the error carries the server's output.
    base_url, process = start_server(model_dir)
    try:
        yield base_url, model_dir
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def rmsnorm_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The kernel harness for `kernels/rmsnorm_fwd` on CPU (Triton's interpreter, short timing), one per module."""
    from evo.eval.backends.kernel import KernelEvaluator
    from evo.eval.bench import BenchConfig
    from evo.task import load_task

    ev = KernelEvaluator(load_task("kernels/rmsnorm_fwd"), 1, tmp_path_factory.mktemp("rmsnorm-harness"),
                         devices=["cpu"], config=BenchConfig(iters=2, warmup=1, compile_baseline=False),
                         parallel_per_device=1)
    yield ev
    ev.close()
