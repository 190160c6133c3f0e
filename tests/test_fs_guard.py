"""The filesystem guard (`evo/eval/fs_guard.py`) against real processes, on the CPU.

Every write attempt here targets a temporary directory made by the test ("a site-packages"), never the
project's environment. Each guarded process is a fresh child: the guard cannot be lifted, so it is never
applied to the pytest process itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from evo.eval import fs_guard, sandbox
from evo.eval.sandbox import Limits, isolation_report, run_sandboxed

REPO = Path(__file__).resolve().parents[1]
ABI, WHY_NOT = fs_guard.landlock_abi()
needs_landlock = pytest.mark.skipif(ABI < 1, reason=f"Landlock is unavailable here: {WHY_NOT}")

# Run in a child: guard itself with the allowed dirs, then try each action and report what happened.
GUARDED = """
import json, os, subprocess, sys
sys.path.insert(0, {repo!r})
from evo.eval import fs_guard
status = fs_guard.restrict_writes({allowed!r})
results = {{}}
def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except OSError as e:
        results[name] = type(e).__name__
{body}
print(json.dumps({{"status": status.to_dict(), "results": results}}))
"""


def run_guarded(allowed: list[Path], body: str, env: dict[str, str] | None = None) -> dict:
    code = GUARDED.format(repo=str(REPO), allowed=[str(p) for p in allowed], body=textwrap.dedent(body))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def dirs() -> Iterator[dict[str, Path]]:
    """A work dir, a TMPDIR and a stand-in for site-packages (with a file in it), under a 0755 root."""
    root = Path(tempfile.mkdtemp(prefix="evo-fsguard-test-"))
    root.chmod(0o755)
    made = {name: root / name for name in ("work", "tmp", "site")}
    for path in made.values():
        path.mkdir()
    (made["site"] / "existing.pth").write_text("original\n")
    (made["work"] / "mine").write_text("mine\n")
    yield made
    shutil.rmtree(root, ignore_errors=True)


@needs_landlock
def test_status_names_the_abi_and_what_is_writable(dirs: dict[str, Path]) -> None:
    out = run_guarded([dirs["work"], dirs["tmp"], dirs["work"] / "absent"], "")
    status = out["status"]
    assert status["active"] and status["abi"] == ABI and status["reason"] == ""
    assert status["writable"] == [str(dirs["work"]), str(dirs["tmp"])]  # the absent one is left out
    assert status["devices"] >= 1  # /dev/null at least
    assert status["summary"].startswith(f"filesystem isolation: landlock ABI {ABI}, writes only beneath")
    assert status["scoped"] == (["abstract_unix_socket", "signal"] if ABI >= 6 else [])


@needs_landlock
def test_writes_outside_the_allowed_dirs_are_refused(dirs: dict[str, Path]) -> None:
    site, work = dirs["site"], dirs["work"]
    body = f"""
        site, work = {str(site)!r}, {str(work)!r}
        attempt("create_pth", lambda: open(site + "/zz_speedup.pth", "w").write("import os\\n"))
        attempt("truncate", lambda: open(site + "/existing.pth", "w"))
        attempt("append", lambda: open(site + "/existing.pth", "a").write("import os\\n"))
        attempt("unlink", lambda: os.unlink(site + "/existing.pth"))
        attempt("rename_out_to_in", lambda: os.rename(site + "/existing.pth", work + "/stolen"))
        attempt("rename_in_to_out", lambda: os.rename(work + "/mine", site + "/mine.pth"))
        attempt("mkdir", lambda: os.mkdir(site + "/pkg"))
        attempt("symlink", lambda: os.symlink(work + "/mine", site + "/link.pth"))
        attempt("hardlink_in", lambda: os.link(work + "/mine", site + "/hard.pth"))
        attempt("os_truncate", lambda: os.truncate(site + "/existing.pth", 0))
    """
    out = run_guarded([work, dirs["tmp"]], body)
    assert out["status"]["active"]
    results = out["results"]
    assert results["create_pth"] == "PermissionError"  # the attack, refused outright
    refused = {"PermissionError", "OSError"}  # EACCES, or EXDEV for a link across the rule's border
    assert all(r in refused for r in results.values()), results
    assert sorted(p.name for p in site.iterdir()) == ["existing.pth"]
    assert (site / "existing.pth").read_text() == "original\n"
    assert (work / "mine").read_text() == "mine\n"


@needs_landlock
def test_writes_inside_the_work_dir_and_tmpdir_work(dirs: dict[str, Path]) -> None:
    work, tmp = dirs["work"], dirs["tmp"]
    body = f"""
        import tempfile
        work, tmp = {str(work)!r}, {str(tmp)!r}
        attempt("create", lambda: open(work + "/out.txt", "w").write("x"))
        attempt("truncate", lambda: open(work + "/mine", "w").write("new\\n"))
        attempt("mkdir", lambda: os.makedirs(work + "/a/b"))
        attempt("rename_within", lambda: os.rename(work + "/out.txt", work + "/a/b/out.txt"))
        attempt("rename_across", lambda: os.replace(work + "/a/b/out.txt", tmp + "/out.txt"))
        attempt("tempfile", lambda: tempfile.NamedTemporaryFile(delete=True).close())
        attempt("unlink", lambda: os.unlink(tmp + "/out.txt"))
        attempt("rmdir", lambda: os.removedirs(work + "/a/b"))
        attempt("dev_null", lambda: open("/dev/null", "w").write("x"))
    """
    out = run_guarded([work, tmp], body, env={"TMPDIR": str(tmp)})
    expected = {k: "ok" for k in out["results"]}
    if ABI < 2:  # no refer right: Landlock refuses every move across directories
        expected["rename_within"] = expected["rename_across"] = out["results"]["rename_across"]
    assert out["results"] == expected
    assert (work / "mine").read_text() == "new\n"
    assert sorted(p.name for p in tmp.iterdir()) == []


@needs_landlock
def test_the_guard_holds_in_grandchildren(dirs: dict[str, Path]) -> None:
    site, work = dirs["site"], dirs["work"]
    body = f"""
        grandchild = "open({str(site)!r} + '/zz.pth', 'w').write('x')"
        inside = "open({str(work)!r} + '/gc.txt', 'w').write('x')"
        results["grandchild_outside"] = subprocess.run([sys.executable, "-c", grandchild]).returncode
        results["grandchild_inside"] = subprocess.run([sys.executable, "-c", inside]).returncode
        pid = os.fork()
        if pid == 0:
            try:
                open({str(site)!r} + "/fork.pth", "w")
                os._exit(0)
            except PermissionError:
                os._exit(13)
        results["forked_outside"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    """
    out = run_guarded([work], body)
    assert out["results"] == {"grandchild_outside": 1, "grandchild_inside": 0, "forked_outside": 13}
    assert not (site / "zz.pth").exists() and not (site / "fork.pth").exists()
    assert (work / "gc.txt").exists()


@needs_landlock
def test_the_guard_is_per_process(dirs: dict[str, Path]) -> None:
    site = dirs["site"]
    guarded = run_guarded([dirs["work"]], f"attempt('write', lambda: open({str(site)!r} + '/a.pth', 'w'))")
    assert guarded["results"] == {"write": "PermissionError"}
    # A sibling that never called the guard, and this process, still write there.
    subprocess.run([sys.executable, "-c", f"open({str(site)!r} + '/b.pth', 'w').write('x')"], check=True)
    (site / "c.pth").write_text("x")
    assert sorted(p.name for p in site.iterdir()) == ["b.pth", "c.pth", "existing.pth"]


@pytest.mark.skipif(ABI < 6, reason=f"Landlock signal scoping needs ABI 6 (here: {ABI})")
def test_a_guarded_child_cannot_signal_its_parent(dirs: dict[str, Path]) -> None:
    # Signal 0 checks the permission and delivers nothing: this test process is never hit.
    body = """
        attempt("parent", lambda: os.kill(os.getppid(), 0))
        attempt("self", lambda: os.kill(os.getpid(), 0))
    """
    out = run_guarded([dirs["work"]], body)
    assert out["results"] == {"parent": "PermissionError", "self": "ok"}


def test_unavailable_landlock_is_reported_not_raised(dirs: dict[str, Path]) -> None:
    """A kernel without Landlock (ENOSYS, here by asking for a syscall number nothing implements): the status
    says so, nothing is restricted, nothing raises."""
    site = dirs["site"]
    code = f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from evo.eval import fs_guard
        fs_guard._LL_CREATE_RULESET = 1023
        status = fs_guard.restrict_writes([{str(dirs["work"])!r}])
        open({str(site)!r} + "/free.pth", "w").write("x")
        print(json.dumps(status.to_dict()))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert not status["active"] and status["abi"] == 0 and "ENOSYS" in status["reason"]
    assert status["summary"].startswith("filesystem isolation: unavailable (Landlock: ENOSYS")
    assert (site / "free.pth").exists()


def test_private_env_sends_every_cache_into_its_folder(tmp_path: Path) -> None:
    env = fs_guard.private_env(tmp_path / "p")
    assert {"HOME", "TMPDIR", "TRITON_CACHE_DIR", "TRITON_HOME", "TORCHINDUCTOR_CACHE_DIR", "CUDA_CACHE_PATH",
            "PYTORCH_KERNEL_CACHE_PATH", "XDG_CACHE_HOME"} <= set(env)
    assert all(Path(v).is_relative_to(tmp_path / "p") for v in env.values())
    assert (tmp_path / "p" / "tmp").is_dir() and (tmp_path / "p" / "home").is_dir()
    assert env["CUDA_CACHE_PATH"].endswith("/home/.nv/ComputeCache")


def test_refused_writes_are_recognised() -> None:
    assert fs_guard.looks_refused("runs: on a small shape: PermissionError: [Errno 13] Permission denied: '/x'")
    assert not fs_guard.looks_refused("dynamic:precision: differs at 3 of 4096 elements")


# ------------------------------------------------------------------------- the CPU sandbox


def _no_namespaces(disable_guard: bool = False) -> str:
    """The sandbox helper's code as on a machine where unshare() is refused (and, for the control run,
    where Landlock is missing too). With `_allocate_uid` patched to None as well, the candidate runs with this
    process's own uid: only Landlock is left between it and the file system."""
    code = sandbox._helper_code()
    extra = "def _h_unshare(libc, cfg):\n    return []\n"
    if disable_guard:
        extra += ("def _ll_restrict(writable, devices, scope):\n"
                  "    return {'abi': 0, 'error': 'disabled by the test', 'writable': [], 'devices': 0,"
                  " 'scoped': [], 'threads_left': 0}\n")
    assert code.endswith("_h_main()\n")
    return code[: -len("_h_main()\n")] + extra + "_h_main()\n"


@pytest.fixture
def bare_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No namespaces and no uid drop (as without root nor user namespaces): nothing but Landlock."""
    code = _no_namespaces()
    monkeypatch.setattr(sandbox, "_helper_code", lambda: code)
    monkeypatch.setattr(sandbox, "_allocate_uid", lambda: None)
    yield


@pytest.fixture
def open_site(dirs: dict[str, Path]) -> Path:
    """The stand-in site-packages made world-writable, as a careless install could leave it: file permissions
    alone would not stop the sandbox's dropped uid."""
    dirs["site"].chmod(0o777)
    return dirs["site"]


PTH_WRITER = """
import sys
open(sys.argv[1] + "/zz_speedup.pth", "w").write("import os\\n")
print("wrote")
"""


@needs_landlock
def test_sandbox_reports_the_guard(dirs: dict[str, Path]) -> None:
    assert isolation_report()["fs_guard"]
    result = run_sandboxed([sys.executable, "-c", "open('inside', 'w').write('x')"], dirs["work"], Limits(timeout_s=20))
    assert result.status == "ok", result
    assert result.fs_guard.startswith("filesystem isolation: landlock ABI")
    assert str(dirs["work"].resolve()) in result.fs_guard


@needs_landlock
def test_sandbox_without_namespaces_is_held_by_landlock(dirs: dict[str, Path], open_site: Path,
                                                        bare_sandbox: None, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [sys.executable, "-c", PTH_WRITER, str(open_site)]
    # Control: no namespaces and no Landlock, the write goes through (and the report says why).
    unguarded, guarded = _no_namespaces(disable_guard=True), _no_namespaces()
    monkeypatch.setattr(sandbox, "_helper_code", lambda: unguarded)
    control = run_sandboxed(argv, dirs["work"], Limits(timeout_s=20))
    assert control.status == "ok" and control.stdout_tail == "wrote\n", control
    assert control.fs_guard == "filesystem isolation: unavailable (disabled by the test)"
    (open_site / "zz_speedup.pth").unlink()
    # The same with Landlock: refused.
    monkeypatch.setattr(sandbox, "_helper_code", lambda: guarded)
    result = run_sandboxed(argv, dirs["work"], Limits(timeout_s=20))
    assert result.status == "error" and "PermissionError" in result.stderr_tail, result
    assert result.fs_guard.startswith("filesystem isolation: landlock")
    assert not (open_site / "zz_speedup.pth").exists()


MATH_HONEST = """
import numpy as np

def construct_points():
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(4.0))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)
"""

MATH_PTH = """
import numpy as np

with open({target!r}, "w") as fh:
    fh.write("import os\\n")

def construct_points():
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(4.0))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)
"""


@needs_landlock
@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "landlock_only"])
def test_math_candidate_writing_a_pth_fails_and_an_honest_one_passes(
        dirs: dict[str, Path], open_site: Path, namespaces: bool, request: pytest.FixtureRequest) -> None:
    from evo.eval.backends.local import evaluate_in_sandbox
    from evo.program import Program
    from evo.task import load_task

    if not namespaces:
        request.getfixturevalue("bare_sandbox")
    task = load_task("math/min_max_distance_16")
    scratch = dirs["work"]
    honest = evaluate_in_sandbox(task, Program(source=MATH_HONEST), scratch)
    assert honest.ok, honest
    target = str(open_site / "zz_speedup.pth")
    bad = evaluate_in_sandbox(task, Program(source=MATH_PTH.format(target=target)), scratch, screen=False)
    assert not bad.ok and bad.failure == "error", bad
    assert not Path(target).exists()
    if not namespaces:  # with a mount namespace the read-only view refuses first (EROFS)
        assert "dynamic:fs_guard" in bad.error and "Permission denied" in bad.error, bad.error


# ------------------------------------------------------------------------- the kernel worker's children


@pytest.fixture(scope="module")
def kernel_evaluator(rmsnorm_harness: object) -> object:
    return rmsnorm_harness


SEED = (REPO / "kernels" / "rmsnorm_fwd.py").read_text()


def _fs_guard_checks(report: dict) -> list[tuple[bool, str]]:
    return [(ok, reason) for name, ok, reason in report["checks"] if name == "dynamic:fs_guard"]


@needs_landlock
def test_kernel_child_runs_triton_interpreter_under_the_guard(kernel_evaluator, tmp_path: Path) -> None:
    """The honest seed (a Triton kernel, TRITON_INTERPRET=1) passes in a guarded child, which also writes to
    its TMPDIR and caches: all in its private folder."""
    source = SEED + textwrap.dedent("""
        import os as _os
        import tempfile as _tempfile
        _fd, _name = _tempfile.mkstemp()
        _os.close(_fd)
        _os.unlink(_name)
        assert _name.startswith(_os.environ["TMPDIR"]) and _os.environ["TRITON_CACHE_DIR"].startswith(
            _os.path.dirname(_os.environ["TMPDIR"]))
    """)
    (tmp_path / "candidate.py").write_text(source)
    report = kernel_evaluator.evaluate_path_sync(tmp_path)
    assert report["status"] == "ok" and report["passed"], report
    [(ok, reason)] = _fs_guard_checks(report)
    assert ok and reason.startswith(f"filesystem isolation: landlock ABI {ABI}")
    session = kernel_evaluator.pool.session
    assert f"{session}/job-" in reason  # the worker's own folder for the job, made from the job's contents
    assert not list(session.glob("result-*")) and not list(session.glob("*.private"))  # cleaned up
    assert not list(session.glob("job-*"))


@needs_landlock
def test_kernel_candidate_writing_a_pth_is_refused_and_flagged(kernel_evaluator, tmp_path: Path,
                                                               dirs: dict[str, Path]) -> None:
    target = dirs["site"] / "zz_speedup.pth"
    source = f"with open({str(target)!r}, 'w') as _fh:\n    _fh.write('import os\\n')\n\n" + SEED
    (tmp_path / "candidate.py").write_text(source)
    report = kernel_evaluator.evaluate_path_sync(tmp_path)
    assert report["status"] == "ok" and not report["passed"], report
    failed = [name for name, ok, _ in report["checks"] if not ok]
    assert failed == ["runs", "dynamic:fs_guard"], report["checks"]
    [(ok, reason)] = _fs_guard_checks(report)
    assert "PermissionError" in reason and str(target) in reason
    assert not target.exists()
    # The next child is not affected: the seed still passes.
    (tmp_path / "candidate.py").write_text(SEED)
    assert kernel_evaluator.evaluate_path_sync(tmp_path)["passed"]


@needs_landlock
def test_a_kernel_child_may_move_files_between_its_own_folders(kernel_evaluator, tmp_path: Path) -> None:
    """Triton moves each compiled kernel from a temporary folder into its cache: a rename across folders, which
    any stacked Landlock ruleset that does not grant it refuses with EXDEV (seen on the H100)."""
    source = SEED + textwrap.dedent("""
        import os as _os
        import tempfile as _tempfile
        _d = _tempfile.mkdtemp()
        _os.makedirs(_os.path.join(_d, "a"))
        _os.makedirs(_os.path.join(_d, "b"))
        open(_os.path.join(_d, "a", "x"), "w").close()
        _os.replace(_os.path.join(_d, "a", "x"), _os.path.join(_d, "b", "x"))
    """)
    (tmp_path / "candidate.py").write_text(source)
    report = kernel_evaluator.evaluate_path_sync(tmp_path)
    assert report["status"] == "ok" and report["passed"], report.get("error")
