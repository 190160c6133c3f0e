"""`evo.run_group.RunGroup`: runs side by side, stopped cleanly at a wall limit or on SIGTERM to the script."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from evo.run_group import RunGroup

# A stand-in for `evo run` under `-m evo`: writes a line when SIGINT stops it cleanly, ignores it if asked.
FAKE_EVO = '''
import signal, sys, time
stubborn = sys.argv[-1] == "stubborn"
if stubborn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("started", flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt:
    print("stopped cleanly", flush=True)
    sys.exit(130)
'''


def _group(tmp_path: Path) -> RunGroup:
    pkg = tmp_path / "evo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_EVO)
    return RunGroup(env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)


def _started(log: Path) -> None:
    deadline = time.monotonic() + 30
    while "started" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the process never started"
        time.sleep(0.05)


def test_runs_past_the_wall_limit_are_stopped_cleanly_and_a_stubborn_one_killed(tmp_path: Path) -> None:
    group = _group(tmp_path)
    group.start("polite", ["polite"], tmp_path / "polite.log")
    group.start("stubborn", ["stubborn"], tmp_path / "stubborn.log")
    for name in ("polite", "stubborn"):
        _started(tmp_path / f"{name}.log")
    t0 = time.monotonic()
    codes = group.wait(wall_limit_s=0.5, grace_s=2.0)
    assert time.monotonic() - t0 < 20 and group.interrupted
    assert "stopped cleanly" in (tmp_path / "polite.log").read_text() and codes["polite"] == 130
    assert codes["stubborn"] == -signal.SIGKILL and group.failed() == {"stubborn": -signal.SIGKILL}


def test_sigterm_to_the_script_stops_its_runs_and_lets_it_write_its_table(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "script.py"
    script.write_text(f'''
import sys
sys.path.insert(0, {str(repo)!r})
from pathlib import Path
from evo.run_group import RunGroup
group = RunGroup(env={{"PYTHONPATH": {str(tmp_path)!r}, "PATH": "/usr/bin:/bin"}}, cwd=Path({str(tmp_path)!r}))
group.start("a", ["a"], Path({str(tmp_path)!r}) / "a.log")
print("waiting", flush=True)
codes = group.wait(grace_s=10)
print("table", codes, group.interrupted, flush=True)
''')
    _group(tmp_path)  # the fake evo package beside the script
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
    _started(tmp_path / "a.log")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "table {'a': 130} True" in out, out
    assert "stopped cleanly" in (tmp_path / "a.log").read_text()
