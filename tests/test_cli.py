"""The `evo` command as a user types it: real subprocesses, real run directories."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")
SEED = ROOT / "tasks" / "math" / "circle_packing_26" / "seed.py"


def evo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """One clear message, exit code 2, no traceback; returns it."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    text = " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in text
    assert text.startswith("error:"), text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = evo("run", "math/circle_packing_26", "--run-dir", str(run_dir), "--budget", "20", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "20 / 20" in result.stdout
    return run_dir


def test_tasks_lists_the_math_tasks() -> None:
    result = evo("tasks")
    assert result.returncode == 0
    for name in ("math/circle_packing_26", "math/circle_packing_32", "math/min_max_distance_16"):
        assert name in result.stdout


def test_help_teaches_the_commands() -> None:
    result = evo("--help")
    assert result.returncode == 0
    for command in ("run", "resume", "show", "export", "eval", "tasks"):
        assert command in result.stdout


def test_an_empty_llm_is_refused_not_taken_for_none(tmp_path: Path) -> None:
    result = evo("run", "math/circle_packing_26", "--run-dir", str(tmp_path / "r"), "--llm", "")
    assert_user_error(result, "llm is empty")
    assert not (tmp_path / "r").exists()


def test_a_ray_address_without_the_ray_backend_is_refused(tmp_path: Path) -> None:
    """Else the run would go on this machine while its user believes it on the cluster."""
    result = evo("run", "math/circle_packing_26", "--run-dir", str(tmp_path / "r"), "--ray-address", "auto")
    assert_user_error(result, "ray_address 'auto' is for the Ray backend", "--backend ray")
    assert not (tmp_path / "r").exists()


def test_unknown_task(tmp_path: Path) -> None:
    result = evo("run", "math/no_such_task", "--run-dir", str(tmp_path / "r"))
    assert_user_error(result, "unknown task 'math/no_such_task'", "math/circle_packing_26")


@pytest.mark.parametrize(("given", "needle"), [
    ("circle_packing_26", "did you mean `math/circle_packing_26`?"),  # the name without its family
    ("math/circle_packng_26", "did you mean `math/circle_packing_26`"),  # a typo
    ("./no/such/folder", "./no/such/folder: no such task folder"),  # a path is a folder, not a name
])
def test_a_task_misnamed_gets_the_one_meant(tmp_path: Path, given: str, needle: str) -> None:
    assert_user_error(evo("run", given, "--run-dir", str(tmp_path / "r")), needle)
    assert not (tmp_path / "r").exists()


def test_bad_config_unknown_option(tmp_path: Path) -> None:
    cfg = tmp_path / "evo.toml"
    cfg.write_text("budgett = 10\n")
    result = evo("run", "math/circle_packing_26", "--run-dir", str(tmp_path / "r"), "--config", str(cfg))
    assert_user_error(result, "unknown option(s) budgett", "Known:")


def test_bad_config_not_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "evo.toml"
    cfg.write_text("budget = = 3\n")
    result = evo("run", "math/circle_packing_26", "--run-dir", str(tmp_path / "r"), "--config", str(cfg))
    assert_user_error(result, "not valid TOML")


def test_bad_config_value(tmp_path: Path) -> None:
    result = evo("run", "math/circle_packing_26", "--run-dir", str(tmp_path / "r"), "--budget", "0")
    assert_user_error(result, "budget must be >= 1")


def test_unknown_operator_in_config(tmp_path: Path) -> None:
    cfg = tmp_path / "evo.toml"
    cfg.write_text("[operators]\nconstants = 1.0\nmagic = 2.0\n")
    result = evo("run", "math/circle_packing_26", "--run-dir", str(tmp_path / "r"), "--config", str(cfg))
    assert_user_error(result, "magic")


def test_unreadable_seed(tmp_path: Path) -> None:
    task = tmp_path / "tasks" / "toy" / "broken"
    (task / "seeds").mkdir(parents=True)
    for name in ("task.toml", "reference.py"):
        (task / name).write_text((Path(TOY) / name).read_text())
    (task / "seeds" / "bad.py").write_bytes(b"\xff\xfe not utf-8 \x80")
    result = evo("run", str(task), "--run-dir", str(tmp_path / "r"))
    assert_user_error(result, "cannot read seed", "bad.py")


def test_run_dir_of_another_task(finished_run: Path) -> None:
    result = evo("run", "math/circle_packing_32", "--run-dir", str(finished_run))
    assert_user_error(result, "holds a run of task 'math/circle_packing_26'")


def test_run_dir_of_the_same_task_points_to_resume(finished_run: Path) -> None:
    result = evo("run", "math/circle_packing_26", "--run-dir", str(finished_run))
    assert_user_error(result, "evo resume")


def test_resume_of_a_directory_that_is_no_run(tmp_path: Path) -> None:
    assert_user_error(evo("resume", str(tmp_path)), "not an evo run directory")


def test_show_of_a_directory_that_is_no_run(tmp_path: Path) -> None:
    assert_user_error(evo("show", str(tmp_path)), "no run store")


@pytest.mark.parametrize("command", ["show", "resume", "report", "export"])
def test_store_that_is_not_sqlite(tmp_path: Path, command: str) -> None:
    (tmp_path / "evo.db").write_text("this is not a database" * 100)
    assert_user_error(evo(command, str(tmp_path)), "not an evo store")


def test_report_of_what_is_no_run_says_so(tmp_path: Path) -> None:
    assert_user_error(evo("report", str(tmp_path / "missing")), "no such run directory")
    (tmp_path / "afile").touch()
    assert_user_error(evo("report", str(tmp_path / "afile")), "is a file, not a run directory")
    assert_user_error(evo("report", str(tmp_path)), "not an evo run directory")


@pytest.mark.parametrize(("args", "needle"), [
    (["show", ".", "--top", "0"], "'--top': 0 is not in the range x>=1"),
    (["run", "math/circle_packing_26", "--workers", "two"], "'two' is not a valid integer"),
    (["run", "math/circle_packing_26", "--budgt", "3"], "Did you mean one of: '--budget'"),
], ids=["top-0", "workers-two", "flag-typo"])
def test_a_bad_flag_is_one_line_with_where_help_is(args: list[str], needle: str) -> None:
    result = evo(*args)
    assert len((result.stdout + result.stderr).strip().splitlines()) == 1, result.stdout + result.stderr
    assert f" {args[0]} --help` says more" in assert_user_error(result, needle)


def test_eval_missing_file() -> None:
    assert_user_error(evo("eval", "math/circle_packing_26", "/nonexistent/prog.py"), "cannot read")


def test_eval_prints_the_seed_score_as_json() -> None:
    result = evo("eval", "math/circle_packing_26", str(SEED), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["metric"] == "sum_radii"
    assert 2.0 < data["value"] < 2.5


def test_eval_of_a_failing_program_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def construct_packing():\n    return [[0.5, 0.5]] * 26, [0.6] * 26\n")
    result = evo("eval", "math/circle_packing_26", str(bad))
    assert result.returncode == 1
    assert "FAILED (invalid)" in result.stdout


def test_show_reads_a_finished_run(finished_run: Path) -> None:
    result = evo("show", str(finished_run), "--source")
    assert result.returncode == 0, result.stderr
    assert "20/20 evaluations" in " ".join(result.stdout.split())
    assert "best programs" in result.stdout and "archive" in result.stdout
    assert "def construct_packing" in result.stdout


def test_export_jsonl_and_parquet(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    assert evo("export", str(finished_run), "--out", str(out)).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["status"] in ("evaluated", "failed") for r in rows) == 20
    assert all("source" in r and "parents" in r for r in rows)
    pq = tmp_path / "p.parquet"
    assert evo("export", str(finished_run), "--format", "parquet", "--out", str(pq)).returncode == 0
    import pyarrow.parquet as parquet

    table = parquet.read_table(pq)
    assert table.num_rows == len(rows)
    assert set(table.column("id").to_pylist()) == {r["id"] for r in rows}


def test_publish_writes_audited_programs_with_provenance(finished_run: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    result = evo("publish", str(finished_run), "--top", "2", "--archive", str(archive))
    assert result.returncode == 0, result.stderr
    records = sorted((archive / "math" / "circle_packing_26").glob("*.json"))
    assert len(records) == 2
    for record in records:
        data = json.loads(record.read_text())
        assert data["task"] == "math/circle_packing_26" and data["verdict"]["passed"] is True
        assert data["verdict"]["level"] == "publish" and data["run_config"]["budget"] == 20
        source = record.with_suffix(".py").read_text()
        assert "def construct_packing" in source
    # the archive seeds a new run: the published file evaluates to its recorded score
    best = max(records, key=lambda r: json.loads(r.read_text())["score"])
    evaluated = evo("eval", "math/circle_packing_26", str(best.with_suffix(".py")), "--json")
    assert json.loads(evaluated.stdout)["value"] == pytest.approx(json.loads(best.read_text())["score"])


def test_eval_shows_the_verdict_and_json_carries_it() -> None:
    result = evo("eval", "math/circle_packing_26", str(SEED))
    assert result.returncode == 0, result.stderr
    assert "verdict (full): pass" in result.stdout
    data = json.loads(evo("eval", "math/circle_packing_26", str(SEED), "--json").stdout)
    assert data["family"] == "math" and data["verdict"]["passed"] is True and data["verdict"]["level"] == "full"


def test_eval_of_a_refused_program_names_the_failing_checks(tmp_path: Path) -> None:
    bad = tmp_path / "spawns.py"
    bad.write_text("import subprocess\nsubprocess.run(['true'])\n\ndef construct_packing():\n    return [], []\n")
    result = evo("eval", "math/circle_packing_26", str(bad))
    assert result.returncode == 1
    text = " ".join(result.stdout.split())
    assert "FAILED (audit)" in text and "verdict (screen): FAIL (processes)" in text and "- processes: line 1" in text
    data = json.loads(evo("eval", "math/circle_packing_26", str(bad), "--json").stdout)
    assert data["failure"] == "audit" and data["verdict"]["reasons"][0]["check"] == "processes"


def test_eval_of_a_task_without_a_family_is_a_user_error(tmp_path: Path) -> None:
    task = tmp_path / "tasks" / "toy" / "nofamily"
    task.mkdir(parents=True)
    (task / "task.toml").write_text("\n".join(line for line in (Path(TOY) / "task.toml").read_text().splitlines()
                                             if not line.startswith("family")))
    (task / "reference.py").write_text((Path(TOY) / "reference.py").read_text())
    result = evo("eval", str(task), str(SEED))
    assert_user_error(result, str(task / "task.toml"), "`family` is missing", "kernels, math, training")


def test_resume_of_a_spent_run_says_there_is_nothing_to_do(finished_run: Path) -> None:
    """No evaluation, no lesson, no status tables: one line saying how to go on."""
    db = finished_run / "evo.db"
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    result = evo("resume", str(finished_run))
    assert result.returncode == 0, result.stderr
    assert "nothing to do: the budget of 20 is spent" in result.stdout and "--budget N" in result.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == before
