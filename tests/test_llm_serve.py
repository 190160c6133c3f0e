"""The managed model server: a real child HTTP server started, waited for, and stopped with its group."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
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
