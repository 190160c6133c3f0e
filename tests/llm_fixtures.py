"""A tiny local chat model and a real OpenAI-compatible server over it, for the LLM tests.

No weights can be downloaded in the tests, so `build_tiny_model` makes a model from nothing in
a few seconds: a byte-level BPE tokenizer trained on the project's own source files, a chat
template, and a randomly initialised 2-layer Llama. Its output is gibberish, but every code
path of a real server (templating, tokenising, generating, token accounting) runs.

`start_server` runs `transformers serve` (the OpenAI-compatible server shipped with
transformers; it needs the `fastapi`, `uvicorn` and `openai` packages) over that directory on
CPU, offline, on a free port of 127.0.0.1 (`serve_command` is its command line, for evo's own
managed server). `ToyCoderServer` is a stdlib OpenAI-compatible server whose replies always make
useful children for the toy task: a model that is good at it, beside the tiny one that never is.
These helpers do not depend on pytest so that a benchmark or a notebook can use them too.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# A ChatML-like template: simple, and it ends with the assistant header when asked to, as real
# chat templates do, so the server's `add_generation_prompt=True` has something to add.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 1024


def _training_files(limit: int = 40) -> list[str]:
    """The project's own Python files: local, always present, and code-like, as our prompts are."""
    files = sorted(str(p) for p in (REPO_ROOT / "evo").rglob("*.py"))
    return files[:limit] or [__file__]


def build_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Build a tiny random chat model (tokenizer, Llama weights, generation config) in `path`.

    Takes a few seconds on CPU. Returns `path`, a directory that `from_pretrained` and
    `transformers serve` load offline.
    """
    # Imported here so that importing this module (e.g. for `start_server` alone) stays cheap.
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # The full byte alphabet keeps every input encodable, whatever the training text lacked.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train(_training_files(), trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)

    # Ending at <|im_end|> too, as a real chat model would; short max so a request with no
    # max_tokens cannot keep a CPU busy.
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        max_new_tokens=32,
    ).save_pretrained(path)
    return path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> list[str]:
    """The `transformers` command of this interpreter's environment, not whatever is on PATH."""
    script = Path(sys.executable).with_name("transformers")
    if script.exists():
        return [str(script)]
    found = shutil.which("transformers")
    if found:
        return [found]
    return [sys.executable, "-c", "from transformers.cli.transformers import main; main()"]


def server_env() -> dict[str, str]:
    """The environment of the server: CPU only, offline, no update check, quiet."""
    env = dict(os.environ)
    env.update(
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        # Two small models on a 2-core machine: more threads only fight each other.
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


def serve_command(model_dir: Path | str, port: int) -> list[str]:
    """The `transformers serve` command line over `model_dir` on 127.0.0.1:`port`, CPU (run it
    with `server_env()`). It answers `/health`, `/v1/models` and `/v1/chat/completions`."""
    return [
        *_transformers_cli(),
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
        "--default-seed",
        "0",
    ]


def start_server(
    model_dir: Path, *, port: int | None = None, timeout_s: float = 90.0
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `transformers serve` over `model_dir` on 127.0.0.1; return `(base_url, process)`.

    The model is preloaded (passed as the forced model), so the server is ready, model loaded,
    once `GET /v1/models` answers. Raises `RuntimeError` with the tail of the server's output
    if it exits early or does not answer within `timeout_s`. Stop it with `stop_server`.
    """
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    # The output goes to a file rather than a pipe: an unread pipe would fill and block the server.
    log = Path(tempfile.mkstemp(prefix="transformers-serve-", suffix=".log")[1])
    command = serve_command(model_dir, port)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True
        )
    process.log_path = log  # type: ignore[attr-defined]  # for stop_server and error messages

    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            output = _tail(log)
            log.unlink(missing_ok=True)
            raise RuntimeError(
                f"`transformers serve` exited with code {code} before answering.\n"
                f"command: {' '.join(command)}\noutput tail:\n{output}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return base_url, process
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # not listening yet: importing torch and loading the model take a few seconds
        if time.monotonic() > deadline:
            output = _tail(log)  # read before stop_server deletes the log
            stop_server(process)
            raise RuntimeError(
                f"`transformers serve` did not answer on {base_url}/v1/models within {timeout_s:.0f} s.\n"
                f"command: {' '.join(command)}\noutput tail:\n{output}"
            )
        time.sleep(0.2)


def stop_server(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a server started by `start_server`: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    log = getattr(process, "log_path", None)
    if log is not None:
        Path(log).unlink(missing_ok=True)


# ----- a scripted coder for the toy task: a real HTTP server whose replies always apply -----

_PARENT = re.compile(r"## Parent[^\n]*\n```python\n(.*?)\n```", re.S)


class ToyCoderServer(ThreadingHTTPServer):
    """An OpenAI-compatible chat server (stdlib) that writes useful children for the toy task
    `tests/fixtures/tasks/toy/quadratic`: in diff mode a SEARCH/REPLACE block that sets the
    parent's `A = ...` line to a new value, otherwise a whole program with new `A` and `B`.

    It stands for a model that is good at the task (the tiny random model never is), so that
    tests can watch the operator bandit prefer it. It serves `GET /health`, `GET /v1/models`
    (one model, `model`) and `POST /v1/chat/completions` (`n` honoured, `usage` counted as
    characters / 4). Start with `start()`, stop with `stop()`; `calls` counts the chat requests.
    """

    daemon_threads = True

    def __init__(self, model: str = "toy-coder", port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _ToyCoderHandler)
        self.model = model
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> ToyCoderServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def reply(self, prompt: str, rng: random.Random) -> str:
        a, b = (round(rng.uniform(-1.0, 1.0), 4) for _ in range(2))
        match = _PARENT.search(prompt)
        parent = match.group(1) if match else ""
        line = next((x for x in parent.splitlines() if x.startswith("A = ")), None)
        if "edit blocks" in prompt and line is not None:
            return f"<<<<<<< SEARCH\n{line}\n=======\nA = {a}\n>>>>>>> REPLACE\n"
        return f"```python\nA = {a}\nB = {b}\n\n\ndef solve():\n    return [A, B, 0.3, 0.3]\n```\n"


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers in JSON: the base of the test servers' handlers."""

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ToyCoderHandler(JsonHandler):
    server: ToyCoderServer

    def do_GET(self) -> None:  # noqa: N802  # the name http.server dispatches to
        if self.path == "/health":
            self._send(200, {})
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if body.get("model") != self.server.model:
            self._send(404, {"error": {"message": f"model {body.get('model')!r} is not served here"}})
            return
        with self.server._lock:
            self.server.calls += 1
            calls = self.server.calls
        prompt = body["messages"][-1]["content"]
        rng = random.Random(body.get("seed", calls))
        texts = [self.server.reply(prompt, rng) for _ in range(int(body.get("n", 1)))]
        self._send(200, {
            "object": "chat.completion",
            "model": self.server.model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": sum(len(t) for t in texts) // 4},
        })
