"""The pipeline screens a program once per shape: children that differ from a screened program in numbers only
(the `constants` and `params` operators' children) take its verdict; any other difference is screened anew."""

from __future__ import annotations

from pathlib import Path

from evo.audit import Verdict
from evo.eval.pipeline import Pipeline, source_shape
from evo.program import Program
from evo.task import load_task

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "tasks" / "math" / "circle_packing_26" / "seed.py").read_text()


class CountingPipeline(Pipeline):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.screened: list[str] = []

    def screen(self, program: Program) -> Verdict:
        self.screened.append(program.id)
        return super().screen(program)


def test_shapes_ignore_numbers_only() -> None:
    assert source_shape("R = 0.5\nN = 26\n") == source_shape("R = 0.25\nN = 3e2\n")
    assert source_shape("x1 = 1\n") != source_shape("x2 = 1\n")
    assert source_shape('MODE = "hex"\n') != source_shape('MODE = "grid"\n')
    assert source_shape("a = b + 1\n") != source_shape("a = b - 1\n")


def test_a_numbers_only_child_takes_its_parents_verdict(tmp_path: Path) -> None:
    task = load_task("math/circle_packing_26")
    with CountingPipeline(task, workers=1, scratch=tmp_path) as pipeline:
        first = pipeline.evaluate_sync(Program(source=SEED))
        nudged = SEED.replace("0.", "0.0", 1) if "0." in SEED else SEED + "\nEXTRA = 1\n"
        second = pipeline.evaluate_sync(Program(source=nudged))
        assert first.verdict is not None and second.verdict is not None
        assert len(pipeline.screened) == 1, "a numbers-only child was screened again"
        bad = SEED + "\nimport socket\n"
        third = pipeline.evaluate_sync(Program(source=bad))
        assert len(pipeline.screened) == 2 and not third.ok and third.failure == "audit"
        worse = bad.replace("0.", "0.0", 1)
        fourth = pipeline.evaluate_sync(Program(source=worse))
        assert not fourth.ok and fourth.failure == "audit" and "network" in (fourth.error or "")
        assert len(pipeline.screened) == 2
