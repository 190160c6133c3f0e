"""One real run for the analysis tests (test_load, test_notebooks, test_report), made once per session.

The run is `evo run` on a copy of math/circle_packing_26 whose seeds are the task's own seed (with a
comment holding HTML markup on its first line) and that seed with `import ctypes` added, which the
auditor rejects: so the run has evaluations, admissions,
failures and an audit rejection with its reasons. While it runs, the test process reads it with
`evo.load` after every short wait for the process to end, and records what each read saw, so that
test_load can check that reading a run being written is consistent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 40
TASK_NAME = "circle_packing_26"
MARKUP = '# report check: </pre><script>document.title = "unescaped"</script> & <b>bold</b>\n'


@dataclass(frozen=True)
class ReportRun:
    """The run directory, its task folder, and what the reads during the run saw (one dict per read)."""

    run_dir: Path
    task_dir: Path
    live_reads: list[dict[str, object]]


def _task_copy(dst: Path) -> Path:
    """A copy of the task (and the family module its reference imports) with two seeds, one of them banned."""
    src = ROOT / "tasks" / "math"
    shutil.copy(src / "circle_packing.py", dst / "circle_packing.py")
    task = dst / TASK_NAME
    shutil.copytree(src / TASK_NAME, task)
    # A comment that HTML would take for markup, carried by every descendant: the report must escape it.
    seed = MARKUP + (task / "seed.py").read_text()
    (task / "seed.py").unlink()
    (task / "seeds").mkdir()
    (task / "seeds" / "a_seed.py").write_text(seed)
    # The static screen refuses ctypes (rules.py): a failed evaluation with an audit verdict and its reasons.
    (task / "seeds" / "b_ctypes.py").write_text("import ctypes\n" + seed)
    return task


def _observe(run_dir: Path) -> dict[str, object]:
    """What one read of the live run sees, and whether it holds together."""
    import evo

    # One commit for the three reads: without the snapshot, admissions read after the evaluations may
    # hold a program evaluated in between (seen before `Run.snapshot` existed).
    with evo.load(run_dir) as run, run.snapshot():
        ev = run.evaluations()
        progs = run.programs(["id", "status"])
        adm = run.admissions()
    finished = set(progs.loc[progs["status"].isin(["evaluated", "failed"]), "id"])
    return {
        "evaluations": len(ev),
        "numbered_in_order": ev["n"].tolist() == list(range(1, len(ev) + 1)),
        "evaluated_programs_finished": set(ev["program_id"]) <= finished,
        "admitted_were_evaluated": set(adm["program_id"]) <= set(ev["program_id"]),
    }


def make_report_run(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    """The session's run: made on the first call, reused after (its folder records the live reads)."""
    from evo.errors import EvoError

    base = tmp_path_factory.getbasetemp() / "report-run"
    record = base / "live_reads.json"
    run_dir, task_dir = base / "run", base / "tasks" / "math" / TASK_NAME
    if record.is_file():
        return ReportRun(run_dir, task_dir, json.loads(record.read_text()))
    shutil.rmtree(base, ignore_errors=True)
    (base / "tasks" / "math").mkdir(parents=True)
    task_dir = _task_copy(base / "tasks" / "math")
    proc = subprocess.Popen([sys.executable, "-m", "evo", "run", str(task_dir), "--run-dir", str(run_dir),
                             "--budget", str(BUDGET), "--islands", "2", "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads: list[dict[str, object]] = []
    while True:
        try:
            out, err = proc.communicate(timeout=0.5)  # waits for the run's end; reads the run meanwhile
            break
        except subprocess.TimeoutExpired:
            pass
        if not (run_dir / "evo.db").is_file():
            continue
        try:
            reads.append(_observe(run_dir))
        except EvoError as e:  # the store exists but `evo run` has not stored its config yet
            assert "no run config yet" in str(e), e
    assert proc.returncode == 0, f"evo run failed:\n{out}\n{err}"
    reads.append({**_observe(run_dir), "final": True})
    record.write_text(json.dumps(reads))
    return ReportRun(run_dir, task_dir, reads)
