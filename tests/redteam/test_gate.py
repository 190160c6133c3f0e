"""The gate and the static checks on small programs: aliasing, allowances, task checks, dynamic results,
levels, reasons and the verdict's serialisation."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from evo.audit import DYNAMIC_CHECKS, Check, CheckResult, Level, Verdict, audit, register_dynamic, task_policy
from evo.audit.gate import catalogue
from evo.audit.static import static_checks
from evo.errors import EvoError
from evo.task import Task

KERNEL = "kernels/rmsnorm_fwd"
OK_BODY = """
def run(x, weight):
    return x
"""


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def failed(text: str, level: Level = Level.SCREEN, task=None, **kw) -> list[str]:
    return audit(src(text), level, task, **kw).failed


@pytest.mark.parametrize("code", [
    "import torch as t\ns = t.cuda.Stream()",
    "from torch.cuda import Stream\ns = Stream()",
    "from torch import cuda as c\nwith c.stream(None):\n    pass",
    "import torch\ns = getattr(torch, 'cuda').Stream()",
    "import torch\nc = getattr(torch, 'cu' + 'da')\ns = c.Stream()",
    "import importlib\nm = importlib.import_module('torch.cuda')\ns = m.Stream()",
    "import torch\nS = torch.cuda.Stream\ndef run(x, weight):\n    S()\n    return x",
    "import torch.cuda\ntorch.cuda.set_stream(torch.cuda.default_stream())",
    "from torch.cuda import *\ns = Stream()",
])
def test_side_streams_are_found_however_spelled(code: str) -> None:
    assert "side_streams" in failed(code + OK_BODY)


@pytest.mark.parametrize("code,check", [
    ("import time as clock\nclock.perf_counter = lambda: 0.0", "monkeypatching"),
    ("import torch\nsetattr(torch, 'allclose', lambda *a, **k: True)", "monkeypatching"),
    ("import torch\ntorch.__dict__['allclose'] = None", "monkeypatching"),
    ("import triton\ntriton.testing.do_bench = lambda *a, **k: 0.001", "monkeypatching"),
    ("import torch\ntorch.backends.cudnn.allow_tf32 = True", "precision_flags"),
    ("import torch\ntorch.set_float32_matmul_precision('high')", "precision_flags"),
    ("from torch.backends import cuda\ncuda.matmul.allow_fp16_reduced_precision_reduction = True", "precision_flags"),
    ("import os\nos.environ['TRITON_INTERPRET'] = '1'", "environment"),
    ("import os\nos.environ.update(CUDA_VISIBLE_DEVICES='1')", "environment"),
    ("e = eval\nx = e('1+1')", "dynamic_code"),
    ("import builtins\nf = getattr(builtins, 'exec')", "dynamic_code"),
    ("import sys\nf = sys._getframe(1).f_locals", "frame_walking"),
    ("import sys as s\ng = s._getframe", "frame_walking"),
    ("import sys\nsys.modules['torch'] = None", "import_tricks"),
    ("import sys\nsys.meta_path.insert(0, object())", "import_tricks"),
    ("import os\nos.fork()", "processes"),
    ("from subprocess import check_output as co\nco(['nvcc', '--version'])", "processes"),
    ("import multiprocessing as mp\nmp.Process(target=print).start()", "processes"),
    ("import urllib.request\nurllib.request.urlopen('http://x')", "network"),
    ("import _thread\n_thread.start_new_thread(print, ())", "threads"),
    ("import asyncio\nasyncio.run(asyncio.sleep(0))", "threads"),
    ("import cffi", "ctypes"),
    ("import torch\nk = torch.cuda.jiterator._create_jit_fn('template <typename T> T f(T x) { return x; }')", "native_code"),
    ("import cupy\nk = cupy.RawKernel('extern \"C\" __global__ void f() {}', 'f')", "native_code"),
    ("from numba import cuda\n@cuda.jit\ndef k(a):\n    pass", "native_code"),
    ("import torch\nf = torch.compile(lambda x: x)", "native_code"),
    ("import torch\ng = torch.cuda.CUDAGraph()", "cuda_graphs"),
    ("import torch\nclass P(torch.nn.Parameter):\n    pass", "tensor_subclass"),
    ("import torch\nfrom torch.overrides import TorchFunctionMode", "dispatch_override"),
    ("import torch\nlib = torch.library.Library('aten', 'IMPL')", "dispatch_override"),
    ("import time\ntime.sleep(0.01)", "sleep_and_clock"),
    ("import torch\ntorch.cuda._sleep(1000)", "sleep_and_clock"),
    ("import signal\nsignal.alarm(1)", "signals"),
    ("import weakref\nweakref.finalize(object(), print)", "signals"),
    ("class K:\n    def __del__(self):\n        pass", "signals"),
    ("import glob\nfiles = glob.glob('../*.py')", "file_reads"),
    ("text = open('/etc/hostname').read()", "file_reads"),
    ("from pathlib import Path\nt = Path(__file__).parent.read_text()", "file_reads"),
    ("open('cache.txt', 'a').write('1')", "file_writes"),
    ("import numpy as np\nnp.save('y.npy', np.zeros(3))", "file_writes"),
    ("import pathlib\npathlib.Path('/tmp/x').write_text('1')", "file_writes"),
    ("import tempfile\nd = tempfile.mkdtemp()", "file_writes"),
    ("import os\nos.chdir('/tmp')", "file_writes"),
    ("import torch\ntorch.cuda.memory._set_allocator_settings('expandable_segments:True')", "monkeypatching"),
    ("import torch\ntorch._C._cuda_setStream(0, 0, 0)", "ctypes"),
    ("import numpy\nnumpy.ctypeslib.as_array(0, (4,))", "ctypes"),
    ("import evo.eval.kernel_spec", "reference"),
    ("import evo_task_kernels_rmsnorm_fwd as r", "reference"),
    ("import sys\nref = sys.modules['evo_reference']", "reference"),
    ("import torch\nk = vars(torch)", "obfuscation"),
    ("import torch\nname = 'Stream'\nk = getattr(torch.cuda, name)", "obfuscation"),
    ("import codecs\nsrc = codecs.decode('vzcbeg bf', 'rot13')", "obfuscation"),
    ("import gc as g\nobjs = g.get_referrers", "gc"),
    ("from inspect import currentframe\nf = currentframe()", "inspect"),
])
def test_each_rule_fires_on_a_small_program(code: str, check: str) -> None:
    got = audit(src(code) + OK_BODY, Level.SCREEN)
    assert check in got.failed, got.text()


@pytest.mark.parametrize("code", [
    "_cache = {}\ndef run(x, weight):\n    _cache[x.shape] = x\n    return x",
    "_seen = []\ndef run(x, weight):\n    _seen.append(1)\n    return x",
    "_n = 0\ndef run(x, weight):\n    global _n\n    _n += 1\n    return x",
    "class S:\n    n = 0\ndef run(x, weight):\n    S.n += 1\n    return x",
    "def run(x, weight, memo=[]):\n    return x",
    "import torch\n_buf = torch.empty(1 << 20)\ndef run(x, weight):\n    return _buf[: x.numel()].view_as(x)",
    "import torch\n_buf = torch.empty(1 << 20)\ndef run(x, weight):\n    _buf.copy_(x.flatten())\n    return x",
    "_c = {}\ndef run(x, weight):\n    c = _c\n    c[1] = x\n    return x",
    "def run(x, weight):\n    key = id(x)\n    return {key: x}[key]",
    "def run(x, weight):\n    run.last = x\n    return x",
    "import functools\n@functools.lru_cache\ndef f(x):\n    return x * 2\ndef run(x, weight):\n    return f(x)",
    "from functools import cache\n@cache\ndef box():\n    return {}\ndef run(x, weight):\n    return x",
    "import functools\ndef g(x):\n    return x\nf = functools.lru_cache(g)\ndef run(x, weight):\n    return f(x)",
    "def run(x, weight):\n    globals()['_last'] = x\n    return x",
    "run = lambda x, weight, memo={}: memo.setdefault(x.shape, x)",
    "def run(x, weight):\n    setattr(weight, '_last', x)\n    return x",
    "class R:\n    def __init__(self):\n        self.n = 0\n    def step(self):\n        self.n += 1\n"
    "_r = R()\ndef run(x, weight):\n    _r.step()\n    return x",
])
def test_module_state_is_found(code: str) -> None:
    got = audit(src(code), Level.SCREEN)
    assert "module_state" in got.failed, got.text()


@pytest.mark.parametrize("code", [
    "TABLE = ((256, 8), (4096, 2))\ndef run(x, weight):\n    for d, r in TABLE:\n        pass\n    return x",
    "CFG = {4096: (2, 8)}\ndef run(x, weight):\n    a = CFG.get(x.shape[1], (1, 4))\n    b = CFG[4096] if 4096 in CFG else a\n    return x",
    "import functools\n@functools.lru_cache(maxsize=8)\ndef cfg(T, D):\n    return (T // 4, D)\ndef run(x, weight):\n    T, D = x.shape\n    return cfg(T, D)",
    "def run(x, weight):\n    out = {}\n    out['y'] = x\n    return out['y']",
    "def outer(x):\n    acc = [0]\n    def add(v):\n        acc[0] += v\n    add(1)\n    return acc[0]",
    "class Cfg:\n    def __init__(self):\n        self.n = 1\ndef run(x, weight):\n    c = Cfg()\n    c.n = 2\n    return x",
    "def run(x, weight):\n    assert x.data_ptr() % 16 == 0\n    return x",
    "from dataclasses import dataclass\n@dataclass\nclass Config:\n    block: int = 64\n    warps: int = 4\n"
    "CFG = Config()\ndef run(x, weight):\n    return x[: CFG.block] if CFG.warps else x",
])
def test_honest_patterns_are_not_module_state(code: str) -> None:
    got = audit(src(code), Level.SCREEN)
    assert got.passed, got.text()


def test_fallback_allows_a_retry_with_another_triton_config() -> None:
    base = """
        import torch
        def launch(x, y, rows):
            kernel[(1,)](x, y, rows)
        def run(x, weight):
            y = torch.empty_like(x)
            try:
                launch(x, y, 4)
            except RuntimeError:
                {handler}
            return y
    """
    assert audit(src(base.format(handler="launch(x, y, 1)")), Level.SCREEN).passed
    assert audit(src(base.format(handler="raise")), Level.SCREEN).passed
    got = audit(src(base.format(handler="y = x.float().to(x.dtype)")), Level.SCREEN)
    assert got.failed == ["fallback"] and "line 8" in got.reasons[0][1]


def test_reasons_name_the_file_and_line_of_a_multi_file_candidate() -> None:
    files = {"candidate.py": "import helpers\n" + OK_BODY, "helpers.py": "import os\n\nos.system('ls')\n"}
    got = audit(files, Level.SCREEN)
    assert got.failed == ["processes"]
    assert "helpers.py line 3" in got.reasons[0][1]
    shadow = audit({"candidate.py": OK_BODY, "torch.py": "x = 1\n"}, Level.SCREEN)
    assert shadow.failed == ["import_tricks"] and "torch.py" in shadow.reasons[0][1]


def test_syntax_errors_stop_the_audit_with_a_line() -> None:
    got = audit("def run(x, weight):\n    return (x\n", Level.SCREEN)
    assert got.failed == ["syntax"] and "line" in got.reasons[0][1]
    assert got.checks == ["syntax"]


def test_entry_point_is_checked_against_the_reference_signature() -> None:
    assert "entry_point" in failed("def main(x, weight):\n    return x", task=KERNEL)
    assert "entry_point" in failed("def run(x):\n    return x", task=KERNEL)
    assert audit(src(OK_BODY), Level.SCREEN, KERNEL).passed


def test_kernel_provenance_is_required_at_publish_only() -> None:
    torch_only = "import torch\ndef run(x, weight):\n    return torch.nn.functional.rms_norm(x, x.shape[-1:], weight)\n"
    everything = {"dynamic": [(name, True, "") for name in DYNAMIC_CHECKS]}
    assert audit(torch_only, Level.FULL, KERNEL, context=everything).passed
    got = audit(torch_only, Level.PUBLISH, KERNEL, context=everything)
    assert got.failed == ["kernel_provenance"]
    seed = (Path(__file__).resolve().parents[2] / "kernels" / "rmsnorm_fwd.py").read_text()
    assert audit(seed, Level.PUBLISH, KERNEL, context=everything).passed


def test_dynamic_results_fold_into_the_verdict() -> None:
    report = {"dynamic": [("dynamic:fresh_inputs", False, "output unchanged when x changed (call 3)"),
                          {"check": "thread_count", "passed": True, "reason": ""},
                          ("dynamic:fresh_inputs", False, "output unchanged when x changed (call 3)")]}
    assert audit(src(OK_BODY), Level.SCREEN, KERNEL, context=report).passed  # screen ignores them
    got = audit(src(OK_BODY), Level.FULL, KERNEL, context=report)
    assert got.failed == ["dynamic:fresh_inputs"]
    assert got.reasons[0][1] == "output unchanged when x changed (call 3)"
    assert "dynamic:thread_count" in got.checks
    published = audit(src(OK_BODY), Level.PUBLISH, KERNEL, context={"dynamic": []})
    kernel_checks = {name for name, check in DYNAMIC_CHECKS.items() if check.applies_to("kernels")}
    assert set(published.failed) >= kernel_checks - {"dynamic:fresh_inputs"}
    assert "dynamic:causality" not in published.failed  # the LM family's, not the kernels'


def test_a_registered_dynamic_check_reads_the_harness_facts() -> None:
    def threads(subject):
        facts = subject.context.get("facts", {})
        if "threads_after" not in facts:
            return None
        extra = facts["threads_after"] - facts["threads_before"]
        return CheckResult(extra == 0, f"{extra} threads still running after run() returned" if extra else "")

    register_dynamic("test_threads", "threads left running", "active_count before/after", fn=threads,
                     families=("*",))
    try:
        with pytest.raises(EvoError, match="registered already"):
            register_dynamic("test_threads", "", "")
        facts = {"facts": {"threads_before": 3, "threads_after": 4}}
        got = audit(src(OK_BODY), Level.FULL, None, context=facts)
        assert got.failed == ["dynamic:test_threads"] and "1 threads" in got.reasons[0][1]
        assert audit(src(OK_BODY), Level.FULL, None, context={}).passed  # not measured: nothing to fold
    finally:
        DYNAMIC_CHECKS.pop("dynamic:test_threads")


def make_task(tmp_path: Path, toml_extra: str = "", reference: str = "") -> Task:
    root = tmp_path / "kernels" / "toy"
    root.mkdir(parents=True)
    (root / "task.toml").write_text('objective = "maximize"\nmetric = "score"\n' + toml_extra)
    (root / "reference.py").write_text(reference or "def run(x, weight):\n    return x\n")
    return Task("kernels/toy", root)


def test_a_task_allows_a_capability_in_task_toml(tmp_path: Path) -> None:
    task = make_task(tmp_path, '[audit]\nallow = ["torch_compile"]\n')
    compiled = "import torch\n_f = torch.compile(lambda x: x)\n" + OK_BODY
    assert audit(compiled, Level.SCREEN).failed == ["native_code"]
    got = audit(compiled, Level.SCREEN, task)
    assert got.passed and got.allowed == ["torch_compile"]
    # the capability is narrower than the check: load_inline stays forbidden
    inline = "from torch.utils.cpp_extension import load_inline\n" + OK_BODY
    assert audit(inline, Level.SCREEN, task).failed == ["native_code"]


def test_a_task_adds_checks_and_allowances_in_its_reference(tmp_path: Path) -> None:
    reference = '''
from evo.audit import Check, CheckResult, Level

AUDIT_ALLOW = {"sleep_and_clock"}


def no_float64(subject):
    """float64 compute (the task is about bf16 bandwidth)."""
    text = subject.files["candidate.py"]
    if "float64" in text:
        return CheckResult.fail(f"line {text[:text.index('float64')].count(chr(10)) + 1} computes in float64")
    return CheckResult.ok()


def broken(subject):
    raise ValueError("oops")


AUDIT_CHECKS = [no_float64, Check("publish_only", Level.PUBLISH, broken)]


def run(x, weight):
    return x
'''
    task = make_task(tmp_path, reference=reference)
    policy = task_policy(task)
    assert policy.allow == {"sleep_and_clock"} and [c.name for c in policy.checks] == ["no_float64", "publish_only"]
    code = "import time\nimport torch\ndef run(x, weight):\n    time.sleep(0)\n    return x.to(torch.float64)\n"
    got = audit(code, Level.SCREEN, task)
    assert got.failed == ["no_float64"] and got.reasons[0][1] == "line 5 computes in float64"
    full = {"dynamic": [(n, True, "") for n in DYNAMIC_CHECKS]}
    crashed = audit(code, Level.PUBLISH, task, context=full)
    assert "publish_only" in crashed.failed  # a crashing check fails closed
    assert "ValueError: oops" in dict(crashed.reasons)["publish_only"]


def test_unknown_allowances_and_clashing_checks_are_errors_that_teach(tmp_path: Path) -> None:
    task = make_task(tmp_path, '[audit]\nallow = ["torch_compiler"]\n')
    with pytest.raises(EvoError, match=r"task.toml: `\[audit\] allow` names 'torch_compiler'.*did you mean `torch_compile`\?"):
        audit(OK_BODY, Level.SCREEN, task)
    other = make_task(tmp_path / "b", reference="from evo.audit import Check, CheckResult, Level\n"
                      "AUDIT_CHECKS = [Check('gc', Level.SCREEN, lambda s: CheckResult.ok())]\n")
    with pytest.raises(EvoError, match="built-in check"):
        audit(OK_BODY, Level.SCREEN, other)
    with pytest.raises(EvoError, match="screen, full, publish"):
        audit(OK_BODY, "everything")


def test_verdict_serialises_and_reads_back() -> None:
    got = audit("import socket\n" + OK_BODY, Level.SCREEN)
    data = json.loads(got.to_json())
    assert data["status"] == "fail" and data["reasons"][0]["check"] == "network"
    again = Verdict.from_dict(data)
    assert again.reasons == got.reasons and again.level is Level.SCREEN and again.status == "fail"
    assert got.text().startswith("audit (screen): fail\n- network: line 1 imports `socket`")


def test_levels_are_cumulative() -> None:
    assert Level.PUBLISH.includes(Level.SCREEN) and Level.FULL.includes(Level.SCREEN)
    assert not Level.SCREEN.includes(Level.FULL)
    names = {c.name: c.level for c in static_checks()}
    assert names["kernel_provenance"] is Level.PUBLISH and names["threads"] is Level.SCREEN


def test_catalogue_lists_static_and_dynamic_checks() -> None:
    rows = catalogue()
    assert {r["name"] for r in rows} >= {"threads", "module_state", "dynamic:stale_memory"}
    assert all(r["stops"] for r in rows)


def test_every_check_has_a_row_in_the_docs() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "auditor.md").read_text()
    missing = [r["name"] for r in catalogue() if f"`{r['name']}`" not in doc]
    assert not missing, f"docs/auditor.md has no row for {missing}"


def test_a_check_object_runs_its_function() -> None:
    check = Check("always", Level.SCREEN, lambda s: CheckResult.fail("no"))
    assert check.run(None).reason == "no"  # type: ignore[arg-type]
