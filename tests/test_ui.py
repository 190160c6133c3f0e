"""`evo ui`: the real server (`evo ui ... --port 0`, uvicorn) on real runs made here.

HTTP-level tests run everywhere; the browser tests drive the system Chromium with Playwright and skip,
saying why, where either is missing. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from report_run import ROOT, make_report_run

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


def _skip_without_browser() -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium): browser tests skipped")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]'): browser tests skipped")


class Server:
    """`evo ui` in a child process, on the free port it reports."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "evo", "ui", *args, "--port", "0"], cwd=ROOT,
                                     stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.said: list[str] = []  # what it printed up to its address (a warning comes first)
        found = None
        while found is None and len(self.said) < 5:
            self.said.append(self.proc.stderr.readline())  # the address is printed once it listens
            found = re.search(r"http://\S+/", self.said[-1])
        if found is None:
            self.proc.kill()
            raise AssertionError(f"evo ui did not start: {''.join(self.said)}{self.proc.stderr.read()}")
        self.url = found.group(0)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
            body = r.read()
            return json.loads(body) if r.headers.get("content-type", "").startswith("application/json") else body

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90.0) -> Any:
    """Poll `check` (an HTTP read) every quarter second until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)  # the interval between polls, not a guess at how long the event takes
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_report_run(tmp_path_factory).run_dir


@pytest.fixture(scope="module")
def server(finished: Path) -> Iterator[Server]:
    s = Server(str(finished))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run still going on while the tests read it (stopped at the end of the module)."""
    run_dir = tmp_path_factory.mktemp("live") / "run"
    proc = subprocess.Popen([sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir", str(run_dir),
                             "--budget", "100000", "--workers", "1", "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import evo
    from evo.errors import EvoError

    def started() -> bool:
        try:
            with evo.load(run_dir) as run:
                return run.n_evaluations >= 2
        except EvoError:  # the store or its config is not written yet
            return proc.poll() is not None
    wait_for("the live run's first evaluations", started)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    yield run_dir
    proc.terminate()
    proc.wait(timeout=60)


# -- HTTP ---------------------------------------------------------------------------------------------
def test_overview_matches_the_analysis_api(server: Server, finished: Path) -> None:
    import evo

    runs = server.get("/api/runs")
    assert [r["task"] for r in runs] == ["circle_packing_26"] or runs[0]["metric"] == "sum_radii"
    ov = server.get("/api/runs/0/overview")
    with evo.load(finished) as run:
        elites = run.elites()
        best = run.best(1, ["id", "value"])
        assert ov["evaluations"] == run.n_evaluations
        assert ov["programs"] == run.n_programs
    assert {(c["island"], c["cell"], c["id"]) for c in ov["cells"]} == set(
        zip(elites["island"], elites["cell"], elites["program_id"], strict=True))
    assert ov["elites"] == len(elites)
    assert ov["best_id"] == best["id"].iloc[0]
    assert ov["best_value"] == pytest.approx(best["value"].iloc[0])
    values = [b["value"] for b in ov["best"]]
    assert values == sorted(values) and ov["best"][-1]["n"] <= ov["evaluations"]  # a maximised task: rises
    assert ov["progress"][-1]["n"] == ov["evaluations"]
    assert not ov["running"]


def test_program_lineage_and_details(server: Server, finished: Path) -> None:
    import evo

    ov = server.get("/api/runs/0/overview")
    pid = ov["best_id"]
    p = server.get(f"/api/runs/0/program/{pid}")
    with evo.load(finished) as run:
        assert p["source"] == run.source(pid)
        ancestry = run.ancestry(pid)
    assert p["verdict"] == "pass" and p["value"] == pytest.approx(ov["best_value"])
    assert "sum_radii" in p["metrics"]
    lin = server.get(f"/api/runs/0/lineage/{pid}")
    chain = [n["id"] for n in lin["chain"]]
    assert chain[-1] == pid and set(chain) <= set(ancestry.attrs["nodes"]["program_id"])
    assert all(n["diff"].startswith("---") or n["diff"] == "" for n in lin["chain"][1:])
    d = server.get("/api/runs/0/details")
    # The report run's second seed imports ctypes: an audit rejection, counted by its check.
    assert any(f["stage"] == "evaluation" and f["kind"] == "audit" for f in d["failures"])
    assert d["audit"] and all(a["count"] >= 1 for a in d["audit"])
    assert {r["name"] for r in d["credit"]["operator"]} >= {"seed"}
    assert d["suite"] is None  # not a kernel task


def test_read_only_and_unknown_ids(server: Server) -> None:
    for path in ("/api/runs/0/program/nope", "/api/runs/7/overview", "/api/runs/0/lineage/nope"):
        with pytest.raises(urllib.error.HTTPError) as e:
            server.get(path)
        assert e.value.code == 404
    for method in ("POST", "PUT", "DELETE"):
        req = urllib.request.Request(server.url + "api/runs/0/overview", method=method, data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 405
    assert b"evo" in server.get("/")


def test_cheap_beside_a_run(server: Server) -> None:
    """The server runs at the lowest CPU priority, tells pages how often to ask, and answers a page that
    already holds the current version in a few bytes."""
    assert os.getpriority(os.PRIO_PROCESS, server.proc.pid) == 19
    assert server.get("/api/runs")[0]["refresh_s"] == 5.0
    full = server.get("/api/runs/0/overview")
    held = server.get(f"/api/runs/0/overview?since={full['version']}")
    assert held == {"version": full["version"], "unchanged": True}
    assert server.get(f"/api/runs/0/overview?since={full['version'] - 1}") == full  # an older version: all of it
    details = server.get("/api/runs/0/details")
    assert server.get(f"/api/runs/0/details?since={details['version']}")["unchanged"]


def test_loopback_unless_allowed(finished: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "evo", "ui", str(finished), "--host", "0.0.0.0", "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr
    s = Server(str(finished), "--host", "0.0.0.0", "--allow-remote")
    try:
        assert "warning" in s.said[0] and "other machines" in s.said[0]
        assert s.get("/api/runs")[0]["metric"] == "sum_radii"
    finally:
        s.stop()


def test_a_port_in_use_is_one_line(server: Server, finished: Path) -> None:
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    proc = subprocess.run([sys.executable, "-m", "evo", "ui", str(finished), "--port", port], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == (f"error: port {port} on 127.0.0.1 is in use (another evo ui?): give another "
                                   "--port, or --port 0 for any free one")


def test_live_run_moves(live: Path) -> None:
    s = Server(str(live))
    try:
        first = s.get("/api/runs/0/overview")
        assert first["running"]
        later = wait_for("more evaluations", lambda: (o := s.get("/api/runs/0/overview"))["evaluations"]
                         > first["evaluations"] and o)
        assert later["progress"][-1]["n"] >= later["evaluations"] - 5
    finally:
        s.stop()


# -- the browser --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _skip_without_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_page_heatmap_and_elite_code(browser: Any, server: Server, finished: Path) -> None:
    import evo

    with evo.load(finished) as run:
        elites = run.elites()
        sources = {pid: run.source(pid) for pid in elites["program_id"]}
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(server.url)
    page.wait_for_function(f"document.querySelectorAll('.run .cell.filled').length === {len(elites)}", timeout=30_000)
    assert page.locator(".run .cell.filled").count() == len(elites)  # one tile per elite (two descriptors)
    cell = page.locator(".run .cell.filled").nth(len(elites) // 2)
    pid = cell.get_attribute("data-pid")
    cell.click()
    page.wait_for_function("document.querySelector('.program .code').textContent.length > 0", timeout=30_000)
    assert page.locator(".program .code").text_content() == sources[pid]
    assert pid[:16] in page.locator(".program .pid").text_content()
    assert "pass" in page.locator(".program .verdict").text_content()
    page.click(".show-lineage")
    page.wait_for_selector(".lineage .node", timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_finished_run.png"), full_page=True)
    # The page escapes what programs hold: the report run's seeds carry markup in a comment.
    assert page.title() == "evo ui"
    page.close()


def test_page_shows_a_new_admission_live(browser: Any, live: Path, finished: Path) -> None:
    s = Server(str(live), str(finished), "--refresh", "1")  # two runs side by side
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(s.url)
        page.wait_for_function("document.querySelectorAll('.run').length === 2 && "
                               "document.querySelectorAll('.run')[0].querySelectorAll('.cell.filled').length > 0",
                               timeout=30_000)
        before = page.eval_on_selector_all(".run:first-child .cell.filled", "els => els.map(e => e.dataset.pid)")
        # A new elite (a new cell or a better program in one) shown without reloading the page.
        page.wait_for_function(
            "before => [...document.querySelectorAll('.run:first-child .cell.filled')]"
            ".some(e => !before.includes(e.dataset.pid))", arg=before, timeout=90_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui_live_two_runs.png"), full_page=True)
        assert page.locator(".run").nth(0).locator(".state").text_content() == "running"
        page.close()
    finally:
        s.stop()


KERNEL_RUN = """
import sys
from evo.config import RunConfig
from evo.engine import Engine
from evo.eval.backends.kernel import report_to_result
from evo.store.lessons import add_lesson

engine = Engine.create(sys.argv[1], RunConfig(task="kernels/add_rmsnorm", budget=10))
try:
    seed = engine.store.pending_programs()[0]
    rows = [{"workload": "llama3_70b_decode", "time_s": 12.5e-6, "score": 0.6},
            {"workload": "llama3_8b_prefill", "time_s": 80e-6, "score": 0.7}]
    engine.record(seed, report_to_result({"status": "ok", "score": 0.65, "workloads": rows, "passed": True,
                                          "checks": []}, 0.1))
    add_lesson(engine.store, "rmsnorm", "kernels/add_rmsnorm", 1, "structured", "fusing the add helped",
               {"evaluations": 1})  # a lesson as the engine stores one (evo/lessons.py)
finally:
    engine.close()
"""


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel task's run whose seed the engine recorded from a harness report (no GPU here to time it).
    Made in a child process: the engine runs its own event loop, which Playwright's in this one forbids."""
    run_dir = tmp_path_factory.mktemp("kernel") / "rmsnorm"
    proc = subprocess.run([sys.executable, "-c", KERNEL_RUN, str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_kernel_suite_table(kernel_run: Path, finished: Path, request: pytest.FixtureRequest) -> None:
    s = Server(str(kernel_run), str(finished))
    try:
        suite = s.get("/api/runs/0/details")["suite"]
        assert suite["task"] == "kernels/add_rmsnorm"
        assert suite["best"]["sol_score"] == pytest.approx(0.65) and suite["seed"]["id"] == suite["best"]["id"]
        assert suite["best"]["time_us"] == pytest.approx({"llama3_70b_decode": 12.5, "llama3_8b_prefill": 80.0})
        # Each workload against its speed of light: add + RMSNorm is memory-bound, so T_SOL is the bytes it must
        # move (x, residual and weight read, y and h written, bf16) over H100 SXM's 3.35 TB/s.
        sol = {w["name"]: w for w in suite["workloads"]}
        assert set(sol) == {"llama3_70b_decode", "llama3_8b_prefill"} and suite["peaks"] == "H100 SXM"
        for name, (t, d), us in (("llama3_70b_decode", (256, 8192), 12.5), ("llama3_8b_prefill", (4096, 4096), 80.0)):
            t_sol_us = 2 * (4 * t * d + d) / 3.35e12 * 1e6
            assert sol[name]["t_sol_us"] == pytest.approx(t_sol_us)
            assert sol[name]["best_us"] == pytest.approx(us) and sol[name]["seed_us"] == pytest.approx(us)
            assert sol[name]["best_x_sol"] == pytest.approx(us / t_sol_us)
        assert s.get("/api/runs/1/details")["suite"] is None
        lessons = s.get("/api/runs/0/details")["lessons"]
        assert lessons["rows"][0][lessons["columns"].index("text")] == "fusing the add helped"
        assert s.get("/api/runs/1/details")["lessons"] is None  # no lessons table: nothing shown
        from evo.report.ui.data import LiveRun

        h200 = LiveRun(kernel_run, gpu="H200")  # another GPU's peaks: HBM3e at 4.8 TB/s
        try:
            sol = {w["name"]: w["t_sol_us"] for w in h200.details()["suite"]["workloads"]}
        finally:
            h200.close()
        assert sol["llama3_8b_prefill"] == pytest.approx(2 * (4 * 4096 * 4096 + 4096) / 4.8e12 * 1e6)
        if CHROMIUM is None:
            return
        browser = request.getfixturevalue("browser")
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(s.url)
        page.wait_for_selector("#suite tbody tr", timeout=30_000)
        row = page.locator("#suite tbody tr").first.text_content()
        assert "kernels/add_rmsnorm" in row and "0.65" in row and "12.5" in row
        shown = page.locator("#suite tr[data-workload='llama3_8b_prefill']")
        assert shown.locator(".t-sol").text_content() == "40.0674"  # 134,225,920 bytes at 3.35 TB/s
        assert shown.locator(".x-sol").text_content() == "1.99663×"  # 80 µs against it
        assert "H100 SXM" in page.locator("#suite").text_content()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui_kernel_suite.png"))
        assert "fusing the add helped" in page.locator(".run").nth(0).locator(".lessons").text_content()
        assert page.locator(".run").nth(1).locator(".lessons-box").is_hidden()
        page.close()
    finally:
        s.stop()
