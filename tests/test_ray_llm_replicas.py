"""A running search follows its LLM endpoints as they move: a replica restarted at a new URL replaces its old
one (with its weight, and a log line), new replicas join, stopped ones leave, and an outage ends as soon as
a replacement is registered.

The fast tests follow a registry the test itself keeps (a dict, as `Roster` reads any registry) over real HTTP
servers (`ToyCoderServer`). The slow one is the whole thing: a local Ray, two LLM replicas running
`transformers serve` over the tiny model, and a real `evo run --llm ray` in another process; one replica's
server is killed, Ray starts the replica again on a new port, and the same search's proposals reach it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from llm_fixtures import ToyCoderServer, build_tiny_model, serve_command

from evo.errors import EvoError
from evo.llm.client import LLMClient, LLMUnavailable, PreferredModel
from evo.llm.endpoints import Endpoint, Roster
from evo.llm.engine import _split_spec, check_llm_spec

MESSAGES = [{"role": "user", "content": "write a program"}]
TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")


class Registry:
    """A registry of endpoints by name that the test changes while the client runs (as Ray's named replicas
    change under a run): `Roster` reads it from its worker thread."""

    def __init__(self, **endpoints: Endpoint) -> None:
        self._lock = threading.Lock()
        self._endpoints = dict(endpoints)

    def read(self) -> Mapping[str, Endpoint]:
        with self._lock:
            return dict(self._endpoints)

    def set(self, name: str, endpoint: Endpoint | None) -> None:
        with self._lock:
            if endpoint is None:
                self._endpoints.pop(name, None)
            else:
                self._endpoints[name] = endpoint


@pytest.fixture
def servers() -> Iterator[list[ToyCoderServer]]:
    started: list[ToyCoderServer] = []
    yield started
    for server in started:
        try:
            server.stop()
        except OSError:
            pass


def _serve(started: list[ToyCoderServer]) -> ToyCoderServer:
    server = ToyCoderServer().start()
    started.append(server)
    return server


async def _until(client: LLMClient | PreferredModel, done: object, timeout_s: float = 10.0) -> list[str]:
    """Calls until `done()` holds (the registry is read by a thread: its change arrives between calls); the
    endpoints that answered."""
    answered: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s; answered: {answered}"
        try:
            answered.append((await client.chat(MESSAGES)).endpoint)
        except LLMUnavailable:
            pass  # every endpoint failed this call: the next one finds the registry read again
    return answered


def test_a_replica_at_a_new_url_replaces_the_old_one_with_its_weight(
    servers: list[ToyCoderServer], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _serve(servers), _serve(servers)
    registry = Registry(**{"evo-llm-0": Endpoint(a.url, "toy-coder", 3.0), "evo-llm-1": Endpoint(b.url, "toy-coder")})
    # Read again only after a failure (retry_s=0: at once): the move is learnt from the failure, not a timer.
    client = LLMClient([], roster=Roster(registry.read, what="the test's registry", refresh_s=3600, retry_s=0),
                       retries=2, backoff_s=0.01, cooldown_s=60)
    caplog.set_level(logging.WARNING, logger="evo.llm")

    async def scenario() -> None:
        await _until(client, lambda: a.calls and b.calls)
        a.stop()  # the replica dies ...
        servers.remove(a)
        moved = _serve(servers)  # ... and comes back on another port, under the same name
        registry.set("evo-llm-0", Endpoint(moved.url, "toy-coder", 1.0))  # its registry weight is ignored
        answered = await _until(client, lambda: moved.calls >= 3)
        assert a.url not in answered[-3:] and moved.url in answered
        assert {e.url: e.weight for e in client.endpoints} == {moved.url: 3.0, b.url: 1.0}, "the weight was kept"
        # A replica that stops for good leaves the ensemble; one that is added joins it.
        b.stop()
        servers.remove(b)
        registry.set("evo-llm-1", None)
        await _until(client, lambda: [e.url for e in client.endpoints] == [moved.url])
        c = _serve(servers)
        registry.set("evo-llm-2", Endpoint(c.url, "toy-coder", 2.0))
        assert client.roster is not None and client.roster.refresh()  # a refresh due by the clock, run now
        await _until(client, lambda: c.calls >= 1)
        assert {e.url: e.weight for e in client.endpoints} == {moved.url: 3.0, c.url: 2.0}
        await client.aclose()

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert f"LLM endpoint evo-llm-0 replaced: {a.url} -> {registry.read()['evo-llm-0'].url} (weight 3 kept); " \
           "requests go to the new URL" in lines
    assert any(line.startswith("LLM endpoint evo-llm-1 (") and "dropped" in line for line in lines)
    assert any(line.startswith("LLM endpoint evo-llm-2 added") for line in lines)


def test_an_outage_ends_when_a_replacement_is_registered_not_after_the_pause(servers: list[ToyCoderServer]) -> None:
    only = _serve(servers)
    registry = Registry(**{"evo-llm-0": Endpoint(only.url, "toy-coder")})
    client = LLMClient([], roster=Roster(registry.read, what="the test's registry", refresh_s=3600, retry_s=0),
                       retries=1, backoff_s=0.01, pause_s=60, max_pause_s=60)

    async def scenario() -> float:
        only.stop()
        servers.remove(only)
        with pytest.raises(LLMUnavailable):
            await client.chat(MESSAGES)  # the outage starts: later calls wait 60 s before trying again
        assert client.in_outage
        moved = _serve(servers)
        registry.set("evo-llm-0", Endpoint(moved.url, "toy-coder"))
        start = time.monotonic()
        reply = await client.chat(MESSAGES)
        assert reply.endpoint == moved.url and not client.in_outage
        await client.aclose()
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 10, "the call waited out the outage's pause instead of trying the new URL"


def test_a_model_arm_keeps_its_model_when_the_list_changes_under_it(servers: list[ToyCoderServer]) -> None:
    big, small = ToyCoderServer(model="big").start(), ToyCoderServer(model="small").start()
    servers += [big, small]
    registry = Registry(**{"evo-llm-0": Endpoint(big.url, "big"), "evo-llm-1": Endpoint(small.url, "small")})
    roster = Roster(registry.read, what="the test's registry", refresh_s=3600, retry_s=0)
    client = LLMClient([], roster=roster, retries=1, backoff_s=0.01)
    small_arm = PreferredModel(client, "small", [1])

    async def scenario() -> None:
        other = ToyCoderServer(model="big").start()
        servers.append(other)
        registry.set("evo-llm-0", None)  # "big" moves to the end of the list: index 1 is no longer "small"
        registry.set("evo-llm-9", Endpoint(other.url, "big"))
        assert roster.refresh()
        answered = await _until(small_arm, lambda: small.calls >= 4)
        assert set(answered) == {small.url} and big.calls == other.calls == 0
        await client.aclose()

    asyncio.run(scenario())


def test_the_ray_spec_and_the_roster_checks() -> None:
    assert _split_spec("ray") == ("ray", "") and _split_spec("ray:ray://head:10001") == ("ray", "ray://head:10001")
    if importlib.util.find_spec("ray") is not None:
        assert check_llm_spec("ray") == []  # Ray there; no connection made (the run's backend makes its own)
    with pytest.raises(EvoError, match="lists no LLM endpoint"):
        Roster(dict, what="an empty registry")
    with pytest.raises(EvoError, match="refresh_s > 0"):
        Roster(dict, what="a registry", refresh_s=0)
    # A registry that fails to answer keeps the last endpoints (a client always has one to fail over to).
    calls = iter([{"r": Endpoint("http://127.0.0.1:9", "m")}])
    roster = Roster(lambda: next(calls), what="a registry that goes away")
    assert not roster.refresh() and [e.url for e in roster.endpoints] == ["http://127.0.0.1:9"]


# ----- the whole thing: Ray, two `transformers serve` replicas, a real `evo run --llm ray` -----


def _endpoints_used(db: Path) -> list[str]:
    """The endpoint of every LLM call the run recorded so far (its operators' failures: the tiny model's
    replies are gibberish), oldest first."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT data FROM events WHERE kind = 'operator_failed' ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []  # the run has not made its store yet
    return [d["llm"]["endpoint"] for (raw,) in rows if (d := json.loads(raw)).get("llm", {}).get("endpoint")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_running_search_follows_a_replica_restarted_on_a_new_port(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
    missing = [m for m in ("fastapi", "uvicorn", "openai", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"`transformers serve` needs {', '.join(missing)}: pip install -e '.[dev]'")
    from evo.eval.backends.ray_llm import start_replicas, stop_replicas

    model_dir = build_tiny_model(tmp_path / "tiny-model")
    server = serve_command(model_dir, 0)
    server[server.index("--host") + 1], server[server.index("--port") + 1] = "0.0.0.0", "{port}"
    offline = ["env", "CUDA_VISIBLE_DEVICES=", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "OMP_NUM_THREADS=1",
               "HF_HUB_DISABLE_TELEMETRY=1", "TOKENIZERS_PARALLELISM=false"]
    ray.init(num_cpus=2, namespace="evo-tests", log_to_driver=False, include_dashboard=False)
    run = None
    try:
        first = start_replicas(str(model_dir), 2, gpus_per_replica=0, command=[*offline, *server],
                               start_timeout_s=180)
        (tmp_path / "run.toml").write_text(
            'llm_max_tokens = 8\nproposal_concurrency = 2\noperator_selection = "weights"\n'
            "[operators]\nconstants = 1.0\nllm_diff = 3.0\n")
        env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "EVO_LLM_REFRESH_S": "1"}
        db, log = tmp_path / "run" / "evo.db", tmp_path / "run.log"
        with log.open("wb") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "evo", "run", TOY, "--run-dir", str(tmp_path / "run"), "--budget", "100000",
                 "--llm", "ray", "--config", str(tmp_path / "run.toml"), "--quiet"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while not {e.url for e in first} <= set(_endpoints_used(db)):
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"both replicas were not used: {set(_endpoints_used(db))}"
            time.sleep(0.5)

        replica = ray.get_actor("evo-llm-0", namespace="evo")
        before = ray.get(replica.info.remote(), timeout=30)
        os.kill(before["pid"], signal.SIGKILL)  # the server crashes: its actor exits, and Ray starts both again
        deadline = time.monotonic() + 240
        while True:
            try:
                after = ray.get(replica.info.remote(), timeout=240)  # answers once restarted
                if after["url"] != before["url"]:
                    break
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                pass  # sent before Ray saw it die
            assert time.monotonic() < deadline, "the replica did not come back"
        assert after["restarted"] and after["healthy"] and after["weight"] == 1.0
        seen = len(_endpoints_used(db))
        deadline = time.monotonic() + 120
        while after["url"] not in _endpoints_used(db)[seen:]:
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the run never asked the new URL: {_endpoints_used(db)[seen:]}"
            time.sleep(0.5)
        assert run.poll() is None, "the same search, never restarted"
        run.send_signal(signal.SIGINT)  # a clean stop, as Ctrl-C: exit 130, the store whole
        assert run.wait(timeout=120) == 130, log.read_text()[-3000:]
        text = log.read_text()
        assert "stopped early" in text, text
        assert f"LLM endpoint evo-llm-0 replaced: {before['url']} -> {after['url']} (weight 1 kept)" in text, text
        assert before["url"] not in _endpoints_used(db)[seen:], "the dead URL was dropped"
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        try:
            stop_replicas()
        finally:
            ray.shutdown()


def test_a_bad_refresh_setting_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
    from evo.eval.backends.ray_llm import replica_roster

    monkeypatch.setenv("EVO_LLM_REFRESH_S", "often")
    with pytest.raises(EvoError, match=r"EVO_LLM_REFRESH_S='often' is not a number of seconds"):
        replica_roster()


_EVERYWHERE = '''
import sys, threading
sys.path.insert(0, {tests!r})
from http.server import ThreadingHTTPServer
from llm_fixtures import ToyCoderServer, _ToyCoderHandler

class OnEveryInterface(ToyCoderServer):  # the replica reports its node's address, not loopback
    def __init__(self, port):
        ThreadingHTTPServer.__init__(self, ("0.0.0.0", port), _ToyCoderHandler)
        self.model, self.calls, self._lock = "toy-coder", 0, threading.Lock()

OnEveryInterface(int(sys.argv[1])).serve_forever()
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_replicas_added_beside_the_running_ones_join_and_stopped_ones_leave(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
    from evo.eval.backends.ray_llm import replica_roster, start_replicas, stop_replicas

    script = tmp_path / "toy_server.py"
    script.write_text(_EVERYWHERE.format(tests=str(Path(__file__).parent)))
    command = [sys.executable, str(script), "{port}"]
    ray.init(num_cpus=2, namespace="evo-tests", log_to_driver=False, include_dashboard=False)
    try:
        first, = start_replicas("toy-coder", 1, gpus_per_replica=0, command=command, start_timeout_s=60, weight=2)
        with pytest.raises(EvoError, match="or add more beside them with --add"):
            start_replicas("toy-coder", 1, gpus_per_replica=0, command=command)
        client = LLMClient([], roster=replica_roster(refresh_s=0.5), retries=2, backoff_s=0.05)
        assert [(e.url, e.weight) for e in client.endpoints] == [(first.url, 2.0)]
        added, = start_replicas("toy-coder", 1, gpus_per_replica=0, command=command, start_timeout_s=60, add=True)
        assert added.url != first.url and ray.get_actor("evo-llm-1", namespace="evo") is not None

        async def scenario() -> None:
            await _until(client, lambda: added.url in {e.url for e in client.endpoints}, timeout_s=30)
            ray.kill(ray.get_actor("evo-llm-0", namespace="evo"), no_restart=True)  # stopped for good
            await _until(client, lambda: [e.url for e in client.endpoints] == [added.url], timeout_s=30)
            assert {(await client.chat(MESSAGES)).endpoint for _ in range(4)} == {added.url}
            await client.aclose()

        asyncio.run(scenario())
    finally:
        try:
            stop_replicas()
        finally:
            ray.shutdown()
