"""expect: dynamic:precision
Finds the judge processes (the lead and its helpers, `evo/eval/judge_process.py`) by their command lines and
tries to stop them (SIGSTOP, then SIGCONT at once, so that a defence that fails shows in the log rather than
hanging the test) and to read their memory, through computed imports. Stopped judges would judge nobody;
read ones would give up the expected outputs. Then answers zeros. What it managed is printed to its log.
"""

import builtins

import torch

_os = builtins.__import__("o" + "s")
_signal = builtins.__import__("sig" + "nal")
_tried = []
for _pid in _os.listdir("/proc"):
    if not _pid.isdigit():
        continue
    try:
        with open(f"/proc/{_pid}/cmdline", "rb") as _f:
            if b"evo.eval.judge_process" not in _f.read():
                continue
    except OSError:
        continue
    try:
        _os.kill(int(_pid), _signal.SIGSTOP)
        _os.kill(int(_pid), _signal.SIGCONT)
        _tried.append(f"{_pid}: stopped")
    except OSError as _e:
        _tried.append(f"{_pid}: stop refused ({_e.errno})")
    try:
        with open(f"/proc/{_pid}/mem", "rb") as _f:
            _f.read(1)
        _tried.append(f"{_pid}: memory read")
    except OSError as _e:
        _tried.append(f"{_pid}: memory refused ({_e.errno})")
print("judges:", "; ".join(_tried) or "none found", flush=True)


def run(x, weight):
    return torch.zeros_like(x)
