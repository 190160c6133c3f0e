"""A newcomer's first hour, scripted: `evo task new`, edit the seed, `evo eval`, `evo run`, Ctrl-C,
`evo resume` with a changed config, `evo export --format parquet` read back with pandas, and the mistakes a
newcomer makes on the way, each answered by one line and the documented exit code.

Every step is the real `evo` command in its own process, on a task folder outside the repository."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

BUDGET = 40


def evo(*args: str, cwd: Path, check: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `evo ARGS` as a user would; assert its exit code when `check` is given."""
    done = subprocess.run([sys.executable, "-m", "evo", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})
    if check is not None:
        assert done.returncode == check, f"evo {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error a mistake gives: exit 2, one `error:` line on stderr, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def evaluations(run_dir: Path) -> int:
    with sqlite3.connect(f"file:{run_dir / 'evo.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])


def wait_for_evaluations(run_dir: Path, n: int, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    """Until the run has stored `n` evaluations (the store is the event a user would look at)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (run_dir / "evo.db").exists():
            try:
                if evaluations(run_dir) >= n:
                    return
            except sqlite3.OperationalError:  # the store is being created
                pass
        time.sleep(0.1)
    raise AssertionError(f"the run stored fewer than {n} evaluations in {timeout} s")


@pytest.mark.timeout(900)
def test_a_newcomers_first_search(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()

    # 1. A task of one's own, in a folder of one's own.
    evo("task", "new", "spread", "--dir", str(home), cwd=home)
    task = home / "spread"
    seed = task / "seed.py"
    assert {"task.toml", "reference.py", "seed.py", "prompt.md"} <= {p.name for p in task.iterdir()}

    # 2. Edit the seed (more local-search steps), and evaluate it: a score and a verdict.
    text = seed.read_text()
    assert "STEPS = 300" in text
    seed.write_text(text.replace("STEPS = 300", "STEPS = 600"))
    done = evo("eval", str(task), str(seed), "--json", cwd=home)
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["value"] > 0 and result["verdict"]["status"] == "pass"

    # 3. A search; Ctrl-C once it has stored a few evaluations: exit 130, `evo resume` continues.
    run_dir = home / "runs" / "spread"
    proc = subprocess.Popen([sys.executable, "-m", "evo", "run", str(task), "--run-dir", str(run_dir),
                             "--budget", str(BUDGET), "--workers", "2", "--quiet"], cwd=home,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_evaluations(run_dir, 5, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    stopped_at = evaluations(run_dir)
    assert 5 <= stopped_at < BUDGET

    # 4. Mistakes on the way, each one line and exit 2, and none of them harms the run.
    assert "lower than" in one_line_error(evo("resume", str(run_dir), "--budget", "1", cwd=home, check=None))
    not_a_dir = home / "notes.txt"
    not_a_dir.write_text("a file, not a run directory\n")
    one_line_error(evo("run", str(task), "--run-dir", str(not_a_dir), "--budget", "5", cwd=home, check=None))
    bad = home / "bad.toml"
    bad.write_text("[operators]\nconstnts = 1.0\n")
    assert "constants" in one_line_error(evo("resume", str(run_dir), "--config", str(bad), cwd=home, check=None))
    fixed = home / "cells.toml"
    fixed.write_text('cells = "embedding"\n')
    assert "cells" in one_line_error(evo("resume", str(run_dir), "--config", str(fixed), cwd=home, check=None))
    one_line_error(evo("export", str(run_dir), "--format", "parquet", "--out", str(home / "no" / "such" / "x.parquet"),
                       cwd=home, check=None))
    toml = task / "task.toml"
    good_toml = toml.read_text()
    toml.write_text(good_toml.replace("metric =", "metrc =", 1))
    assert "metric" in one_line_error(evo("eval", str(task), str(seed), cwd=home, check=None))
    toml.write_text(good_toml)
    assert evaluations(run_dir) == stopped_at

    # 5. Resume with a changed config (what may change: operator weights): recorded, and the budget is exact.
    changed = home / "run.toml"
    changed.write_text("[operators]\nconstants = 1.0\nparams = 2.0\n")
    evo("resume", str(run_dir), "--config", str(changed), "--quiet", cwd=home)
    assert evaluations(run_dir) == BUDGET
    with sqlite3.connect(f"file:{run_dir / 'evo.db'}?mode=ro", uri=True) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events")]
    assert "config_changed" in kinds

    # 6. The run as a table a notebook can use.
    out = home / "spread.parquet"
    evo("export", str(run_dir), "--format", "parquet", "--out", str(out), cwd=home)
    frame = pd.read_parquet(out)
    assert len(frame) >= BUDGET
    assert frame["value"].dtype.kind == "f" and frame["source"].map(type).eq(str).all()
    evaluated = frame.dropna(subset=["value"])
    assert len(evaluated) > 0 and evaluated["value"].max() >= result["value"] * 0.5
