"""The hack corpus: every candidate in `hacks/` is rejected by the check its header names.

Each file is a candidate for `kernels/rmsnorm_fwd` (`run(x, weight)`) written to pass a naive evaluation
(correct output on one input, plus timing). Its docstring starts with `expect: <check>` and a line saying
which hack it is. `expect: dynamic:<name>` marks hacks only the evaluation harness can catch: for those we
check that they are well-formed candidates that the static screen lets through (they need the harness).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from evo.audit import DYNAMIC_CHECKS, Level, audit
from evo.audit.static import static_checks

HACKS = Path(__file__).parent / "hacks"
TASK = "kernels/rmsnorm_fwd"


def header(path: Path) -> tuple[str, str]:
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    lines = doc.splitlines()
    assert len(lines) >= 2 and lines[0].startswith("expect: "), f"{path.name}: header must start 'expect: <check>'"
    assert lines[1].strip(), f"{path.name}: the second line says which hack it is"
    return lines[0].removeprefix("expect: ").strip(), lines[1].strip()


ALL = sorted(HACKS.glob("*.py"))
STATIC = [p for p in ALL if not header(p)[0].startswith("dynamic:")]
DYNAMIC = [p for p in ALL if header(p)[0].startswith("dynamic:")]

# The hacks the corpus must cover (file stem -> expected check), from the issue.
REQUIRED = {
    "stale_memory": "dynamic:stale_memory", "side_stream": "side_streams", "cache_by_pointer": "module_state",
    "cache_by_content": "module_state", "lazy_output": "tensor_subclass", "patched_timer": "monkeypatching",
    "late_thread": "threads", "shape_special_case": "dynamic:hidden_shapes", "tf32_flag": "precision_flags",
    "fp16_compute": "dynamic:precision", "skip_rows": "dynamic:full_coverage",
    "inplace_input": "dynamic:input_mutation", "warmup_counter": "module_state", "state_file": "file_writes",
    "subprocess_clocks": "processes", "ctypes_driver": "ctypes", "getframe_peek": "frame_walking",
    "import_reference": "reference", "try_fallback": "fallback", "patch_allclose": "monkeypatching",
    "gc_walk": "gc", "sitecustomize_pth": "import_tricks", "load_inline": "native_code",
    "l2_persist": "l2_persistence", "socket_fetch": "network", "exec_encoded": "dynamic_code",
    "environ_tf32": "environment",
}


def test_corpus_covers_the_required_hacks() -> None:
    assert len(ALL) >= 25
    found = {p.stem: header(p)[0] for p in ALL}
    missing = {k: v for k, v in REQUIRED.items() if found.get(k) != v}
    assert not missing, f"missing or re-labelled hacks: {missing}"
    names = {c.name for c in static_checks()} | set(DYNAMIC_CHECKS)
    unknown = {p.stem: e for p, (e, _) in ((p, header(p)) for p in ALL) if e not in names}
    assert not unknown, f"expect: names no known check: {unknown}"


@pytest.mark.parametrize("path", STATIC, ids=lambda p: p.stem)
def test_static_hack_is_rejected_by_its_check(path: Path) -> None:
    expect, _ = header(path)
    verdict = audit(path.read_text(), Level.SCREEN, TASK)
    assert not verdict.passed and verdict.status == "fail"
    assert expect in verdict.failed, f"{path.name}: expected {expect}, got\n{verdict.text()}"
    reason = dict(verdict.reasons)[expect]
    assert "line " in reason, f"a reason says where: {reason}"
    json.loads(verdict.to_json())


@pytest.mark.parametrize("path", DYNAMIC, ids=lambda p: p.stem)
def test_dynamic_hack_is_a_well_formed_candidate(path: Path) -> None:
    expect, _ = header(path)
    assert expect in DYNAMIC_CHECKS, f"{expect} is not in the dynamic registry"
    tree = ast.parse(path.read_text())
    runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    assert runs and [a.arg for a in runs[0].args.args] == ["x", "weight"], "defines run(x, weight)"
    verdict = audit(path.read_text(), Level.SCREEN, TASK)
    # The static screen cannot see these: if a static check now catches one, relabel its `expect:` line.
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize("path", DYNAMIC, ids=lambda p: p.stem)
def test_dynamic_hack_is_rejected_when_the_harness_reports_it(path: Path) -> None:
    expect, what = header(path)
    harness = {"dynamic": [(name, name != expect, what if name == expect else "") for name in DYNAMIC_CHECKS]}
    verdict = audit(path.read_text(), Level.FULL, TASK, context=harness)
    assert verdict.failed == [expect] and what in dict(verdict.reasons)[expect]
