"""In-process generation engines with the interface of `LLMClient`.

`LLMClient` talks HTTP to a server; the engines here run the model inside this process, so a
single machine (a laptop with a small model, or a GPU box with vLLM) needs no server at all.
Both expose what the LLM operators use of a client:

    async chat(messages, *, n=1, max_tokens=1024, temperature=0.8, rng=None) -> Completion
    async aclose()

so `LLMOperator(TransformersEngine(path), "diff")` works as with an `LLMClient`.

- `TransformersEngine`: `transformers`' `model.generate`, CPU or one GPU; one generate at a
  time, in a worker thread so the event loop (evaluations, other operators) keeps going.
- `VLLMEngine`: vLLM's offline `LLM`, which batches the requests that arrive together.
- `make_llm(spec)`: the `--llm` syntax: `http://...` (servers), `vllm:PATH` (a `vllm serve` that
  evo starts and stops, `evo.llm.serve.ManagedLLM`), `transformers:PATH`, `vllm-offline:PATH`,
  `ray[:ADDRESS]` (a Ray cluster's LLM replicas, followed while the run goes on).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from evo.errors import EvoError
from evo.llm.client import Completion, LLMClient, LoopLock, parse_endpoints
from evo.llm.endpoints import Roster, probe_endpoints

if TYPE_CHECKING:
    from evo.llm.serve import ManagedLLM

__all__ = ["ChatLLM", "TransformersEngine", "VLLMEngine", "check_llm_spec", "make_llm"]

SPEC_EXAMPLES = (
    "http://127.0.0.1:8000 (an OpenAI-compatible server such as `vllm serve`; several: "
    "URL[#model][@weight],...), "
    "vllm:/path/to/model or vllm:Qwen/Qwen2.5-Coder-7B-Instruct (evo starts `vllm serve` for the run, CUDA), "
    "transformers:/path/to/model (in-process, CPU), "
    "vllm-offline:/path/to/model (vLLM's offline engine in process, CUDA), "
    "ray or ray:ADDRESS (the LLM replicas of `evo cluster llm start`, followed as they move)"
)
KINDS = ("transformers", "vllm", "vllm-offline")
_SEED_BOUND = 2**31 - 1  # as LLMClient draws its `seed` field: fits every server's int32

# torch's default generator is global to the process: two engines (or a test) seeding it from
# different threads at once would interleave. Seeding and sampling happen under this lock.
_TORCH_RNG_LOCK = threading.Lock()

# What a generate gives back: the texts, the prompt's tokens, the tokens generated, and per text
# whether the token limit cut it off.
_Generated = tuple[list[str], int, int, list[bool]]


@runtime_checkable
class ChatLLM(Protocol):
    """What an LLM operator needs: `LLMClient` and the engines here all satisfy it."""

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        rng: np.random.Generator | None = None,
    ) -> Completion: ...

    async def aclose(self) -> None: ...


def _check_args(n: int, max_tokens: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")


def _completion(engine: TransformersEngine | VLLMEngine, generated: _Generated, start: float) -> Completion:
    """The `Completion` of what an in-process engine generated since `start` (`time.perf_counter`)."""
    texts, prompt_tokens, completion_tokens, truncated = generated
    return Completion(texts=texts, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      model=engine.model_path, endpoint=engine.name, seconds=time.perf_counter() - start,
                      truncated=truncated)


class TransformersEngine:
    """`model.generate` of a local Hugging Face causal LM, in process.

    The tokenizer and model load on the first `chat` (offline: `local_files_only`, so a path or
    a model already in the Hugging Face cache; nothing is downloaded). `n` samples are generated
    as `num_return_sequences` in batches of at most `max_batch`. Calls run one at a time (a
    second waits): a CPU or single GPU gains little from interleaving two generates, and it keeps
    the seeded sampling reproducible. With `rng`, the sampling is seeded from it, so the same
    rng state gives the same texts on the same machine.
    """

    def __init__(self, model_path: str, device: str = "cpu", max_batch: int = 8) -> None:
        if max_batch < 1:
            raise EvoError(f"TransformersEngine needs max_batch >= 1, got {max_batch}")
        self.model_path = str(model_path)
        self.device = device
        self.max_batch = max_batch
        self.name = f"transformers:{self.model_path}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: set[int] = set()
        self._load_lock = threading.Lock()  # loading happens in a worker thread
        self._generate_lock = threading.Lock()  # one generate at a time, whatever the event loop
        self._call_lock = LoopLock()  # waiters queue on the loop rather than holding threads

    async def __aenter__(self) -> TransformersEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Drop the model (memory back); a later `chat` loads it again."""
        with self._load_lock:
            self._model = self._tokenizer = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
                # bf16 halves a GPU's memory and is what chat models are trained in; CPUs lack
                # fast bf16 kernels in general, so float32 there.
                dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
                model = AutoModelForCausalLM.from_pretrained(
                    self.model_path, local_files_only=True, dtype=dtype
                )
            except OSError as exc:
                raise EvoError(
                    f"Cannot load the model {self.model_path!r} offline: {exc}. Give a local model "
                    "directory, or download it first (e.g. `hf download MODEL`)."
                ) from exc
            if tokenizer.chat_template is None:
                raise EvoError(f"The tokenizer of {self.model_path!r} has no chat template: use a chat model.")
            model.to(self.device).eval()
            eos = model.generation_config.eos_token_id
            if eos is None:
                eos = tokenizer.eos_token_id
            self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
            self._tokenizer, self._model = tokenizer, model

    def _n_generated(self, row: Any) -> tuple[int, bool]:
        """Tokens generated in one returned sequence: up to its first EOS, which counts (as
        servers count it); what follows is padding of a batch whose other rows ran longer.
        And whether it ended without an EOS: cut off by `max_new_tokens`."""
        for i, token in enumerate(row.tolist()):
            if token in self._eos_ids:
                return i + 1, False
        return len(row), True

    def _generate(
        self, messages: list[dict[str, str]], n: int, max_tokens: int, temperature: float, seed: int | None
    ) -> _Generated:
        """Blocking: what `n` samples of `messages` generated. Runs in a worker thread."""
        import torch

        self._load()
        tokenizer, model = self._tokenizer, self._model
        # Rendered to text, then tokenised without special tokens: the template already holds
        # the BOS it wants, and a second one would shift the model off its training format.
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        prompt_len = int(inputs["input_ids"].shape[1])
        sample = temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": sample,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        if sample:
            # The OpenAI semantics servers implement: plain temperature sampling, no top-k/top-p
            # unless asked (transformers' own default is top_k=50).
            options.update(temperature=temperature, top_k=0, top_p=1.0)
        else:
            options.update(temperature=None, top_k=None, top_p=None)

        texts: list[str] = []
        truncated: list[bool] = []
        completion_tokens = 0
        # Greedy decoding gives one answer however often it is asked: generate it once.
        batches = []
        remaining = n if sample else 1
        while remaining > 0:
            batches.append(min(remaining, self.max_batch))
            remaining -= batches[-1]
        devices = [torch.device(self.device)] if torch.device(self.device).type == "cuda" else []
        with self._generate_lock, _TORCH_RNG_LOCK, torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for size in batches:
                with torch.inference_mode():
                    out = model.generate(**inputs, num_return_sequences=size, **options)
                for row in out[:, prompt_len:]:
                    used, cut = self._n_generated(row)
                    completion_tokens += used
                    truncated.append(cut)
                    texts.append(tokenizer.decode(row[:used], skip_special_tokens=True))
        if not sample:
            texts *= n
            truncated *= n
            completion_tokens *= n
        return texts, prompt_len, completion_tokens, truncated

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        rng: np.random.Generator | None = None,
    ) -> Completion:
        """Sample `n` answers to `messages` (see the class docstring)."""
        _check_args(n, max_tokens)
        # Drawn before waiting for the lock, so the seed depends on the caller's rng only.
        seed = int(rng.integers(_SEED_BOUND)) if rng is not None else None
        start = time.perf_counter()
        async with self._call_lock.get():
            generated = await asyncio.to_thread(self._generate, messages, n, max_tokens, temperature, seed)
        return _completion(self, generated, start)


@dataclass
class _Request:
    messages: list[dict[str, str]]
    params: Any  # vllm.SamplingParams
    future: asyncio.Future[_Generated] = field(repr=False)


class VLLMEngine:
    """vLLM's offline `LLM` in process (CUDA GPUs only).

    Requests that arrive while a batch is generating are queued and sent together as the next
    batch (`LLM.chat` with one `SamplingParams` each), so concurrent operators get vLLM's
    continuous batching without a server. `kwargs` go to `vllm.LLM` (e.g. `gpu_memory_utilization`,
    `max_model_len`, `dtype`).
    """

    def __init__(self, model_path: str, tensor_parallel: int = 1, **kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise EvoError(
                f"The in-process vllm engine (vllm-offline:) needs the vllm package, which is not installed "
                f"({exc}). Install it with `pip install 'evo[vllm]'` (CUDA only), or use an OpenAI-compatible "
                "server (--llm http://HOST:PORT) or --llm transformers:PATH."
            ) from exc
        import torch

        if not torch.cuda.is_available():
            raise EvoError(
                "The vllm engine needs a CUDA GPU and none is visible here (torch.cuda.is_available() "
                "is False). Use --llm transformers:PATH on CPU, or a server on a GPU machine."
            )
        if tensor_parallel > torch.cuda.device_count():
            raise EvoError(
                f"tensor_parallel={tensor_parallel} but only {torch.cuda.device_count()} GPU(s) are visible."
            )
        self.model_path = str(model_path)
        self.name = f"vllm-offline:{self.model_path}"
        self._SamplingParams = vllm.SamplingParams
        self._llm: Any = vllm.LLM(model=self.model_path, tensor_parallel_size=tensor_parallel, **kwargs)
        self._pending: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> VLLMEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for the batch in flight, then free the engine (GPU memory back)."""
        if self._worker is not None and not self._worker.done():
            await self._worker
        self._llm = None
        gc.collect()

    def _generate(self, batch: list[_Request]) -> list[_Generated]:
        """Blocking: one `LLM.chat` over the whole batch. Runs in a worker thread."""
        outputs = self._llm.chat(
            [r.messages for r in batch], sampling_params=[r.params for r in batch], use_tqdm=False
        )
        results = []
        for out in outputs:
            texts = [o.text for o in out.outputs]
            completion = sum(len(o.token_ids) for o in out.outputs)
            truncated = [o.finish_reason == "length" for o in out.outputs]
            results.append((texts, len(out.prompt_token_ids or ()), completion, truncated))
        return results

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.to_thread(self._generate, batch)
            except Exception as exc:  # every caller of the batch gets the failure
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r, result in zip(batch, results, strict=True):
                if not r.future.done():
                    r.future.set_result(result)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        rng: np.random.Generator | None = None,
    ) -> Completion:
        """Sample `n` answers to `messages`, batched with the other calls in flight."""
        _check_args(n, max_tokens)
        if self._llm is None:
            raise EvoError("This VLLMEngine was closed; make a new one.")
        seed = int(rng.integers(_SEED_BOUND)) if rng is not None else None
        params = self._SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, seed=seed)
        start = time.perf_counter()
        future: asyncio.Future[_Generated] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(messages, params, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return _completion(self, await future, start)


def _split_spec(spec: str) -> tuple[str, str]:
    """("http", spec) for server URLs, else (kind, path) of `kind:PATH`; EvoError with examples."""
    spec = spec.strip()
    if spec.startswith(("http://", "https://")):
        return "http", spec
    if spec == "ray" or spec.startswith("ray:"):  # the address is optional: the run's connection, $RAY_ADDRESS
        return "ray", spec.removeprefix("ray").removeprefix(":").strip()
    kind, colon, path = spec.partition(":")
    if colon and kind in KINDS:
        if not path.strip():
            raise EvoError(f"--llm {spec!r} names no model after '{kind}:'. Expected e.g. {SPEC_EXAMPLES}.")
        return kind, path.strip()
    raise EvoError(f"Unknown LLM spec {spec!r}. Expected one of: {SPEC_EXAMPLES}.")


def check_llm_spec(spec: str, serve_args: Sequence[str] = (), probe: bool = False) -> list[str]:
    """Check a `--llm` spec without starting anything: its syntax, and for `vllm:` and
    `vllm-offline:` that vllm is installed and enough GPUs are visible. EvoError if not.

    With `probe`, the servers of an `http` spec are asked once each whether they answer and serve
    the model named; what is wrong comes back as warnings (`probe_endpoints`), never an error.
    """
    kind, rest = _split_spec(spec)
    if kind == "http":
        endpoints = parse_endpoints(rest)
        return probe_endpoints(endpoints) if probe else []
    elif kind == "vllm":
        from evo.llm.serve import tensor_parallel_of, vllm_command

        vllm_command(rest, 0, tensor_parallel_of(serve_args), serve_args, what=f"--llm vllm:{rest}")
    elif kind == "ray":
        # Ray's presence only: connecting here would fix the connection before the run's Ray backend makes its own.
        if importlib.util.find_spec("ray") is None:
            raise EvoError(f"--llm {spec} follows a Ray cluster's LLM replicas, and Ray is not installed: "
                           "pip install 'evo[cluster]'")
    elif kind == "vllm-offline":
        from evo.llm.serve import check_vllm_and_gpus

        check_vllm_and_gpus(1, f"--llm vllm-offline:{rest}")
    return []


def make_llm(
    spec: str, *, log_dir: Path | None = None, serve_args: Sequence[str] = (), roster: Roster | None = None,
    **kwargs: Any
) -> LLMClient | ManagedLLM | TransformersEngine | VLLMEngine:
    """The LLM a `--llm` spec names; `kwargs` go to its constructor.

    `http://...`/`https://...` (comma-separated `URL[#model][@weight]`): `LLMClient`;
    `vllm:PATH`: `ManagedLLM`, a `vllm serve PATH` (with `serve_args`) that starts on the first
    call and stops on `aclose`, its log in `log_dir/llm-server.log` (a temporary file without
    `log_dir`); `transformers:PATH`: `TransformersEngine`; `vllm-offline:PATH`: `VLLMEngine`;
    `ray[:ADDRESS]`: an `LLMClient` following `roster`, the cluster's LLM replicas (the caller builds it with
    `evo.eval.backends.ray_llm.replica_roster`: Ray lives on the evaluation side, never under `evo/llm`).
    Raises `EvoError` with examples for anything else.
    """
    kind, rest = _split_spec(spec)
    if kind == "http":
        return LLMClient(parse_endpoints(rest), **kwargs)
    if kind == "ray":
        if roster is None:
            raise EvoError(f"--llm {spec}: no roster of the cluster's LLM replicas was given (the run builds one "
                           "with evo.eval.backends.ray_llm.replica_roster)")
        return LLMClient([], roster=roster, **kwargs)
    if kind == "vllm":
        from evo.llm.serve import managed_vllm

        log_path = Path(log_dir) / "llm-server.log" if log_dir is not None else None
        return managed_vllm(rest, serve_args=serve_args, log_path=log_path, **kwargs)
    engine = TransformersEngine if kind == "transformers" else VLLMEngine
    return engine(rest, **kwargs)
