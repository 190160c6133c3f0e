"""The pipeline screens a program once per shape: children that differ from a screened program in numbers only
(the `constants` and `params` operators' children) take its verdict; any other difference is screened anew."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from evo.audit import Verdict
from evo.eval import pipeline
from evo.eval.pipeline import Pipeline, _zero_numbers, source_shape
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


# The one-regex original of `_zero_numbers` (slow: every branch tried at every position), kept as the reference
# that the faster two-pass version must equal on every text.
_REFERENCE = re.compile(r"""(?P<kept>#[^\n]*|[rRbBuUfF]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|"""
                        r"""'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))"""
                        r"|(?<![\w.])(?:0[xXoObB][0-9a-fA-F_]+|\d[\d_]*(?:\.[\d_]*)?(?:[eE][-+]?\d+)?|\.\d[\d_]*"
                        r"(?:[eE][-+]?\d+)?)[jJ]?(?!\w)")


def _reference_zero_numbers(text: str) -> str:
    return _REFERENCE.sub(lambda m: m.group("kept") or "0", text)


TRICKY = [
    'PATH = "out1.txt"  # 2 files\nx1 = 0x1F + 0o17 + 0b101 + 1_000.5e-3 + 2j + .5 + 5. + 1e10J\n',
    "s = f'{x1:.3f} {2}' + rb'\\d1' + Rb\"2\" + u'3' + BR'''4\n5''' + F\"\"\"{6}\"\"\"\n",
    "a = '''doc 1\\''' 2''' + 3\nb = 'it\\'s 4' # 5 'q'\nc = \"#6\" + 7\n",
    "x = 1if y else 2\nz = 3.real + 1..__class__ + a.b1 + 1.e5 + 0x_ff + 1__2\n",
    "unterminated = 'abc 1\nnext = 2\n'''never closed 3\n4\n",
    "bad = '''a\\\nb''' + 5 + \"\"\"c\\\n\"\"\" + 6\nq = ''''x'''' + 7\n",
    "١٢ = 3 + ١٢٣ + x١ + '٤'  # non-ASCII digits and names\n",
    "r'' + r'\\' 1' + 2 # end\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_zero_numbers_equals_the_reference_on_tricky_sources(text: str) -> None:
    assert _zero_numbers(text) == _reference_zero_numbers(text)


def test_zero_numbers_equals_the_reference_on_the_repository_and_random_texts() -> None:
    files = sorted((REPO / "tasks").rglob("*.py")) + sorted((REPO / "kernels").rglob("*.py")) \
        + sorted((REPO / "evo" / "operators").rglob("*.py"))
    assert len(files) > 20
    for path in files * 2:  # the second time from the memo of gaps
        text = path.read_text()
        assert _zero_numbers(text) == _reference_zero_numbers(text), path
    pieces = [*"0123456789._xXoObBeEjJ+-#'\"\\\n rRfFuU(=,", "'''", '"""', "0x1F", "1e-3", "x1", "١٢", "\\\n", "''''"]
    rng = random.Random(12)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        assert _zero_numbers(text) == _reference_zero_numbers(text), text


def test_the_memo_of_gaps_stays_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_GAPS_KEPT", 16)
    monkeypatch.setattr(pipeline, "_GAPS", {})
    rng = random.Random(5)
    texts = [f"x{i} = {rng.random()} + 'a{i % 3}'  # {i}\ny = {i % 7}\n" for i in range(200)]
    for text in texts + texts[::-1]:
        assert _zero_numbers(text) == _reference_zero_numbers(text)
        assert len(pipeline._GAPS) <= 16
    assert source_shape(texts[0]) != source_shape(texts[1]) and source_shape("y = 1\n") == source_shape("y = 2\n")


def test_ascii_gaps_are_zeroed_as_the_unicode_pattern_zeroes_them() -> None:
    rng = random.Random(8)
    pieces = [*"0123456789._xXoObBeEjJ+- (=,a", "0x1F", "1e-3", "x1", "1_0", "\n"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(5000)]
    for gap in [*texts, *TRICKY, SEED]:
        if gap.isascii():
            assert pipeline._NUMBER_ASCII.sub("0", gap) == pipeline._NUMBER.sub("0", gap), gap


def test_a_backend_set_on_the_pipeline_is_asked_again_whether_it_takes_jobs(tmp_path: Path) -> None:
    from evo.eval.backends.base import EvalResult

    class ProgramsOnly:
        workers = 1

        async def evaluate(self, program: Program) -> EvalResult:
            return EvalResult(False, failure="invalid", error="programs only")

        def close(self) -> None:
            pass

    class TakesJobs(ProgramsOnly):
        async def run(self, job: object) -> EvalResult:
            return EvalResult(False, failure="invalid", error="took the job")

    with Pipeline(load_task("math/circle_packing_26"), ProgramsOnly()) as p:
        assert "programs only" in (p.evaluate_sync(Program(source=SEED)).error or "")
        p.backend = TakesJobs()
        assert "took the job" in (p.evaluate_sync(Program(source=SEED)).error or "")
