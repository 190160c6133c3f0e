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
from evo.program import MAIN_FILE

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


def _evaluate(ev: KernelEvaluator, source: str, tmp_path: Path) -> dict:
    (tmp_path / MAIN_FILE).write_text(source)
    return ev.evaluate_path_sync(tmp_path)


def test_corpus_is_large_enough() -> None:
    assert len(ALL) >= 10


@pytest.mark.parametrize("path", [p for p in ALL if p.stem not in ("loopback_socket", "unix_socket_path")],
                         ids=lambda p: p.stem)
def test_tampering_is_rejected_by_the_trusted_side(evaluator: KernelEvaluator, tmp_path: Path, path: Path) -> None:
    expect = expected_check(path)
    report = _evaluate(evaluator, path.read_text(), tmp_path)
    assert report["status"] == "ok", report
    failed = [n for n, ok, _ in report["checks"] if not ok]
    assert failed, f"{path.stem} passed the harness: {report['checks']}"
    if expect in CORRECTNESS_CHECKS:
        # Which correctness check an unwritten output fails depends on the CPU allocator (see test_dynamic).
        assert failed[0] in CORRECTNESS_CHECKS, report["checks"]
    else:
        assert failed[0] == expect, report["checks"]
    assert not report_to_result(report, 0.0).ok and report["score"] == 0.0


def test_honest_seed_passes_with_its_times_inside_the_clock_bound(evaluator: KernelEvaluator, tmp_path: Path) -> None:
    source = (Path(__file__).resolve().parents[2] / "kernels" / "rmsnorm_fwd.py").read_text()
    report = _evaluate(evaluator, source, tmp_path)
    assert report["passed"], report["checks"]
    names = {n for n, ok, _ in report["checks"] if ok}
    assert {"dynamic:time_bound", "dynamic:timed_outputs", "dynamic:thread_count", "dynamic:net_guard"} <= names
    bounds = report["bounds"]
    assert set(bounds) == {w["workload"] for w in report["workloads"]}
    for b in bounds.values():  # what the judge measured: the reported median sits within the clock's slack
        assert b["floor_s"] - b["slack_s"] <= b["claimed_s"] <= b["typical_s"] + b["slack_s"]


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[bytes], threading.Event]]:
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    arrived = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                received.append(conn.recv(1024) or b"<connected>")
            arrived.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received, arrived
    stop.set()
    thread.join()
    server.close()


def test_a_candidate_reaches_nothing_on_the_loopback(evaluator: KernelEvaluator, tmp_path: Path,
                                                     loopback_server: tuple[int, list[bytes], threading.Event]) -> None:
    port, received, arrived = loopback_server
    source = (TAMPER / "loopback_socket.py").read_text().replace("PORT = 0", f"PORT = {port}")
    report = _evaluate(evaluator, source, tmp_path)
    checks = {n: (ok, r) for n, ok, r in report["checks"]}
    status = checks.get("dynamic:net_guard")
    assert status is not None and status[0], f"the network guard is not active here: {status}"
    # The server is still up and reachable from here: nothing came from the candidate.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
        probe.sendall(b"probe")
    assert arrived.wait(10)
    assert received == [b"probe"], received
    assert not report["passed"]


def test_the_screen_is_not_needed_for_these_verdicts() -> None:
    """The corpus is rejected above with no screen at all; the screen, a first filter, catches most too."""
    from evo.audit import Level, audit

    caught = [p.stem for p in ALL if not audit(p.read_text(), Level.SCREEN, "kernels/rmsnorm_fwd").passed]
    assert len(caught) >= len(ALL) // 2, caught


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[tuple[str, list[bytes], threading.Event]]:
    path = str(tmp_path / "server.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    received: list[bytes] = []
    arrived = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                received.append(conn.recv(1024))
            arrived.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received, arrived
    server.close()


def test_a_candidate_reaches_no_unix_socket_path(evaluator: KernelEvaluator, tmp_path: Path,
                                                unix_server: tuple[str, list[bytes], threading.Event]) -> None:
    path, received, arrived = unix_server
    source = (TAMPER / "unix_socket_path.py").read_text().replace('SOCKET_PATH = ""', f"SOCKET_PATH = {path!r}")
    report = _evaluate(evaluator, source, tmp_path)
    assert not report["passed"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:  # the server is up: only the probe arrives
        probe.connect(path)
        probe.sendall(b"probe")
    assert arrived.wait(10)
    assert received == [b"probe"], received
