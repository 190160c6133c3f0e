"""`ray job submit -- evo run ... --backend ray` against a real Ray head started by the test (`ray start --head`
with its dashboard, which serves job submission), on ports of its own and in a folder of its own."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install -e '.[dev]'")
pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def head() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head (2 CPUs, dashboard on 127.0.0.1); its job-submission address and the environment to reach it.
    Its temporary folder is short: Ray's socket paths must fit 107 bytes."""
    folder = tempfile.mkdtemp(prefix="evo-rj-", dir="/tmp")
    # Token authentication off: the test's own cluster, reached from this machine only.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    argv = [RAY, "start", "--head", "--block", "--num-cpus=2", f"--port={_free_port()}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={folder}", "--disable-usage-stats"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: stopped whole, and only it
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:  # no event tells when the dashboard listens: asked every 0.5 s
            assert proc.poll() is None, "`ray start --head` exited"
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, "the Ray dashboard did not answer in 120 s"
                time.sleep(0.5)
        yield address, env
    finally:
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break


def test_ray_job_submit_runs_evo_on_the_cluster(head: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = head
    run_dir = tmp_path / "run"
    entry = [sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir", str(run_dir), "--budget", "4",
             "--workers", "2", "--backend", "ray", "--quiet"]
    job = subprocess.run([RAY, "job", "submit", "--address", address, "--", *entry], env=env, capture_output=True,
                         text=True, timeout=300)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    assert "budget spent" in job.stdout, job.stdout[-2000:]  # the job's own output, tailed back
    with sqlite3.connect(f"file:{run_dir / 'evo.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 4
    listed = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "SUCCEEDED" in listed.stdout
