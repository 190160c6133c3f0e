"""A task of one's own: a task folder outside the repository (under pytest's tmp_path, which the sandbox hides),
`evo task new`, and task.toml's mistakes told in one line. Real `evo` processes, real folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from evo.eval.sandbox import Limits, isolation_report, run_sandboxed

ROOT = Path(__file__).resolve().parent.parent
REPO_TASK = ROOT / "tasks" / "math" / "min_max_distance_16"


def evo(*args: str, cwd: Path | None = None, tasks_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EVO_TASKS_PATH"}
    if tasks_path is not None:
        env["EVO_TASKS_PATH"] = str(tasks_path)
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """One line starting with `error:`, exit code 2, no traceback; returns the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    text = (result.stdout + result.stderr).strip()
    assert "Traceback" not in text, text
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def outside_task(tmp_path: Path, group: str = "mine", name: str = "mm") -> Path:
    """A copy of a repo task in a folder of the test's own (0700, under /tmp: hidden by the sandbox)."""
    folder = tmp_path / group / name
    shutil.copytree(REPO_TASK, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def edit_toml(folder: Path, old: str, new: str) -> Path:
    toml = folder / "task.toml"
    text = toml.read_text()
    assert old in text, old
    toml.write_text(text.replace(old, new, 1))
    return toml


# ----------------------------------------------------------------------------- outside tasks are first-class


def test_a_task_folder_outside_the_repo_evaluates_by_path(tmp_path: Path) -> None:
    folder = outside_task(tmp_path)
    result = evo("eval", str(folder), str(folder / "seed.py"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["value"] == pytest.approx(18.0, rel=1e-6)  # the seed's 4 x 4 grid
    assert data["verdict"]["passed"]


def test_a_task_found_through_evo_tasks_path_evaluates_by_name(tmp_path: Path) -> None:
    folder = outside_task(tmp_path / "roots")
    listed = evo("tasks", tasks_path=tmp_path / "roots")
    assert listed.returncode == 0 and "mine/mm" in listed.stdout
    result = evo("eval", "mine/mm", str(folder / "seed.py"), tasks_path=tmp_path / "roots")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ratio_squared = 18" in result.stdout


@pytest.mark.skipif(not isolation_report().get("mount_namespace"), reason="needs the sandbox's mount namespace")
@pytest.mark.parametrize("mode", [0o755, 0o700], ids=["0755", "0700"])  # 0700: as root the sandbox uid reads a copy of it
def test_the_sandbox_shows_the_readable_folder_alone_and_read_only(tmp_path: Path, mode: int) -> None:
    shown = tmp_path / "task"
    shown.mkdir()
    (shown / "reference.py").write_text("X = 1\n")
    (shown / "reference.py").chmod(0o600 if mode == 0o700 else 0o644)
    shown.chmod(mode)
    (tmp_path / "secret.txt").write_text("do not read\n")  # beside the shown folder: stays hidden
    work = tmp_path / "work"
    work.mkdir()
    probe = (
        "import os, sys\n"
        "def attempt(f):\n"
        "    try:\n        f(); return 'ok'\n"
        "    except OSError as e:\n        return type(e).__name__\n"
        f"print('read', open({str(shown / 'reference.py')!r}).read().strip())\n"
        f"print('write', attempt(lambda: open({str(shown / 'new.py')!r}, 'w')))\n"
        f"print('sibling', attempt(lambda: open({str(tmp_path / 'secret.txt')!r}).read()))\n"
    )
    result = run_sandboxed([sys.executable, "-I", "-S", "-c", probe], work, Limits(timeout_s=20), readable=[shown])
    assert result.status == "ok", (result.reason, result.stderr_tail)
    lines = dict(line.split(" ", 1) for line in result.stdout_tail.splitlines())
    assert lines["read"] == "X = 1"
    assert lines["write"] != "ok" and not (shown / "new.py").exists()
    assert lines["sibling"] == "FileNotFoundError"
    # The folder the test made is the user's: the sandbox changed nothing of it.
    assert sorted(p.name for p in shown.iterdir()) == ["reference.py"]
    assert shown.stat().st_mode & 0o777 == mode
    assert [p.name for p in work.iterdir()] == [] and [p.name for p in tmp_path.iterdir() if p.name.startswith(
        "exposed-")] == []  # no copy left behind


def test_a_worker_resolves_an_outside_task_by_name_and_checks_its_hash(tmp_path: Path) -> None:
    """The job path: a job carries the task's name and folder hash; a worker finds the task through
    EVO_TASKS_PATH and refuses a folder that differs."""
    folder = outside_task(tmp_path / "roots")
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from evo.eval.families import family_of, task_hash\n"
        "from evo.eval.worker import JobError, _resolve\n"
        "from evo.program import Program\n"
        "from evo.task import load_task\n"
        f"task = load_task({str(folder)!r})\n"
        "job = family_of(task).job(task, Program(source='x = 1\\n'))\n"
        "base = {'id': '1', 'kind': 'candidate', 'task': job.task, 'files': job.files}\n"
        f"session = Path({str(tmp_path / 'session')!r})\n"
        "local = _resolve({**base, 'task_hash': job.task_hash}, session)\n"
        "try:\n"
        "    _resolve({**base, 'task_hash': 'f' * 32}, session)\n"
        "    refused = ''\n"
        "except JobError as e:\n"
        "    refused = str(e)\n"
        "print(json.dumps({'name': job.task, 'root': local['task_root'], 'hash': job.task_hash,\n"
        "                  'again': task_hash(load_task(job.task), fresh=True), 'refused': refused}))\n"
    )
    env = {**os.environ, "EVO_TASKS_PATH": str(tmp_path / "roots")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["name"] == "mine/mm" and got["root"] == str(folder.resolve())
    assert got["hash"] == got["again"]  # the same folder by path and by name
    assert "differs here from the engine's" in got["refused"]


# ----------------------------------------------------------------------------- evo task new


def test_task_new_writes_a_skeleton_that_evo_eval_accepts_as_written(tmp_path: Path) -> None:
    made = evo("task", "new", "my_task", "--dir", str(tmp_path / "tasks"))
    assert made.returncode == 0, made.stdout + made.stderr
    folder = tmp_path / "tasks" / "my_task"
    assert sorted(p.name for p in folder.iterdir()) == ["prompt.md", "reference.py", "seed.py", "task.toml"]
    toml = tomllib.loads((folder / "task.toml").read_text())
    # Every key present, so that a newcomer sees what can be set.
    assert set(toml) == {"family", "description", "objective", "metric", "evaluation", "descriptors", "best_known",
                         "audit"}
    assert set(toml["evaluation"]) == {"timeout_s", "memory_mb", "max_output_mb", "min_improvement"}
    assert toml["family"] == "math" and toml["audit"]["allow"]
    assert all(set(d) == {"name", "low", "high", "bins"} for d in toml["descriptors"])
    text = (folder / "task.toml").read_text()
    for key in ("family =", "objective =", "metric =", "timeout_s =", "memory_mb =", "[[descriptors]]", "[audit]"):
        line = next(i for i, line in enumerate(text.splitlines()) if line.startswith(key))
        above, this = text.splitlines()[line - 1], text.splitlines()[line]
        assert above.startswith("#") or "#" in this, f"{key} has no comment"

    result = evo("eval", str(folder), str(folder / "seed.py"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["verdict"]["passed"], data
    assert data["value"] > 1 / 3 - 1e-9  # the seed's grid, improved a little by its local search
    assert set(data["metrics"]) == {"min_distance", "boundary_fraction", "regularity"}

    # From inside the folder, as the reference's docstring says; and by name through EVO_TASKS_PATH.
    here = evo("eval", ".", "seed.py", cwd=folder)
    assert here.returncode == 0, here.stdout + here.stderr
    listed = evo("tasks", tasks_path=tmp_path / "tasks")
    assert listed.returncode == 0 and "my_task" in listed.stdout
    by_name = evo("eval", "my_task", str(folder / "seed.py"), tasks_path=tmp_path / "tasks")
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr


def test_the_skeletons_seed_gives_valid_children_under_the_non_llm_operators() -> None:
    """The numbers the task fixes (12 points, the square's sides) are marked `# evo: fixed`, and the seed has
    no other number whose change breaks it (the axis of a sum, a shape): every child of the `constants` and
    `params` operators is scored. Half were invalid before, most with points outside the square."""
    import asyncio
    import types

    import numpy as np

    from evo.operators.base import ProposalRequest
    from evo.operators.constants import ConstantMutation
    from evo.operators.params import ParamMutation, parse_parameters
    from evo.program import Program, source_text
    from evo.task_skeleton import REFERENCE_PY, SEED_PY

    assert [p.name for p in parse_parameters(SEED_PY)] == ["COLS", "STEPS", "STEP_SIZE", "SEED"]  # not N, LOW, HIGH
    reference = types.ModuleType("skeleton_reference")
    exec(REFERENCE_PY, reference.__dict__)  # noqa: S102 - the skeleton's own trusted reference
    rng = np.random.default_rng(7)
    changed = 0
    for op in (ConstantMutation(), ParamMutation()):
        for _ in range(60):
            child = source_text(asyncio.run(op.propose(ProposalRequest([Program(source=SEED_PY)], rng=rng)))[0].source)
            changed += child != SEED_PY
            assert "N = 12 " in child and "LOW = 0.0 " in child and "HIGH = 1.0 " in child
            module = types.ModuleType("child")
            exec(child.replace("STEPS = ", "STEPS = 30 or "), module.__dict__)  # noqa: S102 - fewer steps: speed
            scored = reference.evaluate(reference.run_candidate(module))
            assert scored["valid"], (scored["error"], child)
    assert changed > 100


def test_task_new_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine\n")
    assert_user_error(evo("task", "new", "taken", "--dir", str(tmp_path)), "exists already", "never overwrites")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
    assert_user_error(evo("task", "new", "../up", "--dir", str(tmp_path)), "not a plain folder name")
    (tmp_path / "file").write_text("")
    assert_user_error(evo("task", "new", "t", "--dir", str(tmp_path / "file")), "is a file, not a folder")


def test_task_new_then_evo_run_goes_end_to_end(tmp_path: Path) -> None:
    assert evo("task", "new", "demo", cwd=tmp_path).returncode == 0  # default --dir: the current folder
    folder = tmp_path / "demo"
    run_dir = tmp_path / "runs" / "demo"
    result = evo("run", str(folder), "--run-dir", str(run_dir), "--budget", "12", "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 / 12" in result.stdout
    shown = evo("show", str(run_dir))
    assert shown.returncode == 0 and "min_distance" in shown.stdout


# ----------------------------------------------------------------------------- task.toml mistakes


def test_a_missing_descriptor_key_is_one_line(tmp_path: Path) -> None:
    folder = outside_task(tmp_path)
    toml = edit_toml(folder, "high = 1.0\nbins = 10\n\n[[descriptors]]\nname = \"roundness\"",
                     "bins = 10\n\n[[descriptors]]\nname = \"roundness\"")
    assert_user_error(evo("eval", str(folder), str(folder / "seed.py")), str(toml), "key `high`",
                      "[[descriptors]] #1", "is missing", "a number")


def test_a_timeout_that_is_no_number_is_one_line(tmp_path: Path) -> None:
    folder = outside_task(tmp_path)
    toml = edit_toml(folder, "timeout_s = 10", 'timeout_s = "ten"')
    assert_user_error(evo("eval", str(folder), str(folder / "seed.py")), str(toml), "key `timeout_s`",
                      "[evaluation]", "'ten'", "a number of seconds", "timeout_s = 10")


def test_an_unknown_key_names_the_nearest_known_one(tmp_path: Path) -> None:
    folder = outside_task(tmp_path)
    toml = edit_toml(folder, 'metric = "ratio_squared"', 'metrc = "ratio_squared"')
    assert_user_error(evo("eval", str(folder), str(folder / "seed.py")), str(toml), "unknown key `metrc`",
                      "did you mean `metric`?")
    # A key of a table written at the top is told where it belongs.
    edit_toml(folder, 'metrc = "ratio_squared"', 'metric = "ratio_squared"\nmemory_mb = 64')
    assert_user_error(evo("eval", str(folder), str(folder / "seed.py")), "`memory_mb` belongs in the [evaluation]")


def test_evo_tasks_lists_a_broken_task_alone(tmp_path: Path) -> None:
    roots = tmp_path / "roots"
    outside_task(roots, "mine", "good")
    bad = outside_task(roots, "mine", "bad")
    edit_toml(bad, "high = 1.0\nbins = 10\n\n[[descriptors]]\nname = \"roundness\"",
              "bins = 10\n\n[[descriptors]]\nname = \"roundness\"")
    result = evo("tasks", tasks_path=roots)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    assert "math" in rows["mine/good"] and "ratio_squared" in rows["mine/good"]
    assert "BROKEN" in rows["mine/bad"]
    assert "math/circle_packing_26" in rows  # the repo's tasks are not hidden by it
    broken = [line for line in result.stdout.splitlines() if line.startswith("broken task mine/bad:")]
    assert len(broken) == 1 and "key `high`" in broken[0] and str(bad / "task.toml") in broken[0]


# ----------------------------------------------------------------------------- reference.py's mistakes are the task's


@pytest.mark.parametrize(("edit", "needles"), [
    (lambda ref: ref.write_text(ref.read_text().replace("def evaluate(", "def evaluat(")),
     ("defines no `evaluate`", "did you mean `evaluat`?")),
    (lambda ref: ref.write_text(ref.read_text().replace("def run_candidate(", "def run_it(")),
     ("defines no `run_candidate`",)),
    (lambda ref: ref.write_text(ref.read_text() + "\ndef broken(:\n"), ("does not parse", "line ")),
    (lambda ref: ref.unlink(), ("missing", "`evaluate`")),
], ids=["evaluate-renamed", "run_candidate-renamed", "syntax-error", "deleted"])
def test_a_broken_reference_is_the_tasks_error_before_anything_runs(tmp_path: Path, edit, needles) -> None:
    """Never a candidate's failure (`FAILED (invalid): validator raised AttributeError`) nor a run made in vain:
    `evo eval` and `evo run` refuse the task in one line naming reference.py, and `evo tasks` lists it broken."""
    folder = outside_task(tmp_path / "roots")
    edit(folder / "reference.py")
    seed = tmp_path / "seed.py"
    shutil.copy(REPO_TASK / "seed.py", seed)
    assert_user_error(evo("eval", str(folder), str(seed)), str(folder / "reference.py"), *needles)
    run_dir = tmp_path / "run"
    assert_user_error(evo("run", str(folder), "--run-dir", str(run_dir), "--budget", "3"), *needles)
    assert not run_dir.exists()
    listed = evo("tasks", tasks_path=tmp_path / "roots")
    broken = [line for line in listed.stdout.splitlines() if line.startswith("broken task mine/mm:")]
    assert len(broken) == 1 and all(n in broken[0] for n in needles), listed.stdout


def test_an_audit_allow_typo_names_the_key_and_the_check_meant(tmp_path: Path) -> None:
    folder = outside_task(tmp_path)
    toml = edit_toml(folder, 'allow = ["sleep_and_clock", "module_state"]', 'allow = ["sleep_and_clok"]')
    run_dir = tmp_path / "run"
    assert_user_error(evo("run", str(folder), "--run-dir", str(run_dir), "--budget", "3"),
                      str(toml), "`[audit] allow`", "'sleep_and_clok'", "did you mean `sleep_and_clock`?")
    assert not run_dir.exists()


def test_a_metric_name_that_evaluate_never_returns_is_named_with_the_one_meant(tmp_path: Path) -> None:
    """task.toml's metric differs from evaluate's key: the message says which key evaluate returned, in
    `evo eval` and in the error that stops `evo run` when every seed fails for it."""
    folder = outside_task(tmp_path)
    edit_toml(folder, 'metric = "ratio_squared"', 'metric = "ratio_sqared"')
    result = evo("eval", str(folder), str(folder / "seed.py"))
    said = " ".join(result.stdout.split())  # the terminal's line wrapping undone
    assert result.returncode == 1 and "evaluate returned no 'ratio_sqared' (task.toml `metric`)" in said
    assert "did you mean `ratio_squared`?" in said
    run = evo("run", str(folder), "--run-dir", str(tmp_path / "run"), "--budget", "3")
    assert run.returncode == 2 and "every seed failed" in run.stderr and "did you mean `ratio_squared`?" in run.stderr


def test_a_run_of_a_task_found_by_name_reads_without_evo_tasks_path(tmp_path: Path) -> None:
    """The run's store names the folder its task came from: `evo show` and `evo resume` need no $EVO_TASKS_PATH."""
    outside_task(tmp_path / "roots")
    run_dir = tmp_path / "run"
    made = evo("run", "mine/mm", "--run-dir", str(run_dir), "--budget", "3", "--quiet", tasks_path=tmp_path / "roots")
    assert made.returncode == 0, made.stdout + made.stderr
    shown = evo("show", str(run_dir))
    assert shown.returncode == 0 and "task mine/mm" in shown.stdout, shown.stdout + shown.stderr
    resumed = evo("resume", str(run_dir), "--budget", "5", "--quiet")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "5/5" in evo("show", str(run_dir)).stdout
