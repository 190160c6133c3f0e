"""The run directory survives a user's mistakes: real `evo` processes on real run directories.

Two resumes at once, a config error, a changed config on resume, a lower budget, a file given as the
run directory, Ctrl-C, a run whose seeds all failed: each ends in one line and a documented exit
code, and never breaks "a run of budget N ends with exactly N evaluations".
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError

TASK = "math/circle_packing_26"
TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic"


def evo(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, timeout=300,
                          **kw)  # type: ignore[call-overload]


def evo_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`evo ARGS` through the same entry point, in this process: for error paths, without the import cost."""
    from evo.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), int(exit_.value.code or 0), captured.out, captured.err)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "evo", *args, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str, started: bool = False) -> str:
    """One line (the last, when the run had `started` and printed its progress), exit code 2, no traceback."""
    text = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, (result.returncode, text)
    if started:
        text = text.splitlines()[-1]
    assert "Traceback" not in text and text.startswith("error:"), text
    line = " ".join(text.split())
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def evaluations(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def wait_for_evaluations(db: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait until the store holds `n` finished evaluations (the run's own commits are the event)."""
    deadline = time.monotonic() + timeout
    while evaluations(db) < n:
        assert proc.poll() is None, f"the run ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {n} evaluations in {timeout} s"
        time.sleep(0.02)


def consistent_count(db: Path) -> int:
    """Evaluations counted once each: rows, finished programs and `evaluated` events agree."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        n = con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        finished = con.execute("SELECT COUNT(*) FROM programs WHERE status IN ('evaluated', 'failed')").fetchone()[0]
        events = con.execute("SELECT COUNT(*) FROM events WHERE kind = 'evaluated'").fetchone()[0]
    assert n == finished == events, (n, finished, events)
    return n


def stored(db: Path, key: str) -> object:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return json.loads(con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def events(db: Path, kind: str) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [json.loads(d) for (d,) in con.execute("SELECT data FROM events WHERE kind = ? ORDER BY seq", (kind,))]


# -- 1. two resumes at once ------------------------------------------------------------------


def test_two_resumes_at_once_one_runs_the_other_is_told_who_holds_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert evo_here(capsys, "run", TASK, "--run-dir", str(run_dir), "--budget", "4", "--quiet").returncode == 0
    racers = [start("resume", str(run_dir), "--budget", "40") for _ in range(2)]
    results = [(p, p.wait(timeout=300), p.communicate()[1]) for p in racers]
    codes = sorted(code for _, code, _ in results)
    assert codes == [0, 2], [(code, err[-1500:]) for _, code, err in results]
    (winner, *_), (_, _, loser_err) = sorted(results, key=lambda r: r[1])
    assert "Traceback" not in loser_err
    assert f"in use by pid {winner.pid}" in loser_err and "evo resume" in loser_err, loser_err
    assert consistent_count(run_dir / "evo.db") == 40


def test_the_lock_is_held_while_an_engine_is_open_and_dropped_at_close(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    engine = Engine.create(run_dir, RunConfig(task=str(TOY), budget=3))
    with pytest.raises(EvoError, match=f"in use by pid {os.getpid()}"):
        Engine.open(run_dir)
    engine.close()
    Engine.open(run_dir).close()  # free again


# -- 2. validate everything before creating anything -------------------------------------------


def test_a_config_error_creates_nothing_and_the_fixed_config_then_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "evo.toml"
    cfg.write_text("budget = 6\n[operators]\nconstants = 1.0\nmagic = 2.0\n")
    assert_user_error(evo_here(capsys, "run", str(TOY), "--run-dir", str(run_dir), "--config", str(cfg)),
                      str(cfg), "unknown operator 'magic'", "known operators: constants")
    assert not run_dir.exists()
    cfg.write_text("budget = 6\n[operators]\nllm_diff = 1.0\n")  # an LLM operator without a model
    assert_user_error(evo_here(capsys, "run", str(TOY), "--run-dir", str(run_dir), "--config", str(cfg)), "llm_diff", "--llm")
    assert not run_dir.exists()
    cfg.write_text("budget = 6\n[operators]\nconstants = 1.0\n")
    result = evo_here(capsys, "run", str(TOY), "--run-dir", str(run_dir), "--config", str(cfg), "--quiet")
    assert result.returncode == 0, result.stderr
    assert consistent_count(run_dir / "evo.db") == 6


@pytest.mark.parametrize(("text", "needles"), [
    ('budget = "ten"\n', ["budget must be an integer, got 'ten'", "budget = 200"]),
    ("budgett = 10\n", ["unknown option(s) budgett", "did you mean 'budget'"]),
    ("duplicate_threshold = 1.5\n", ["duplicate_threshold must be <= 1.0, got 1.5"]),
    ('cells = "grd"\n', ["cells must be 'grid' or 'embedding', got 'grd'"]),
    ("[operators]\nconstants = \"lots\"\n", ["operators.constants must be a number"]),
    ('embedder = "word2vec"\n', ["embedder", "unknown embedder 'word2vec'"]),
])
def test_run_config_errors_name_the_file_the_key_and_what_is_expected(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needles: list[str]) -> None:
    cfg = tmp_path / "evo.toml"
    cfg.write_text(text)
    run_dir = tmp_path / "run"
    assert_user_error(evo_here(capsys, "run", TASK, "--run-dir", str(run_dir), "--config", str(cfg)),
                      str(cfg), *needles)
    assert not run_dir.exists()


# -- 3, 4, 6. Ctrl-C exits 130; a resume may change what can safely change -------------------------


def test_ctrl_c_exits_130_and_resume_with_a_changed_config_finishes_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    db = run_dir / "evo.db"
    proc = start("run", TASK, "--run-dir", str(run_dir), "--budget", "30", "--time-limit", "600")
    wait_for_evaluations(db, 6, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.communicate()[1][-2000:]
    done = consistent_count(db)
    assert 6 <= done < 30
    config = stored(db, "config")
    assert isinstance(config, dict) and config["time_limit_s"] is None  # it belonged to that invocation

    # What cannot change is refused, naming the key, and nothing is written.
    before = stored(db, "config")
    for text, key in (("islands = 4\n", "islands"), ('task = "math/circle_packing_32"\n', "task"),
                      ('embedder = "minilm"\n', "embedder"), ("seed = 7\n", "seed")):
        cfg = tmp_path / f"{key}.toml"
        cfg.write_text(text)
        assert_user_error(evo_here(capsys, "resume", str(run_dir), "--config", str(cfg)), f"resume cannot change {key}")
    assert stored(db, "config") == before
    assert_user_error(evo_here(capsys, "resume", str(run_dir), "--budget", "3"),
                      f"lower than the {done} evaluations this run has already done", f"--budget {done}")
    assert stored(db, "config") == before

    # What can change is applied, recorded as an event, and stored for later resumes.
    cfg = tmp_path / "change.toml"
    cfg.write_text('task = "math/circle_packing_26"\nislands = 2\nduplicate_threshold = 0.999\nworkers = 1\n'
                   "[operators]\nconstants = 1.0\nparams = 0.5\n")
    result = evo_here(capsys, "resume", str(run_dir), "--config", str(cfg), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert consistent_count(db) == 30
    (change,) = events(db, "config_changed")
    assert set(change["changes"]) == {"operators", "duplicate_threshold", "workers"}
    assert change["changes"]["operators"]["new"] == {"constants": 1.0, "params": 0.5}
    config = stored(db, "config")
    assert isinstance(config, dict)
    assert config["operators"] == {"constants": 1.0, "params": 0.5} and config["duplicate_threshold"] == 0.999
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        after = {op for (op,) in con.execute(
            "SELECT DISTINCT json_extract(data, '$.operator') FROM events WHERE kind = 'operator_call'"
            " AND seq > (SELECT MAX(seq) FROM events WHERE kind = 'config_changed')")}
    assert after and after <= {"constants", "params"}, after


def test_a_finished_budget_exits_0_and_a_resume_of_it_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert evo_here(capsys, "run", str(TOY), "--run-dir", str(run_dir), "--budget", "5", "--quiet").returncode == 0
    again = evo_here(capsys, "resume", str(run_dir), "--quiet")
    assert again.returncode == 0 and "budget spent" in again.stdout, again.stderr
    assert consistent_count(run_dir / "evo.db") == 5


# -- 5. a file, an unwritable directory ------------------------------------------------------------


def test_a_file_given_as_the_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    assert_user_error(evo_here(capsys, "run", TASK, "--run-dir", str(path)), str(path), "is a file")
    assert_user_error(evo_here(capsys, "run", TASK, "--run-dir", str(path / "run")), "cannot create the run directory")
    assert_user_error(evo_here(capsys, "resume", str(path)), "not an evo run directory")
    assert path.read_text() == "mine\n"


def _unwritable(path: Path) -> None:
    """Make `path` refuse new entries, also to root (for whom no permission bit does)."""
    if os.geteuid() != 0:
        path.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no way to refuse root a write")


def _writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o755)


def test_an_unwritable_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    _unwritable(parent)
    try:
        assert_user_error(evo_here(capsys, "run", str(TOY), "--run-dir", str(parent / "run")), "cannot create the run directory",
                          "give a --run-dir you can write to")
    finally:
        _writable(parent)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _unwritable(run_dir)  # an existing, empty, unwritable directory
    try:
        assert_user_error(evo_here(capsys, "run", str(TOY), "--run-dir", str(run_dir)), "cannot write to the run directory")
    finally:
        _writable(run_dir)
    assert evo_here(capsys, "run", str(TOY), "--run-dir", str(run_dir), "--budget", "3", "--quiet").returncode == 0
    _unwritable(run_dir)  # a finished run that cannot be written any more
    try:
        assert_user_error(evo_here(capsys, "resume", str(run_dir), "--budget", "5"), str(run_dir), "cannot write")
    finally:
        _writable(run_dir)
    assert consistent_count(run_dir / "evo.db") == 3


# -- 7. a run whose seeds all failed ----------------------------------------------------------------


def test_a_run_whose_seeds_all_failed_resumes_once_the_cause_is_fixed(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    task = tmp_path / "tasks" / "mine" / "quad"
    task.mkdir(parents=True)
    for name in ("task.toml", "reference.py"):
        (task / name).write_text((TOY / name).read_text())
    good = (TOY / "seeds" / "a_good.py").read_text()
    (task / "seed.py").write_text(good.replace("return [A, B, 0.9, -0.2]", "raise RuntimeError('not yet')"))
    run_dir = tmp_path / "run"
    db = run_dir / "evo.db"
    assert_user_error(evo_here(capsys, "run", str(task), "--run-dir", str(run_dir), "--budget", "8"),
                      "no valid program to mutate", f"evo resume {run_dir}", started=True)
    assert consistent_count(db) == 1
    (task / "seed.py").write_text(good)  # the cause, fixed
    result = evo_here(capsys, "resume", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert consistent_count(db) == 8  # the failed evaluation stays counted
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        seeds = con.execute("SELECT status FROM programs WHERE operator = 'seed' ORDER BY seq").fetchall()
    assert [s for (s,) in seeds] == ["failed", "evaluated"]
    assert len(events(db, "seeds_requeued")) == 1
