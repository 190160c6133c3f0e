"""`evo ui`'s cost: a run's evaluations per minute with the view open against without it, and the view's
load times on a store of 1,000,000 programs (issue 18).

1. overhead: `evo run math/circle_packing_26 --budget B --workers 2` in a fresh run directory, in
   the order without, with, with, without (and again for more `--repeats`), so that a drift of the
   machine weighs on both alike. "with": once the run has stored its config, `evo ui RUN_DIR` serves it
   (with its defaults: at nice 19, pages refreshed every 5 s) and a headless Chromium keeps its page open
   (it polls as a person's would: the overview every refresh, the details every third); without Chromium
   or Playwright, an HTTP client asks the same endpoints on the same schedule, as the page does. A run's rate is read from its store: evaluations per minute between its 10th evaluation
   and its last (the start, the same for both, left out). The server's CPU seconds are reported too.
2. scale: `evo ui STORE` on a store of a million programs (`--store`, e.g. the one that
   `benchmarks/load_scale.py --keep DIR` builds; `--build DIR` builds one here the same way): wall time
   of each HTTP endpoint (the first, uncached answer, then a cached one), each answer recomputed in
   process with the cache cleared (median of 5), and the page in Chromium: from navigation to the
   heatmap drawn.

    .venv/bin/python benchmarks/ui_overhead.py --store /tmp/ls-store
    .venv/bin/python benchmarks/ui_overhead.py --budget 120 --repeats 1 --skip-scale      # a quick look

Prints tables and writes JSON (default benchmarks/results/ui_overhead.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def start_ui(*run_dirs: Path) -> tuple[subprocess.Popen[str], str]:
    """`evo ui` on a free port: the process and its address."""
    proc = subprocess.Popen([sys.executable, "-m", "evo", "ui", *map(str, run_dirs), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for _ in range(5):
        found = re.search(r"http://\S+/", proc.stderr.readline())
        if found:
            return proc, found.group(0)
    proc.kill()
    raise SystemExit("evo ui did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _procs() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU seconds)} of every process now (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            out[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def tree_cpu(root: int, leave_out: set[int]) -> float:
    """CPU seconds of the live descendants of `root`, less the subtrees of `leave_out`."""
    procs = _procs()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [c for c in children.get(root, []) if c not in leave_out]
    while todo:
        pid = todo.pop()
        total += procs[pid][1]
        todo += [c for c in children.get(pid, []) if c not in leave_out]
    return total


def rate_of(run_dir: Path, skip: int = 10) -> float:
    """Evaluations per minute between the `skip`-th evaluation and the last, from the store's events."""
    import evo

    with evo.load(run_dir) as run:
        ts = run.evaluations(reasons=False)["time"].map(lambda t: t.timestamp()).to_numpy()
    return (len(ts) - skip) / (ts[-1] - ts[skip - 1]) * 60.0


class Viewer:
    """The view kept open on a run: Chromium on the page, or an HTTP client on the page's schedule."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.ready = threading.Event()  # the page (or the first answer) is there: start-up is over
        self.requests = 0
        self.kind = "chromium" if CHROMIUM and _has_playwright() else "http"
        self.thread = threading.Thread(target=self._chromium if self.kind == "chromium" else self._http, daemon=True)
        self.thread.start()

    def _chromium(self) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.on("request", lambda _r: setattr(self, "requests", self.requests + 1))
            page.goto(self.url)
            page.wait_for_selector(".cell.filled", timeout=120_000)
            self.ready.set()
            while not self.stop.wait(0.5):
                page.wait_for_timeout(1)  # lets the page's timers and fetches run
            browser.close()

    def _http(self) -> None:
        with urllib.request.urlopen(self.url + "api/runs", timeout=60) as r:
            refresh = float(json.loads(r.read())[0].get("refresh_s", 2.0))
        held: dict[str, int] = {}  # the version of each answer held, sent back as ?since= (as the page does)
        last_details = -math.inf
        while not self.stop.is_set():
            paths = ["overview"]
            if time.monotonic() - last_details >= 3 * refresh:
                paths.append("details")
                last_details = time.monotonic()
            for path in paths:
                since = f"?since={held[path]}" if path in held else ""
                with urllib.request.urlopen(f"{self.url}api/runs/0/{path}{since}", timeout=60) as r:
                    held[path] = int(json.loads(r.read())["version"])
                self.requests += 1
            self.ready.set()
            self.stop.wait(refresh)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def one_run(budget: int, workers: int, with_view: bool, tmp: Path, i: int) -> dict[str, Any]:
    run_dir = tmp / f"run{i}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "evo", "run", "math/circle_packing_26", "--run-dir", str(run_dir),
                             "--budget", str(budget), "--workers", str(workers), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ui = viewer = None
    server_cpu = None
    if with_view:
        import evo
        from evo.errors import EvoError

        while proc.poll() is None:  # the view opens as soon as the run has stored its config
            try:
                evo.load(run_dir).close()
                break
            except EvoError:
                time.sleep(0.1)
        ui, url = start_ui(run_dir)
        viewer = Viewer(url)
        viewer.ready.wait(120)
        # CPU from here on is the view's steady cost (its start-up, imports and browser launch, left out)
        ready_server, ready_browser = cpu_seconds(ui.pid), tree_cpu(os.getpid(), {proc.pid, ui.pid})
        ready_at = time.perf_counter()
    before = _children_cpu()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    run_cpu = _children_cpu() - before  # the run's process and every process it waited for (its sandboxes)
    if proc.returncode != 0:
        raise SystemExit(f"evo run failed: {err[-2000:]}")
    requests = viewer_cpu = None
    steady: dict[str, float] | None = None
    if ui is not None and viewer is not None:
        server_cpu = cpu_seconds(ui.pid)
        steady = {"seconds": time.perf_counter() - ready_at, "server_cpu_s": server_cpu - ready_server,
                  "browser_cpu_s": tree_cpu(os.getpid(), {proc.pid, ui.pid}) - ready_browser}
        before = _children_cpu()
        viewer.close()  # Chromium and Playwright's driver exit and are waited for: their CPU lands here
        viewer_cpu = _children_cpu() - before
        requests = viewer.requests
        ui.terminate()
        ui.wait(30)
    return {"with_view": with_view, "evals_per_min": rate_of(run_dir), "wall_s": wall, "run_cpu_s": run_cpu,
            "server_cpu_s": server_cpu, "viewer_cpu_s": viewer_cpu, "viewer": viewer.kind if viewer else None,
            "viewer_requests": requests, "load_avg_1min": os.getloadavg()[0], "steady": steady}


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished (waited-for) descendants."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def overhead(budget: int, workers: int, repeats: int) -> dict[str, Any]:
    order = [False, True, True, False] * repeats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, with_view in enumerate(order):
            row = one_run(budget, workers, with_view, Path(tmp), i)
            rows.append(row)
            print(f"  run {i}: {'with' if with_view else 'without'} view: {row['evals_per_min']:.1f} evals/min, "
                  f"run CPU {row['run_cpu_s']:.1f} s, view CPU {row['server_cpu_s'] or 0:.2f} + "
                  f"{row['viewer_cpu_s'] or 0:.2f} s, load {row['load_avg_1min']:.1f}", flush=True)
    without = statistics.median(r["evals_per_min"] for r in rows if not r["with_view"])
    with_ = statistics.median(r["evals_per_min"] for r in rows if r["with_view"])
    watched = [r for r in rows if r["with_view"]]
    # What the view costs in CPU (server + browser) against what the run itself spent: on a machine the run
    # keeps busy, the most evaluations per minute the view can take away.
    view_cpu = sum(r["server_cpu_s"] + (r["viewer_cpu_s"] or 0.0) for r in watched)
    share = view_cpu / sum(r["run_cpu_s"] for r in watched)
    # The same once the page is up (start-up left out), per minute of watching: what a long run pays.
    seconds = sum(r["steady"]["seconds"] for r in watched)
    steady = {k: 60.0 * sum(r["steady"][k] for r in watched) / seconds for k in ("server_cpu_s", "browser_cpu_s")}
    run_cpu_per_min = 60.0 * sum(r["run_cpu_s"] for r in watched) / sum(r["wall_s"] for r in watched)
    return {"budget": budget, "workers": workers, "runs": rows, "without_evals_per_min": without,
            "with_evals_per_min": with_, "change_pct": 100.0 * (with_ - without) / without,
            "view_cpu_share_pct": 100.0 * share, "steady_cpu_per_min_s": steady, "run_cpu_per_min_s": run_cpu_per_min,
            "steady_server_share_pct": 100.0 * steady["server_cpu_s"] / run_cpu_per_min,
            "steady_browser_share_pct": 100.0 * steady["browser_cpu_s"] / run_cpu_per_min,
            "server_cpu_per_min_s": 60.0 * sum(r["server_cpu_s"] for r in watched) / sum(r["wall_s"] for r in watched)}


def timed_get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as r:
        n = len(r.read())
    return time.perf_counter() - t, n


def scale(store: Path) -> dict[str, Any]:
    from evo.report.ui.data import LiveRun

    out: dict[str, Any] = {"store": str(store)}
    t = time.perf_counter()
    live = LiveRun(store)
    out["open_s"] = time.perf_counter() - t
    out["programs"] = live.run.n_programs
    best = live.overview()["best_id"]
    recompute: dict[str, float] = {}
    for name, call in [("overview", live.overview), ("details", live.details),
                       ("program", lambda: live.program(best)), ("lineage", lambda: live.lineage(best))]:
        times = []
        for _ in range(5):
            live._cache.clear()  # noqa: SLF001 - a recompute is what a moving run costs
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        recompute[name] = statistics.median(times)
    live.close()
    out["recompute_s"] = recompute
    ui, url = start_ui(store)
    try:
        http: dict[str, Any] = {}
        for name, path in [("page", ""), ("runs", "api/runs"), ("overview_first", "api/runs/0/overview"),
                           ("overview_cached", "api/runs/0/overview"), ("details_first", "api/runs/0/details"),
                           ("details_cached", "api/runs/0/details"), ("program", f"api/runs/0/program/{best}"),
                           ("lineage", f"api/runs/0/lineage/{best}")]:
            http[name] = dict(zip(("s", "bytes"), timed_get(url + path), strict=True))
        out["http"] = http
        if CHROMIUM and _has_playwright():
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                loads = []
                for _ in range(3):  # a fresh page each time; the server's cache is warm after the first
                    page = browser.new_page()
                    t = time.perf_counter()
                    page.goto(url)
                    page.wait_for_function("document.querySelectorAll('.cell.filled').length > 0 && "
                                           "document.querySelector('.failures tr') !== null", timeout=120_000)
                    loads.append(time.perf_counter() - t)
                    page.close()
                browser.close()
            out["page_load_s"] = loads
    finally:
        ui.terminate()
        ui.wait(30)
    return out


def build(run_dir: Path, size: int) -> None:
    from load_scale import Filler

    Filler(run_dir, min(4, os.cpu_count() or 1)).grow(size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of without, with, with, without")
    ap.add_argument("--store", type=Path, help="a run directory of ~1M programs for the scale part")
    ap.add_argument("--build", type=Path, help="build such a store here first (benchmarks/load_scale.py's filler)")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ui_overhead.json")
    args = ap.parse_args()
    result: dict[str, Any] = {
        "benchmark": "ui_overhead", "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg": list(os.getloadavg()), "chromium": CHROMIUM},
    }
    if not args.skip_overhead:
        print("overhead: evo run with and without the view open")
        ov = result["overhead"] = overhead(args.budget, args.workers, args.repeats)
        print(f"  median without {ov['without_evals_per_min']:.1f}, with {ov['with_evals_per_min']:.1f} evals/min: "
              f"{ov['change_pct']:+.1f}%; the view's CPU (server + browser) = {ov['view_cpu_share_pct']:.2f}% of the "
              f"run's, start-up included")
        print(f"  once the page is up, per minute watched: server {ov['steady_cpu_per_min_s']['server_cpu_s']:.2f} "
              f"CPU-s ({ov['steady_server_share_pct']:.2f}% of the run's CPU), browser "
              f"{ov['steady_cpu_per_min_s']['browser_cpu_s']:.2f} CPU-s ({ov['steady_browser_share_pct']:.2f}%)")
    if not args.skip_scale:
        store = args.store
        if args.build:
            build(args.build, args.size)
            store = args.build
        if store is None:
            print("scale: skipped (give --store DIR of ~1M programs, or --build DIR)")
        else:
            sc = result["scale"] = scale(store)
            print(f"scale: {sc['programs']:,} programs; open {sc['open_s']:.2f} s")
            print(f"  {'answer':<18}{'http s':>9}{'bytes':>10}")
            for name, h in sc["http"].items():
                print(f"  {name:<18}{h['s']:>9.3f}{h['bytes']:>10,}")
            print("  recomputed (median of 5): " + ", ".join(f"{k} {v:.3f} s" for k, v in sc["recompute_s"].items()))
            if "page_load_s" in sc:
                print("  page in Chromium, navigation to heatmap drawn: " + ", ".join(f"{s:.2f}" for s in
                                                                                      sc["page_load_s"]) + " s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
