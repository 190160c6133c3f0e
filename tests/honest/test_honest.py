"""No false positives: honest programs pass the screen.

Every Triton seed in `kernels/` (globbed now: the family grows), every math seed, and the optimised
RMSNorm variants in `variants/` pass `audit(..., Level.SCREEN)`; the variants also pass `publish` (given
clean dynamic results) and are correct under Triton's CPU interpreter, so they are honest for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evo.audit import DYNAMIC_CHECKS, Level, audit
from evo.task import list_tasks

REPO = Path(__file__).resolve().parents[2]
VARIANTS = sorted((Path(__file__).parent / "variants").glob("*.py"))
KERNEL_SEEDS = sorted((REPO / "kernels").glob("*.py"))
MATH_SEEDS = sorted((REPO / "tasks" / "math").glob("*/seed.py"))
TASKS = set(list_tasks())
CLEAN = {"dynamic": [(name, True, "") for name in DYNAMIC_CHECKS]}


def kernel_task(seed: Path) -> str | None:
    name = f"kernels/{seed.stem}"
    return name if name in TASKS else None


@pytest.mark.parametrize("seed", KERNEL_SEEDS, ids=lambda p: p.stem)
def test_kernel_seed_passes_the_screen(seed: Path) -> None:
    verdict = audit(seed.read_text(), Level.SCREEN, kernel_task(seed))
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize("seed", KERNEL_SEEDS, ids=lambda p: p.stem)
def test_kernel_seed_passes_publish_with_clean_dynamic_results(seed: Path) -> None:
    verdict = audit(seed.read_text(), Level.PUBLISH, kernel_task(seed), context=CLEAN)
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize("seed", MATH_SEEDS, ids=lambda p: p.parent.name)
def test_math_seed_passes_the_screen(seed: Path) -> None:
    verdict = audit(seed.read_text(), Level.SCREEN, f"math/{seed.parent.name}")
    assert verdict.passed, verdict.text()


def test_there_are_enough_honest_variants() -> None:
    assert len(VARIANTS) >= 10


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.stem)
def test_honest_variant_passes_screen_and_publish(variant: Path) -> None:
    for level in (Level.SCREEN, Level.PUBLISH):
        verdict = audit(variant.read_text(), level, "kernels/rmsnorm_fwd", context=CLEAN)
        assert verdict.passed, verdict.text()


CHECK = """
import sys
from pathlib import Path
import torch
from evo.eval.kernel_spec import compare_outputs
from evo.task import load_module, load_task
ref = load_task("kernels/rmsnorm_fwd").reference
bad = []
for path in sys.argv[1:]:
    mod = load_module(Path(path), "candidate_" + Path(path).stem)
    for i, params in enumerate([*ref.SPEC.small, {"T": 5, "D": 64}]):
        inputs = ref.make_inputs(dict(params), 20 + i, "cpu")
        expected = ref.run(*[x.clone() for x in inputs])
        reason = compare_outputs(mod.run(*[x.clone() for x in inputs]), expected, ref.SPEC.atol, ref.SPEC.rtol)
        if reason:
            bad.append(f"{Path(path).name} {params}: {reason}")
print("\\n".join(bad) or "ok")
"""


def test_honest_variants_are_correct_under_the_triton_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHECK, *map(str, VARIANTS)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout[-3000:] + proc.stderr[-3000:]
