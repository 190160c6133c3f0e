"""kill -9 of a real `evo run` at random points, then `evo resume`: nothing lost, nothing twice."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

BUDGET = 48
TASK = "math/circle_packing_26"


def _evo(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "evo", *args, "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _evaluations(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _check_consistent(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        n = con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        finished = con.execute("SELECT COUNT(*) FROM programs WHERE status IN ('evaluated', 'failed')").fetchone()[0]
        events = con.execute("SELECT COUNT(*) FROM events WHERE kind = 'evaluated'").fetchone()[0]
        ids = con.execute("SELECT COUNT(id), COUNT(DISTINCT id) FROM programs").fetchone()
        evaluated_twice = con.execute(
            "SELECT COUNT(*) FROM (SELECT program_id FROM events WHERE kind = 'evaluated'"
            " GROUP BY program_id HAVING COUNT(*) > 1)").fetchone()[0]
    assert n == finished == events, (n, finished, events)
    assert ids[0] == ids[1]
    assert evaluated_twice == 0
    assert n <= BUDGET
    return n


def test_kill_9_at_five_random_points_then_resume(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    db = run_dir / "evo.db"
    # Five kill points spread over the run, each at a random evaluation count plus a random delay.
    targets = sorted(rng.sample(range(1, BUDGET - 4), 5))
    proc = _evo("run", TASK, "--run-dir", str(run_dir), "--budget", str(BUDGET), "--workers", "2")
    seen = []
    for target in targets:
        deadline = time.monotonic() + 120
        while _evaluations(db) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.2))
        assert proc.poll() is None, f"run ended early (seed {seed}): {proc.stderr.read().decode()[-2000:]}"
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        seen.append(_check_consistent(db))
        proc = _evo("resume", str(run_dir))
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert _check_consistent(db) == BUDGET, f"kill points {seen} (seed {seed})"
    with sqlite3.connect(db) as con:
        pending = con.execute("SELECT COUNT(*) FROM programs WHERE status = 'proposed'").fetchone()[0]
    assert pending == 0
    assert len(set(seen)) >= 3, f"kills landed at {seen}: not spread over the run (seed {seed})"


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    import signal

    run_dir = tmp_path / "run"
    db = run_dir / "evo.db"
    proc = _evo("run", TASK, "--run-dir", str(run_dir), "--budget", "30", "--workers", "2")
    deadline = time.monotonic() + 120
    while _evaluations(db) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read().decode() if proc.stderr else ""  # 128 + SIGINT
    stopped_at = _check_consistent(db)
    assert 8 <= stopped_at < 30
    with sqlite3.connect(db) as con:
        reason = con.execute("SELECT json_extract(data, '$.reason') FROM events WHERE kind = 'run_stopped'"
                             " ORDER BY seq DESC LIMIT 1").fetchone()[0]
    assert reason == "interrupted"
    assert _evo("resume", str(run_dir)).wait(timeout=300) == 0
    assert _check_consistent(db) == 30


def test_time_limit_stops_the_invocation(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _evo("run", TASK, "--run-dir", str(run_dir), "--budget", "100000", "--time-limit", "4")
    assert proc.wait(timeout=120) == 0
    done = _evaluations(run_dir / "evo.db")
    assert 0 < done < 100000
    with sqlite3.connect(run_dir / "evo.db") as con:
        reason = con.execute("SELECT json_extract(data, '$.reason') FROM events WHERE kind = 'run_stopped'"
                             ).fetchone()[0]
    assert reason == "time limit"
