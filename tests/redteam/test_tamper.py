"""Candidates that tamper with the harness from inside their own process are rejected by the trusted side.

Each file in `tamper/` reaches the harness's modules by a route the old static screen did not name
(another module's `sys`, computed names, torch's internals) and patches what it finds: the comparison,
the event timing, the check log, the report, the outputs after their timing. They run here with the
screen bypassed (`KernelEvaluator.evaluate_path_sync` runs no screen): the judge, a process that never
imports a candidate, must reject each with the check its header names. On CPU, Triton's interpreter; the
same corpus runs on an H100 in `benchmarks/redteam_gpu.py`.
"""

from __future__ import annotations

import ast
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from evo.eval.backends.kernel import KernelEvaluator, report_to_result
from evo.eval.integrity import CORRECTNESS_CHECKS

TAMPER = Path(__file__).parent / "tamper"
ALL = sorted(TAMPER.glob("*.py"))


def expected_check(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    first = doc.splitlines()[0]
    assert first.startswith("expect: "), f"{path.name}: the docstring starts with 'expect: <check>'"
    return first.removeprefix("expect: ").strip()


@pytest.fixture(scope="module")
def evaluator(rmsnorm_harness: KernelEvaluator) -> KernelEvaluator:
    return rmsnorm_harness


def test_corpus_is_large_enough() -> None:
    assert len(ALL) >= 10


@pytest.mark.parametrize("path", [p for p in ALL if p.stem not in ("loopback_socket", "unix_socket_path",
                                                                   "stops_its_judges")],
                         ids=lambda p: p.stem)
def test_tampering_is_rejected_by_the_trusted_side(evaluator: KernelEvaluator, path: Path) -> None:
    expect = expected_check(path)
    report = evaluator.evaluate_source_sync(path.read_text())
    assert report["status"] == "ok", report
    failed = [n for n, ok, _ in report["checks"] if not ok]
    assert failed, f"{path.stem} passed the harness: {report['checks']}"
    if expect in CORRECTNESS_CHECKS:
        # Which correctness check an unwritten output fails depends on the CPU allocator (see test_dynamic).
        assert failed[0] in CORRECTNESS_CHECKS, report["checks"]
    else:
        assert failed[0] == expect, report["checks"]
    assert not report_to_result(report, 0.0).ok and report["score"] == 0.0


def test_honest_seed_passes_with_its_times_inside_the_clock_bound(evaluator: KernelEvaluator) -> None:
    source = (Path(__file__).resolve().parents[2] / "kernels" / "rmsnorm_fwd.py").read_text()
    report = evaluator.evaluate_source_sync(source)
    assert report["passed"], report["checks"]
    names = {n for n, ok, _ in report["checks"] if ok}
    assert {"dynamic:time_bound", "dynamic:timed_outputs", "dynamic:thread_count", "dynamic:net_guard"} <= names
    bounds = report["bounds"]
    assert set(bounds) == {w["workload"] for w in report["workloads"]}
    for b in bounds.values():  # what the judge measured: the reported median sits within the clock's slack
        assert 0 <= b["gap_s"] <= b["gap_high_s"] + b["slack_s"]


class Listener:
    """A server that records what reaches it: on the loopback (TCP) or at a socket file (unix)."""

    def __init__(self, server: socket.socket):
        self.server, self.received, self.arrived = server, [], threading.Event()
        server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                self.received.append(conn.recv(1024) or b"<connected>")
            self.arrived.set()

    def only_the_probe_arrives(self, probe: socket.socket) -> None:
        """The server is up and reachable from here: the probe arrives, and nothing came before it."""
        with probe:
            probe.connect(self.server.getsockname())
            probe.sendall(b"probe")
        assert self.arrived.wait(10)
        assert self.received == [b"probe"], self.received


@pytest.fixture
def loopback_server() -> Iterator[Listener]:
    listener = Listener(socket.create_server(("127.0.0.1", 0)))
    yield listener
    listener.server.close()


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[Listener]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "server.sock"))
    listener = Listener(server)
    yield listener
    server.close()


def test_a_candidate_reaches_nothing_on_the_loopback(evaluator: KernelEvaluator,
                                                     loopback_server: Listener) -> None:
    port = loopback_server.server.getsockname()[1]
    source = (TAMPER / "loopback_socket.py").read_text().replace("PORT = 0", f"PORT = {port}")
    report = evaluator.evaluate_source_sync(source)
    checks = {n: (ok, r) for n, ok, r in report["checks"]}
    status = checks.get("dynamic:net_guard")
    assert status is not None and status[0], f"the network guard is not active here: {status}"
    loopback_server.only_the_probe_arrives(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    assert not report["passed"]


def test_the_screen_is_not_needed_for_these_verdicts() -> None:
    """The corpus is rejected above with no screen at all; the screen, a first filter, catches most too."""
    from evo.audit import Level, audit

    caught = [p.stem for p in ALL if not audit(p.read_text(), Level.SCREEN, "kernels/rmsnorm_fwd").passed]
    assert len(caught) >= len(ALL) // 2, caught


def test_a_candidate_reaches_no_unix_socket_path(evaluator: KernelEvaluator,
                                                unix_server: Listener) -> None:
    path = unix_server.server.getsockname()
    source = (TAMPER / "unix_socket_path.py").read_text().replace('SOCKET_PATH = ""', f"SOCKET_PATH = {path!r}")
    report = evaluator.evaluate_source_sync(source)
    assert not report["passed"]
    unix_server.only_the_probe_arrives(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
