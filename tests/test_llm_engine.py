"""The in-process LLM engines (`evo.llm.engine`) over a tiny random chat model, on CPU.

The model's replies are gibberish: these tests prove the interface (texts, token accounting,
seeding) and that an LLM operator runs unchanged over an engine instead of an HTTP client.
vLLM needs CUDA and is not installed here: only its clear error is tested.
"""

from __future__ import annotations

import asyncio
import builtins
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_fixtures import build_tiny_model

from evo.errors import EvoError, OperatorError
from evo.llm.client import Completion, LLMClient
from evo.llm.engine import ChatLLM, TransformersEngine, VLLMEngine, check_llm_spec, make_llm
from evo.operators.base import ProposalRequest
from evo.operators.llm import LLMOperator
from evo.program import Program

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def f(x):"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-engine-model"))


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> TransformersEngine:
    # One engine for the module: the model loads once (on its first chat).
    return TransformersEngine(str(model_dir), max_batch=2)


def _chat(engine: TransformersEngine, **kwargs: Any) -> Completion:
    return asyncio.run(engine.chat(MESSAGES, **kwargs))


def test_chat_returns_n_texts_with_token_counts(engine: TransformersEngine) -> None:
    # n=3 with max_batch=2: two generate batches, merged.
    completion = _chat(engine, n=3, max_tokens=12, rng=np.random.default_rng(0))
    assert isinstance(completion, Completion)
    assert len(completion.texts) == 3 and all(isinstance(t, str) for t in completion.texts)
    assert completion.prompt_tokens > 0
    assert 0 < completion.completion_tokens <= 3 * 12
    assert completion.endpoint == f"transformers:{engine.model_path}"
    assert isinstance(engine, ChatLLM)


def test_same_seed_same_texts(engine: TransformersEngine) -> None:
    a = _chat(engine, n=2, max_tokens=12, rng=np.random.default_rng(7))
    b = _chat(engine, n=2, max_tokens=12, rng=np.random.default_rng(7))
    c = _chat(engine, n=2, max_tokens=12, rng=np.random.default_rng(8))
    assert a.texts == b.texts and a.completion_tokens == b.completion_tokens
    assert a.texts != c.texts  # the seed is really used


def test_greedy_gives_n_identical_texts(engine: TransformersEngine) -> None:
    completion = _chat(engine, n=2, max_tokens=8, temperature=0.0)
    assert len(completion.texts) == 2 and completion.texts[0] == completion.texts[1]


def test_concurrent_calls_are_served(engine: TransformersEngine) -> None:
    async def many() -> list[Completion]:
        return await asyncio.gather(*(engine.chat(MESSAGES, max_tokens=6) for _ in range(3)))

    assert [len(c.texts) for c in asyncio.run(many())] == [1, 1, 1]


def test_bad_arguments(engine: TransformersEngine) -> None:
    with pytest.raises(ValueError, match="n must be"):
        _chat(engine, n=0)
    with pytest.raises(EvoError, match="max_batch"):
        TransformersEngine("unused", max_batch=0)


def test_llm_operator_over_an_engine(engine: TransformersEngine) -> None:
    operator = LLMOperator(engine, "diff", n=2, max_tokens=16)
    request = ProposalRequest([Program("def f(x):\n    return x + 1\n")], rng=np.random.default_rng(3))
    with pytest.raises(OperatorError, match="no usable reply") as info:
        asyncio.run(operator.propose(request))
    usage = info.value.meta["llm"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0  # type: ignore[index]


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvoError, match="offline"):
        asyncio.run(TransformersEngine(str(tmp_path / "nowhere")).chat(MESSAGES, max_tokens=4))


def test_make_llm_dispatch(model_dir: Path) -> None:
    client = make_llm("http://127.0.0.1:8000@2,http://gpu-b:8000#qwen", concurrency=4)
    assert isinstance(client, LLMClient) and len(client.endpoints) == 2 and client.concurrency == 4
    engine = make_llm(f"transformers:{model_dir}", max_batch=3)
    assert isinstance(engine, TransformersEngine) and engine.model_path == str(model_dir)
    assert engine.max_batch == 3 and engine._model is None  # loading waits for the first chat


@pytest.mark.parametrize("spec", ["", "gpt-4", "ftp://host", "transformers:", "vllm: ", "llama:/m"])
def test_make_llm_rejects(spec: str) -> None:
    with pytest.raises(EvoError, match="transformers:"):  # the message shows examples
        make_llm(spec)


def test_make_llm_bad_url() -> None:
    with pytest.raises(EvoError, match="URL"):
        make_llm("http://")


def test_vllm_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_vllm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    # Whether or not vllm is installed, the engine must explain how to get it.
    monkeypatch.setattr(builtins, "__import__", no_vllm)
    monkeypatch.setenv("PATH", "/nonexistent")  # no `vllm` command either
    for make in (lambda: VLLMEngine("some/model"), lambda: make_llm("vllm:some/model"),
                 lambda: make_llm("vllm-offline:some/model"), lambda: check_llm_spec("vllm:some/model"),
                 lambda: check_llm_spec("vllm-offline:some/model")):
        with pytest.raises(EvoError, match=r"pip install 'evo\[vllm\]'"):
            make()


def test_check_llm_spec_starts_nothing() -> None:
    check_llm_spec("http://127.0.0.1:1@2,http://127.0.0.1:2#m")  # syntax only: nothing listens there
    check_llm_spec("transformers:/no/such/model")  # loaded at the first call, not here
    with pytest.raises(EvoError, match="vllm-offline:"):
        check_llm_spec("vllm-server:/m")
