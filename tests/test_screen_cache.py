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


def test_digits_inside_strings_and_comments_are_part_of_the_shape() -> None:
    assert source_shape('PATH = "out1.txt"\n') != source_shape('PATH = "out2.txt"\n')
    assert source_shape("x = 1  # 2\n") != source_shape("x = 1  # 3\n")
    assert source_shape('s = """a 1""" + str(2)\n') == source_shape('s = """a 1""" + str(9)\n')


# The candidate that would defeat the cache: a parent whose numbers the screen reads as harmless, a child whose
# numbers are not. os.open's flags were one (0 reads, 577 = O_WRONLY|O_CREAT|O_TRUNC writes): the screen now
# counts numeric flags as a write whatever their value, so that no verdict turns on a number.
OS_OPEN = 'import os\ndef run(x, weight):\n    fd = os.open("state.bin", {flags})\n    return x\n'


def test_no_screen_verdict_turns_on_a_number_os_open_flags(tmp_path: Path) -> None:
    task = load_task("kernels/rmsnorm_fwd")
    with CountingPipeline(task, backend=_Unreachable()) as pipeline:
        read, write = (Program(source=OS_OPEN.format(flags=f)) for f in ("0", "577"))
        assert source_shape(read.source) == source_shape(write.source)
        for program in (read, write):
            result = pipeline.evaluate_sync(program)
            assert not result.ok and result.failure == "audit" and "file_writes" in (result.error or "")


class _Unreachable:
    """A backend the screen must keep every candidate from (both are refused before any job)."""

    workers = 1

    async def evaluate(self, program: Program) -> object:
        raise AssertionError("a candidate the screen refuses reached the backend")

    def close(self) -> None:
        pass
