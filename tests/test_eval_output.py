"""`evo eval` shows what the candidate printed: the last lines of its output and its traceback with the line
numbers of the user's own file (the name the user gave, not a temporary path), all of it with `--verbose`,
and never more than a bounded tail, however much the candidate prints. Real candidates in the real sandbox;
`evo eval` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from evo.eval.backends.local import OUTPUT_KEEP, candidate_output
from evo.eval.child import OUTPUT_LOG
from evo.eval.pipeline import evaluate_source
from evo.task import load_task

TASK = "math/circle_packing_26"

# Prints 30 numbered lines (to stdout, and one to stderr), then raises on line 10 from a helper on line 13.
CRASHES = '''import sys
import numpy as np


def helper(n):
    for i in range(n):
        print(f"step {i}: still packing")
    print("a warning on stderr", file=sys.stderr)
    big = n * 2
    raise ValueError(f"the packing went wrong at {big}")


def construct_packing():
    helper(30)
    return np.zeros((26, 2)), np.zeros(26)
'''

# About 50 MB on stdout, more than the sandbox's file-size limit (16 MB for this task).
FLOODS = '''import sys
import numpy as np


def construct_packing():
    line = "y" * 99 + "\\n"
    for _ in range(500_000):
        sys.stdout.write(line)
    return np.zeros((26, 2)), np.zeros(26)
'''

SUCCEEDS = '''import numpy as np


def construct_packing():
    print("placing 26 circles on a grid")
    xs, ys = np.meshgrid(np.arange(6) / 6 + 1 / 12, np.arange(5) / 5 + 0.1)
    centers = np.stack([xs.ravel(), ys.ravel()], axis=1)[:26]
    return centers, np.full(26, 0.05)
'''


def _evo_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", "eval", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_the_output_and_the_traceback_point_into_the_users_file(tmp_path: Path) -> None:
    (tmp_path / "packing.py").write_text(CRASHES)
    done = _evo_eval(TASK, "packing.py", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    text = done.stdout
    assert "FAILED (error)" in text and "ValueError: the packing went wrong at 60" in text
    assert "verdict (full): nothing found (the program failed before it was scored)" in text
    assert "step 29: still packing" in text and "a warning on stderr" in text
    assert "step 0: still packing" not in text  # only the tail without --verbose
    assert "--verbose for all" in text
    # The traceback names the user's file and its lines: the raise on line 10, the call on line 14.
    assert 'File "packing.py", line 10, in helper' in text
    assert 'File "packing.py", line 14, in construct_packing' in text
    assert "candidate.py" not in text and "evo/eval/child.py" not in text


def test_verbose_shows_the_whole_output(tmp_path: Path) -> None:
    (tmp_path / "packing.py").write_text(CRASHES)
    done = _evo_eval(TASK, "packing.py", "--verbose", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    for i in range(30):
        assert f"step {i}: still packing\n" in done.stdout
    assert 'File "packing.py", line 10, in helper' in done.stdout


def test_json_carries_the_output(tmp_path: Path) -> None:
    (tmp_path / "packing.py").write_text(CRASHES)
    done = _evo_eval(TASK, str(tmp_path / "packing.py"), "--json", cwd=tmp_path)
    data = json.loads(done.stdout)
    assert data["ok"] is False and "step 0: still packing" in data["output"]
    assert f'File "{tmp_path / "packing.py"}", line 10' in data["output"]


def test_a_passing_program_shows_what_it_printed(tmp_path: Path) -> None:
    (tmp_path / "packing.py").write_text(SUCCEEDS)
    done = _evo_eval(TASK, "packing.py", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sum_radii = 1.3" in done.stdout and "placing 26 circles on a grid" in done.stdout


def test_a_flood_of_output_keeps_a_bounded_tail(tmp_path: Path) -> None:
    result = evaluate_source(load_task(TASK), FLOODS, scratch=tmp_path)
    assert not result.ok and result.failure == "output_limit", result
    assert result.output is not None
    assert len(result.output.encode()) <= OUTPUT_KEEP + 4096  # the kept tail, a note and stderr's end
    assert "are not kept" in result.output and "y" * 99 in result.output
    assert "File too large" in result.output  # the traceback of the print that hit the limit is kept
    (tmp_path / "flood.py").write_text(FLOODS)
    done = _evo_eval(TASK, "flood.py", "--verbose", cwd=tmp_path)
    assert done.returncode == 1
    assert len(done.stdout) < OUTPUT_KEEP + 16_384
    assert 'File "flood.py", line 8, in construct_packing' in done.stdout
    # Without --verbose: the output's own last lines, then the traceback of the write that hit the limit.
    short = _evo_eval(TASK, "flood.py", cwd=tmp_path).stdout
    printed = short[short.index("--- what the program printed"):short.index("--- its traceback ---")]
    assert printed.count("y" * 99) >= 15 and "Traceback" not in printed, printed
    traceback = short[short.index("--- its traceback ---"):]
    assert 'File "flood.py", line 8, in construct_packing' in traceback and "File too large" in traceback


def test_the_log_is_read_without_following_a_link_or_blocking_on_a_fifo(tmp_path: Path) -> None:
    """The log lies in the candidate's folder: a link there to a file of ours shows nothing of that file,
    a FIFO does not hang the trusted side; the sandbox's tails stand in."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the engine's secret\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(secret, linked / OUTPUT_LOG)
    text = candidate_output(linked, "stdout tail\n", "stderr tail\n")
    assert "secret" not in text and "stdout tail" in text and "stderr tail" in text

    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / OUTPUT_LOG)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(candidate_output(fifo, "", "from stderr\n")), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert got == ["from stderr\n"]


def test_the_working_directory_is_taken_out_of_the_output(tmp_path: Path) -> None:
    (tmp_path / OUTPUT_LOG).write_text(f'  File "{tmp_path}/candidate.py", line 3, in f\n')
    assert candidate_output(tmp_path) == '  File "candidate.py", line 3, in f\n'


def test_a_kernel_candidates_traceback_points_into_the_users_file(tmp_path: Path) -> None:
    """Kernels run through the GPU harness (here Triton's interpreter on the CPU): where the harness hands back
    a traceback (a candidate that exits its process), it names the user's file and line, not the job folder."""
    seed = (Path(__file__).resolve().parents[1] / "kernels" / "rmsnorm_fwd.py").read_text()
    head = "def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:\n"
    assert head in seed
    source = seed.replace(head, head + "    raise SystemExit('the kernel gave up')\n")
    line = source.splitlines().index("    raise SystemExit('the kernel gave up')") + 1
    (tmp_path / "my_kernel.py").write_text(source)
    done = _evo_eval("kernels/rmsnorm_fwd", "my_kernel.py", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SystemExit: the kernel gave up" in done.stdout
    assert f'File "my_kernel.py", line {line}, in run' in done.stdout
    assert "job-" not in done.stdout and "candidate.py" not in done.stdout
    assert "verdict (full): pass" not in done.stdout


def test_what_was_printed_before_the_deadline_survives_the_kill(tmp_path: Path) -> None:
    """The log is written line by line: a candidate killed at its deadline leaves what it printed until then."""
    hangs = "def construct_packing():\n    print('about to search forever')\n    while True:\n        pass\n"
    result = evaluate_source(load_task(TASK), hangs, scratch=tmp_path)
    assert result.failure == "timeout", result
    assert "about to search forever" in (result.output or "")


def test_a_kernel_that_raises_an_ordinary_exception_shows_its_print_and_traceback(tmp_path: Path) -> None:
    """A `run()` that prints and raises a plain exception: the harness refuses it on `runs`, and the child's log
    (flushed before its quick exit) brings back the print and the traceback at the user's line."""
    seed = (Path(__file__).resolve().parents[1] / "kernels" / "rmsnorm_fwd.py").read_text()
    head = "def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:\n"
    body = "    print('tile plan: 4 x 128')\n    raise ArithmeticError('no tiles left')\n"
    source = seed.replace(head, head + body)
    line = source.splitlines().index("    raise ArithmeticError('no tiles left')") + 1
    (tmp_path / "my_kernel.py").write_text(source)
    done = _evo_eval("kernels/rmsnorm_fwd", "my_kernel.py", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tile plan: 4 x 128" in done.stdout
    assert "ArithmeticError: no tiles left" in done.stdout
    assert f'File "my_kernel.py", line {line}, in run' in done.stdout


def test_a_time_that_is_the_judges_clock_is_said_so() -> None:
    from evo.cli.app import out
    from evo.cli.evaluate import _workload_table

    row = {"hidden": False, "time_s": 3e-5, "spread": 0.01, "eager_s": 4e-5, "compile_s": None, "t_sol_s": 1e-5,
           "score": 0.3}
    report = {"device": "cuda:0", "peaks": "H100", "workloads": [{**row, "workload": "prefill", "clock_limited": 5},
                                                                 {**row, "workload": "decode", "clock_limited": 0}]}
    with out.capture() as shown:
        _workload_table("kernels/rmsnorm_fwd", report)
    text = shown.get()
    assert "time µs of prefill: the judge's clock saw more" in text and "decode:" not in text
    with out.capture() as shown:
        _workload_table("kernels/rmsnorm_fwd", {**report, "workloads": [{**row, "workload": "decode"}]})
    assert "judge's clock" not in shown.get()


def test_evo_eval_runs_one_rung_and_names_the_rungs_of_a_wrong_one(tmp_path: Path) -> None:
    """`--rung correctness` checks a kernel untimed (no SOL score to print, nothing timed in its report);
    a rung the family lacks is one line naming the family's rungs, before anything runs."""
    seed = Path(__file__).resolve().parents[1] / "kernels" / "rmsnorm_fwd.py"
    done = _evo_eval("kernels/rmsnorm_fwd", str(seed), "--rung", "correctness", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] and data["rung"] == "correctness" and data["value"] is None
    assert data["report"]["timed"] is False and all(w["time_s"] is None for w in data["report"]["workloads"])
    shown = _evo_eval("kernels/rmsnorm_fwd", str(seed), "--rung", "correctness", cwd=tmp_path).stdout
    assert "passed the correctness rung, unscored" in shown and "visible workloads checked" in shown, shown
    assert "(full level, correctness rung only): pass" in shown and "checks of later rungs did not run" in shown, shown
    hidden = [w["workload"] for w in data["report"]["workloads"] if w["hidden"]]
    assert hidden and not any(name in shown for name in hidden), shown  # not checked at this rung: not shown
    wrong = _evo_eval("kernels/rmsnorm_fwd", str(seed), "--rung", "short", cwd=tmp_path)
    assert wrong.returncode != 0
    assert "has no rung 'short'; its rungs: correctness, timing" in wrong.stdout + wrong.stderr
