"""The managed model server: a real child HTTP server started, waited for, and stopped with its group;
`evo run --llm vllm:PATH` serving for the run's lifetime; clear errors without vllm or a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evo.errors import EvoError
from evo.llm.serve import ManagedServer

HEALTH_SERVER = """
import http.server, sys, time
time.sleep(float(sys.argv[2]))  # a model takes a while to load
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited


def test_server_is_waited_for_then_stopped_with_its_group(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedServer([sys.executable, "-c", HEALTH_SERVER, str(port), "1.0"], f"http://127.0.0.1:{port}",
                           start_timeout_s=30, log_path=tmp_path / "server.log")
    with server:
        assert server.healthy()
        assert server.proc is not None
        pid = server.proc.pid
    assert not server.healthy() and not alive(pid)


def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('CUDA out of memory while loading'); sys.exit(3)"]
    server = ManagedServer(argv, f"http://127.0.0.1:{free_port()}", log_path=tmp_path / "server.log")
    with pytest.raises(EvoError, match="exited with code 3.*CUDA out of memory"):
        server.start()


def test_server_that_never_gets_healthy_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedServer([sys.executable, "-c", HEALTH_SERVER, str(port), "60"], f"http://127.0.0.1:{port}",
                           start_timeout_s=2, log_path=tmp_path / "server.log")
    with pytest.raises(EvoError, match="did not answer"):
        server.start()
    assert server.proc is not None and server.proc.poll() is not None


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_llm_serve_without_vllm_names_the_extra() -> None:
    result = subprocess.run([sys.executable, "-m", "evo", "llm", "serve", "--model", "some/model"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install 'evo[vllm]'" in result.stderr


# ----- `evo run --llm vllm:PATH`: a managed server for the run's lifetime -----

TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")

# `evo` with `vllm serve` replaced by a stand-in (no vllm and no GPU here): `transformers serve`
# over the tiny model, an OpenAI-compatible server with /health as vllm's, or a server that
# crashes while loading. Everything else (the spec, ManagedLLM, the engine, the CLI) is real.
STANDIN = """
import sys
sys.path.insert(0, {tests!r})
import evo.llm.serve as serve
from llm_fixtures import serve_command

def vllm_command(model, port, tensor_parallel=1, extra=None, host=None, what=""):
    if port:
        with open({port_file!r}, "w") as f:
            f.write(str(port))
    if {crash!r}:
        return [sys.executable, "-c", "print('torch.OutOfMemoryError: CUDA out of memory'); raise SystemExit(1)"]
    return serve_command(model, port)

serve.vllm_command = vllm_command
from evo.cli import main
main(sys.argv[1:])
"""


def _evo_with_standin(tmp_path: Path, args: list[str], crash: bool = False) -> tuple[list[str], Path]:
    port_file = tmp_path / "port"
    code = STANDIN.format(tests=str(Path(__file__).parent), port_file=str(port_file), crash=crash)
    return [sys.executable, "-c", code, *args], port_file


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_config(tmp_path: Path) -> Path:
    config = tmp_path / "run.toml"
    config.write_text('llm_max_tokens = 8\noperator_selection = "weights"\n'
                      "[operators]\nconstants = 1.0\nllm_diff = 2.0\n")
    return config


@pytest.mark.slow  # tens of seconds on 2 cores: `make test-slow` (make test stays within CI's 20 minutes)
def test_run_with_vllm_spec_serves_for_the_run_and_stops_at_its_end(
    llm_server: tuple[str, Path], tmp_path: Path
) -> None:
    from llm_fixtures import server_env

    _, model_dir = llm_server
    run_dir = tmp_path / "run"
    argv, port_file = _evo_with_standin(tmp_path, [
        "run", TOY, "--run-dir", str(run_dir), "--budget", "20", "--llm", f"vllm:{model_dir}",
        "--config", str(_run_config(tmp_path)), "--quiet"])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=server_env())
    assert result.returncode == 0, result.stderr[-3000:]
    port = int(port_file.read_text())
    assert f"starting the model server (vllm serve {model_dir}) on http://127.0.0.1:{port}" in result.stderr
    assert "is ready after" in result.stderr
    assert not _listening(port)  # stopped with the run
    assert "=== evo: starting" in (run_dir / "llm-server.log").read_text()  # its log, in the run directory
    with sqlite3.connect(run_dir / "evo.db") as db:
        llm_calls = [json.loads(d)["llm"] for (d,) in db.execute(
            "SELECT data FROM events WHERE kind IN ('operator_failed', 'operator_call')"
            " AND json_extract(data, '$.llm') IS NOT NULL")]
    assert llm_calls and all(c["endpoint"] == f"http://127.0.0.1:{port}" for c in llm_calls)


@pytest.mark.slow  # tens of seconds on 2 cores: `make test-slow` (make test stays within CI's 20 minutes)
def test_ctrl_c_stops_the_run_and_its_server(llm_server: tuple[str, Path], tmp_path: Path) -> None:
    from llm_fixtures import server_env

    _, model_dir = llm_server
    argv, port_file = _evo_with_standin(tmp_path, [
        "run", TOY, "--run-dir", str(tmp_path / "run"), "--budget", "100000", "--llm", f"vllm:{model_dir}",
        "--config", str(_run_config(tmp_path)), "--quiet"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_env())
    try:
        deadline = time.monotonic() + 180
        while not (port_file.exists() and port_file.read_text() and _listening(int(port_file.read_text()))):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the managed server did not come up"
            time.sleep(0.2)
        time.sleep(2.0)  # some LLM calls
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]  # stopped early by Ctrl-C, as shells expect
    assert not _listening(int(port_file.read_text()))


def test_server_that_dies_while_loading_stops_the_run_with_its_log(tmp_path: Path) -> None:
    from llm_fixtures import server_env

    argv, _ = _evo_with_standin(tmp_path, [
        "run", TOY, "--run-dir", str(tmp_path / "run"), "--budget", "50", "--llm", "vllm:some/model",
        "--config", str(_run_config(tmp_path)), "--quiet"], crash=True)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=server_env())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: the model server exited with code 1 before it was ready" in result.stderr
    assert "CUDA out of memory" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
@pytest.mark.parametrize("spec", ["vllm:some/model", "vllm-offline:some/model"])
def test_run_without_vllm_names_the_extra_before_making_the_run(spec: str, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "evo", "run", TOY, "--run-dir", str(tmp_path / "run"),
                             "--llm", spec], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--llm {spec} needs the vllm package" in result.stderr and "pip install 'evo[vllm]'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_run_without_a_gpu_says_so_before_making_the_run(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text("#!/bin/sh\nexit 1\n")  # an installed vllm CLI, as far as PATH tells
    (bin_dir / "vllm").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "evo", "run", TOY, "--run-dir", str(tmp_path / "run"),
                             "--llm", "vllm:some/model", "--config", str(_tp_config(tmp_path))],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert "needs 2 CUDA GPU(s); 0 visible here" in text and "transformers:PATH" in text
    assert not (tmp_path / "run").exists()


def _tp_config(tmp_path: Path) -> Path:
    config = tmp_path / "tp.toml"
    config.write_text('llm_serve_args = ["--tensor-parallel-size", "2", "--max-model-len", "8192"]\n')
    return config


def test_run_help_names_every_llm_spelling() -> None:
    result = subprocess.run([sys.executable, "-m", "evo", "run", "--help"], capture_output=True, text=True,
                            timeout=120)
    text = "".join(result.stdout.split())  # click wraps lines, at hyphens too
    for needle in ("URL[#model][@weight]", "vllm:PATH", "transformers:PATH", "vllm-offline:PATH",
                   "server:URL[#model]"):
        assert needle in text, needle
