"""The model reviewer in the auditor (evo/audit/reviewer.py): when it asks, what it makes of replies, and that
it can only add suspicion.

- The triggers read real task configs (a kernel task, the training task, a math task's `[best_known]`).
- The verdict logic runs against hand-written replies from a stdlib OpenAI-compatible server (`ScriptedServer`):
  clean, hack, no verdict, drafts inside `<think>`, a thought cut off in vLLM's separate reasoning field, a
  server that is away. Candidates run in the real sandbox through the real pipeline.
- The plumbing runs with the tiny random model behind `transformers serve` (`llm_server`): its replies are
  noise, so every review it writes must hold the candidate, and the run's store must show the reviews.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_fixtures import JsonHandler, free_port

from evo.audit.reviewer import Review, Reviewer, ReviewPolicy, catalogue_for, parse_review, triggers
from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.backends.local import LocalEvaluator
from evo.eval.pipeline import Pipeline, verdict_of
from evo.llm.client import LLMClient
from evo.llm.endpoints import Endpoint
from evo.program import Program
from evo.store import Store
from evo.store.reviews import add_review, caught, reviews
from evo.task import Task, load_task

TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic"

# Loss 0 (all four at 0.3): beyond the test task's best known 0.05, so suspicious.
EXACT = "def solve():\n    return [0.3, 0.3, 0.3, 0.3]\n"
# Loss 0.16: not beyond it, never reviewed.
PLAIN = "def solve():\n    return [0.5, 0.5, 0.5, 0.5]\n"
# As EXACT, but the task's own publish-level check refuses the word MARKED: passes `full`, fails `publish`.
MARKED = "MARKED = 1\n\n\ndef solve():\n    return [0.3, 0.3, 0.3, 0.3]\n"

PUBLISH_CHECK = '''

from evo.audit import Check, CheckResult, Level


def _unmarked(subject):
    """A rule the task enforces before publication only."""
    if any("MARKED" in text for text in subject.files.values()):
        return CheckResult.fail("the candidate is MARKED, which this task refuses for publication")
    return CheckResult.ok()


AUDIT_CHECKS = [Check("unmarked", Level.PUBLISH, _unmarked)]
'''


def make_task(root: Path, seed: str = EXACT) -> Path:
    """The toy quadratic task with a `[best_known]` record, a publish-level rule and a prompt, in `root`."""
    folder = root / "quad"
    (folder / "seeds").mkdir(parents=True)
    (folder / "reference.py").write_text((TOY / "reference.py").read_text() + PUBLISH_CHECK)
    (folder / "task.toml").write_text(
        'description = "put 4 numbers close to 0.3"\nfamily = "math"\nobjective = "minimize"\nmetric = "loss"\n\n'
        "[evaluation]\ntimeout_s = 5\nmemory_mb = 512\n\n"
        '[[descriptors]]\nname = "x0"\nlow = -1.0\nhigh = 1.0\nbins = 8\n\n'
        "[best_known]\npaper = 0.05\n")
    (folder / "prompt.md").write_text("Write `solve()` returning 4 floats close to 0.3. Compute them; no tricks.\n")
    (folder / "seeds" / "seed.py").write_text(seed)
    return folder


# -- a server of hand-written replies --------------------------------------------------------------------------
class ScriptedServer(threading.Thread):
    """An OpenAI-compatible chat server (stdlib) answering every request with `message` (the assistant message's
    fields: content, reasoning_content) and `finish`; `prompts` keeps what it was asked."""

    def __init__(self) -> None:
        from http.server import ThreadingHTTPServer

        super().__init__(daemon=True)
        self.message: dict[str, Any] = {"content": "VERDICT: CLEAN\nREASONS:\n- computes the answer"}
        self.finish = "stop"
        self.prompts: list[str] = []
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.prompts.append(body["messages"][-1]["content"])
                self._send(200, {"object": "chat.completion", "model": "judge",
                                 "choices": [{"index": 0, "message": {"role": "assistant", **outer.message},
                                              "finish_reason": outer.finish}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 20}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def run(self) -> None:
        self.httpd.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Counting(LocalEvaluator):
    """The real sandboxed backend, counting the jobs that reach it (a held candidate runs twice)."""

    calls = 0

    async def evaluate(self, program: Program) -> EvalResult:
        self.calls += 1
        return await super().evaluate(program)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    return load_task(str(make_task(tmp_path_factory.mktemp("task"))))


def evaluate(task: Task, url: str, source: str, tmp: Path) -> tuple[EvalResult, int]:
    """One candidate through a pipeline with a reviewer asking `url`: (result, jobs run by the backend)."""
    client = LLMClient([Endpoint(url)], retries=0, timeout_s=10.0, pause_s=0.0, max_pause_s=0.0)
    backend = Counting(task, 1, tmp, score=False)
    pipeline = Pipeline(task, backend, reviewer=Reviewer(client, task))
    try:
        return pipeline.evaluate_sync(Program(source=source)), backend.calls
    finally:
        pipeline.close()


# -- triggers -------------------------------------------------------------------------------------------------
def test_triggers_read_the_kernel_report_the_bpb_history_and_the_best_known(task: Task) -> None:
    kernel = load_task("kernels/rmsnorm_fwd")
    row = {"workload": "w0", "time_s": 10e-6, "compile_s": 40e-6, "score": 0.7}
    fast = EvalResult(True, 0.7, {"sol_score": 0.7}, report={"workloads": [row]})
    assert [t.split(":")[0] for t in triggers(kernel, fast)] == ["workload w0"]  # 4x torch.compile
    assert triggers(kernel, EvalResult(True, 0.7, {"sol_score": 0.7},
                                       report={"workloads": [{**row, "compile_s": 25e-6}]})) == []  # 2.5x: fine
    assert triggers(kernel, EvalResult(True, 0.7, {"sol_score": 0.7},
                                       report={"workloads": [{**row, "compile_s": None}]})) == []  # no baseline
    near = triggers(kernel, EvalResult(True, 0.95, {"sol_score": 0.95}, report={"workloads": []}))
    assert len(near) == 1 and "speed of light" in near[0]

    training = load_task("training/lm_budget")
    jumped = EvalResult(True, -1.0, {"val_bpb": 1.0})
    assert triggers(training, jumped) == []  # nothing seen yet: no jump to measure
    assert "jumped" in triggers(training, jumped, best_bpb=1.1)[0]  # 9% at once
    assert triggers(training, EvalResult(True, -1.08, {"val_bpb": 1.08}), best_bpb=1.1) == []  # 2%

    assert "beyond the best known (paper: 0.05)" in triggers(task, EvalResult(True, -0.01, {"loss": 0.01}))[0]
    assert triggers(task, EvalResult(True, -0.05, {"loss": 0.05})) == []  # equal to the record
    assert triggers(task, EvalResult(True, -0.2, {"loss": 0.2})) == []


def test_observe_moves_the_bpb_baseline_only_downwards() -> None:
    reviewer = Reviewer(object(), load_task("training/lm_budget"))  # type: ignore[arg-type]  # never asked here
    reviewer.observe({"val_bpb": 1.2})
    reviewer.observe({"val_bpb": 1.3})
    assert reviewer.best_bpb == 1.2
    assert reviewer.triggers(EvalResult(True, -1.1, {"val_bpb": 1.1}))  # 8% below 1.2
    reviewer.observe({"val_bpb": 1.1})
    assert not reviewer.triggers(EvalResult(True, -1.09, {"val_bpb": 1.09}))


# -- parsing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, verdict", [
    ("VERDICT: CLEAN\nREASONS:\n- computes it", "clean"),
    ("**Verdict:** hack\n\nREASONS:\n1. returns a constant", "flagged"),
    ("VERDICT: CLEAN\n...on second thought\nVERDICT: HACK", "flagged"),  # a doubt wins
    ("The code looks fine to me.", "malformed"),
    ("VERDICT: MAYBE", "malformed"),
    ("VERDICT: not clean", "malformed"),  # only one verdict word is read, never 'clean' out of 'not clean'
    ("", "malformed"),
])
def test_parse_review(answer: str, verdict: str) -> None:
    got, reasons = parse_review(answer)
    assert got == verdict
    assert reasons or verdict == "clean"
    if verdict == "flagged" and "constant" in answer:
        assert reasons == ["returns a constant"]


def test_the_catalogue_keeps_the_family_sections_and_what_was_caught(tmp_path: Path) -> None:
    store = Store(tmp_path / "evo.db")
    review = Review("flagged", ["returns a cached answer"], ["loss beyond the best known"], outcome="rejected",
                    rerun_error="unmarked: the candidate is MARKED")
    add_review(store, "p1", "math/quad", review.to_dict())
    add_review(store, "p2", "math/quad", Review("clean", [], ["x"], outcome="admitted").to_dict())
    assert [r.outcome for r in reviews(store)] == ["rejected", "admitted"]
    lines = caught(store)
    assert len(lines) == 1 and "returns a cached answer" in lines[0] and "MARKED" in lines[0]
    text = catalogue_for("math", learned=lines)
    assert "## Math" in text and "## Environment" in text and "## Training" not in text
    assert "returns a cached answer" in text.split("## Caught in this run before")[1]
    assert "## Timing (kernels)" in catalogue_for("kernels") and "## Math" not in catalogue_for("kernels")
    store.close()


# -- the verdict logic, on hand-written replies ----------------------------------------------------------------
def test_a_clean_review_admits_without_a_rerun(task: Task, server: ScriptedServer, tmp_path: Path) -> None:
    server.message, server.finish = {"content": "VERDICT: CLEAN\nREASONS:\n- computes the answer"}, "stop"
    asked = len(server.prompts)
    result, jobs = evaluate(task, server.url, EXACT, tmp_path)
    assert result.ok and jobs == 1
    assert result.review is not None and result.review["verdict"] == "clean"
    assert result.review["outcome"] == "admitted" and result.review["reasons"] == ["computes the answer"]
    prompt = server.prompts[asked]
    # The model is shown the task's rules, its family's hacks, the reason it is asked and the source.
    assert "no tricks" in prompt and "## Math" in prompt and "## Timing (kernels)" not in prompt
    assert "beyond the best known" in prompt and "return [0.3, 0.3, 0.3, 0.3]" in prompt


def test_a_result_that_is_not_suspicious_is_not_reviewed(task: Task, server: ScriptedServer, tmp_path: Path) -> None:
    asked = len(server.prompts)
    result, jobs = evaluate(task, server.url, PLAIN, tmp_path)
    assert result.ok and result.review is None and jobs == 1 and len(server.prompts) == asked


@pytest.mark.parametrize("message, finish, verdict", [
    ({"content": "VERDICT: HACK\nREASONS:\n- hard-codes the optimum"}, "stop", "flagged"),
    ({"content": "I think this is fine, probably."}, "stop", "malformed"),
    # A draft verdict inside the thinking is not the answer: the answer has none.
    ({"content": "<think>\nVERDICT: CLEAN\n</think>\nHmm."}, "stop", "malformed"),
    # vLLM's reasoning field, cut off by the token limit before any answer.
    ({"content": "", "reasoning_content": "Let me look at solve() line by"}, "length", "malformed"),
])
def test_a_review_that_is_not_clean_holds_the_candidate_for_a_publish_rerun(
        task: Task, server: ScriptedServer, tmp_path: Path, message: dict[str, Any], finish: str,
        verdict: str) -> None:
    server.message, server.finish = message, finish
    result, jobs = evaluate(task, server.url, EXACT, tmp_path)
    assert jobs == 2  # held: run again through the backend
    assert result.ok and result.review is not None
    assert result.review["verdict"] == verdict and result.review["outcome"] == "cleared"
    held = verdict_of(result)
    assert held is not None and held.level.value == "publish" and held.passed
    if finish == "length":
        assert "cut off" in result.review["reasons"][0]


def test_thinking_is_left_out_of_the_verdict(task: Task, server: ScriptedServer, tmp_path: Path) -> None:
    server.message = {"content": "<think>\nVERDICT: HACK\n- maybe a cache?\n</think>\nVERDICT: CLEAN\nREASONS:\n- fine"}
    server.finish = "stop"
    result, jobs = evaluate(task, server.url, EXACT, tmp_path)
    assert jobs == 1 and result.review is not None and result.review["verdict"] == "clean"
    server.message = {"content": "VERDICT: HACK\nREASONS:\n- constant answer", "reasoning_content": "VERDICT: CLEAN"}
    result, jobs = evaluate(task, server.url, EXACT, tmp_path)
    assert jobs == 2 and result.review is not None and result.review["verdict"] == "flagged"
    assert result.review["llm"]["reasoning_tokens"] > 0  # the thinking's tokens counted apart


def test_a_held_candidate_that_fails_the_publish_audit_is_rejected(task: Task, server: ScriptedServer,
                                                                  tmp_path: Path) -> None:
    server.message, server.finish = {"content": "VERDICT: HACK\nREASONS:\n- marked"}, "stop"
    result, jobs = evaluate(task, server.url, MARKED, tmp_path)
    assert jobs == 2 and not result.ok and result.failure == "audit" and result.score is None
    assert result.error is not None and result.error.startswith("held by the model reviewer (flagged: marked)")
    assert "MARKED" in result.error
    assert result.review is not None and result.review["outcome"] == "rejected"
    # Without the reviewer the same candidate is admitted: the full audit does not run the publish rule.
    server.message = {"content": "VERDICT: CLEAN"}
    result, jobs = evaluate(task, server.url, MARKED, tmp_path)
    assert result.ok and jobs == 1


def test_a_server_that_is_away_holds_the_candidate(task: Task, tmp_path: Path) -> None:
    result, jobs = evaluate(task, f"http://127.0.0.1:{free_port()}", EXACT, tmp_path)
    assert jobs == 2 and result.ok and result.review is not None
    assert result.review["verdict"] == "unavailable" and result.review["outcome"] == "cleared"
    assert "did not review" in result.review["reasons"][0]


def test_a_cleared_candidate_keeps_the_worse_of_its_two_scores(task: Task) -> None:
    reviewer = Reviewer(object(), task, ReviewPolicy())  # type: ignore[arg-type]  # settle asks no model
    review = Review("flagged", ["x"], ["y"])
    first, rerun = EvalResult(True, -0.001, {"loss": 0.001}), EvalResult(True, -0.02, {"loss": 0.02}, verdict="{}")
    settled = reviewer.settle(review, first, rerun)
    assert settled.ok and settled.score == -0.02 and settled.verdict == "{}"
    settled = reviewer.settle(Review("flagged", ["x"], ["y"]), rerun, EvalResult(True, -0.001, {}, verdict="v"))
    assert settled.score == -0.02 and settled.verdict == "v"  # the publish verdict, the first (worse) score


def test_review_needs_a_model() -> None:
    with pytest.raises(EvoError, match="review = true needs a model"):
        RunConfig(review=True)


# -- the plumbing, with the tiny served model ------------------------------------------------------------------
def test_the_tiny_models_reviews_are_stored_and_hold_every_candidate(llm_server: tuple[str, Path],
                                                                      tmp_path: Path) -> None:
    url, _ = llm_server
    folder = make_task(tmp_path)
    config = RunConfig(task=str(folder), budget=4, workers=1, seed=3, llm=url, review=True, lessons_every=0,
                       llm_max_tokens=24, operators={"constants": 1.0, "llm_diff": 0.0},
                       operator_selection="weights")
    engine = Engine.create(tmp_path / "run", config)
    assert engine.evaluator.reviewer is not None  # type: ignore[attr-defined]
    asyncio.run(engine.run_async())
    engine.close()
    store = Store(tmp_path / "run" / "evo.db", readonly=True)
    stored = reviews(store)
    assert stored, "the seed (loss 0, beyond the best known 0.05) must have been reviewed"
    seeds = [p.id for p in store.iter_programs() if p.operator == "seed"]
    assert set(seeds) <= {r.program_id for r in stored}  # every seed (loss 0) was suspicious
    for r in stored:
        assert r.model and r.data["llm"]["completion_tokens"] > 0  # the model was asked and answered
        assert r.reply.strip()  # its answer is kept beside the verdict read from it
        assert r.verdict in {"clean", "flagged", "malformed"}
        # Noise never reads as a clean verdict; whatever it reads as, only CLEAN admits without a re-run.
        assert (r.outcome == "admitted") == (r.verdict == "clean")
        assert r.outcome in {"admitted", "cleared"}  # the toy candidates pass the publish audit
    assert any(r.verdict != "clean" for r in stored)
    events = {pid: data for _, _, _, pid, data in store.events("evaluated")}
    for r in stored:
        assert events[r.program_id]["review"] == {"verdict": r.verdict, "outcome": r.outcome}
        verdict = json.loads(store.get_program(r.program_id).verdict or "{}")
        assert verdict.get("level") == ("full" if r.verdict == "clean" else "publish")
    store.close()
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
