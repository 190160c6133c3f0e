"""A memory of lessons: written every K evaluations and on resume, versioned in the store, put into the
LLM prompts within a budget, carried into a new run with --lessons-from, written by a served model.

Runs are real CPU runs of the toy task (sandboxed evaluations). The prompts are captured where
they leave evo: at a stdlib OpenAI-compatible server (`ToyCoderServer`, which also writes useful
children). The model-written lesson comes from the tiny random model behind `transformers serve`.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from llm_fixtures import JsonHandler, ToyCoderServer

from evo.config import RunConfig
from evo.engine import Engine
from evo.errors import OperatorError
from evo.lessons import LessonKeeper, _kind_of_change, collect, parse_lesson
from evo.llm.client import Endpoint, LLMClient
from evo.llm.prompts import build_messages, lessons_section
from evo.program import Program, Status
from evo.store import Store
from evo.store.lessons import Outcome, RecentOutcomes, add_lesson, lessons, recent_outcomes
from evo.task import load_task

TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic"
SEED = "A = 0.5  # evo: float(-1.0, 1.0)\nB = 0.1  # evo: float(-1.0, 1.0)\n\n\ndef solve():\n    return [A, B, 0.9, -0.2]\n"


def _task(root: Path) -> Path:
    folder = root / "quad"
    (folder / "seeds").mkdir(parents=True)
    shutil.copy(TOY / "reference.py", folder)
    text = (TOY / "task.toml").read_text()
    (folder / "task.toml").write_text(text[: text.index("# The seeds misbehave")])
    (folder / "seeds" / "seed.py").write_text(SEED)
    return folder


class RecordingCoder(ToyCoderServer):
    """The toy coder that also keeps every prompt it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []
        self._prompts_lock = threading.Lock()

    def reply(self, prompt: str, rng: random.Random) -> str:
        with self._prompts_lock:
            self.prompts.append(prompt)
        return super().reply(prompt, rng)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CPU run of 30 evaluations (no model) that wrote its lessons at 10, 20 and 30."""
    root = tmp_path_factory.mktemp("old")
    config = RunConfig.from_dict(dict(task=str(_task(root)), budget=30, workers=2, seed=1, lessons_every=10,
                                      operators={"constants": 1.0, "params": 1.0}))
    Engine.create(root / "run", config).run()
    return root / "run"


def _lessons(run_dir: Path) -> list:  # type: ignore[type-arg]
    store = Store.in_dir(run_dir, readonly=True)
    try:
        return lessons(store)
    finally:
        store.close()


def test_a_cpu_run_writes_versioned_structured_lessons_every_k_evaluations(old_run: Path) -> None:
    found = _lessons(old_run)
    assert [(x.version, x.evaluations, x.source) for x in found] == [(1, 10, "structured"), (2, 20, "structured"),
                                                                      (3, 30, "structured")]
    assert len({x.run for x in found}) == len({x.task for x in found}) == 1
    assert all(x.task.endswith("quad") and x.carried_from is None for x in found)
    last = found[-1]
    assert last.text.startswith("Lessons after 30 evaluations")
    # It says which kinds of change were admitted, and which parameters moved, from what the store holds.
    stats = last.data["stats"]
    assert set(stats["operators"]) == {"constants", "params"}
    tried = sum(v[0] for v in stats["operators"].values())
    assert tried == 29  # every evaluation but the seed's
    assert "params: " in last.text and "- A: " in last.text
    # Unexplored regions: the toy grid is 8 bins of x0 over [-1, 1]; the lesson names the empty ones.
    empty = [line for line in last.text.splitlines() if line.startswith("- x0: no elite in")]
    assert empty and stats["unexplored"] == empty
    with sqlite3.connect(old_run / "evo.db") as db:
        events = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'lesson'")]
    assert [e["version"] for e in events] == [1, 2, 3] and {e["why"] for e in events} == {"every"}


def test_a_resume_writes_a_lesson_and_its_prompts_carry_the_newest(old_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(old_run, run_dir)
    engine = Engine.open(run_dir, {"budget": 35})
    engine.run()
    found = _lessons(run_dir)
    assert [(x.version, x.evaluations, x.data["why"]) for x in found[3:]] == [(4, 30, "resume")]
    # What the next operator call's prompt holds: the newest lesson, through the operators' own builder.
    messages = build_messages("diff", "the toy task", [Program(SEED)], lessons=engine.lessons.for_prompt())
    assert found[-1].text in messages[1]["content"]
    assert "Written after 30 evaluations of this run" in messages[1]["content"]


def test_lessons_from_puts_the_old_runs_lesson_into_the_new_runs_prompts(old_run: Path, tmp_path: Path) -> None:
    old_text = _lessons(old_run)[-1].text
    server = RecordingCoder().start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "evo", "run", str(old_run.parent / "quad"), "--run-dir", str(tmp_path / "new"),
             "--budget", "8", "--llm", server.url + "#toy-coder", "--lessons-from", str(old_run), "--quiet"],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert server.prompts, "no LLM call reached the server"
    for prompt in server.prompts:
        assert "From an earlier run on this task" in prompt and old_text in prompt
        # The lessons come before the programs (vLLM's prefix cache: they change rarely).
        assert prompt.index(old_text) < prompt.index("## Parent")
    carried = [x for x in _lessons(tmp_path / "new") if x.carried_from is not None]
    assert [(x.version, x.text, x.carried_from) for x in carried] == [(3, old_text, str(old_run))]


def test_a_model_writes_the_lesson_through_a_served_model(llm_server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, _ = llm_server
    # The model is asked for lessons only (its operators weigh 0), so the run stays short.
    config = RunConfig.from_dict(dict(task=str(_task(tmp_path)), budget=12, workers=2, seed=2, lessons_every=6,
                                      llm=base_url, llm_max_tokens=24, operator_selection="weights",
                                      operators={"constants": 1.0, "llm_diff": 0.0}))
    engine = Engine.create(tmp_path / "run", config)
    engine.run()
    found = _lessons(tmp_path / "run")
    assert [x.evaluations for x in found] == [6, 12][: len(found)] and found
    by_model = [x for x in found if x.source.startswith("model:")]
    # Noise, but words: parsed and stored as the model's lesson; a reply without words falls back (recorded).
    for x in found:
        assert x.source.startswith("model:") or "model_error" in x.data, x.data
    assert by_model, [x.data.get("model_error") for x in found]
    lesson = by_model[-1]
    assert lesson.text == parse_lesson(lesson.text) and lesson.data["stats"]["evaluations"] == lesson.evaluations
    # Acted on: the newest lesson is what the next prompt carries.
    prompt = build_messages("diff", "t", [Program(SEED)], lessons=engine.lessons.for_prompt())[1]["content"]
    assert found[-1].text[:200] in prompt


def test_a_malformed_lesson_reply_is_refused() -> None:
    assert parse_lesson("- Keep A near 0.3; rewrites fail.\n") == "- Keep A near 0.3; rewrites fail."
    assert parse_lesson("```\n- fenced lesson lines\n```") == "- fenced lesson lines"
    for bad in ("", "   \n", "- 1, 2\n- 3", "``````"):
        with pytest.raises(OperatorError, match="no words"):
            parse_lesson(bad)
    long = "\n".join(f"- lesson line {i} of many" for i in range(1000))
    assert len(parse_lesson(long)) <= 3000 and parse_lesson(long).endswith("of many")


def test_the_prompt_keeps_lessons_within_its_budget() -> None:
    own = "\n".join(f"- own lesson {i}" for i in range(200))  # ~3,000 characters
    carried = "- a carried lesson"
    section = lessons_section([own, carried], budget_tokens=100)
    assert len(section) < 100 * 4 + 200
    assert "- own lesson 0" in section and "(cut to fit the prompt)" in section and carried not in section
    assert lessons_section([], 100) == "" and lessons_section(["  "], 100) == ""
    both = lessons_section(["- short own", carried], budget_tokens=100)
    assert "- short own" in both and carried in both


class _LessonHandler(JsonHandler):
    """Answers a lesson request with a thought cut off by the token limit, or, on /hang, never (until released)."""

    server: ThreadingHTTPServer

    def do_POST(self) -> None:  # noqa: N802  # the name http.server dispatches to
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/hang"):
            self.server.release.wait()  # type: ignore[attr-defined]
        self._send(200, {"object": "chat.completion", "model": "thinker",
                         "choices": [{"index": 0, "finish_reason": "length",
                                      "message": {"role": "assistant", "content": "<think>\nThe lessons are"}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 24}})


@pytest.mark.parametrize("route", ["", "/hang"])
def test_a_model_lesson_that_is_cut_off_or_never_comes_falls_back_to_the_structured_one(
        old_run: Path, tmp_path: Path, route: str) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(old_run, run_dir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LessonHandler)
    server.daemon_threads = True
    server.release = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    store = Store.in_dir(run_dir)
    url = f"http://127.0.0.1:{server.server_address[1]}{route}"
    try:
        keeper = LessonKeeper(store, load_task(str(old_run.parent / "quad")), every=0,
                              llm=LLMClient([Endpoint(url, model="thinker")], retries=0), max_tokens=24)

        async def go() -> None:
            keeper.write_soon(30, None, "test")
            await keeper.close(timeout_s=0.5 if route else 60)

        asyncio.run(go())
        lesson = lessons(store)[-1]
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        store.close()
    assert (lesson.version, lesson.source, lesson.data["why"]) == (4, "structured", "test")
    assert lesson.text.startswith("Lessons after 30 evaluations")
    expected = "had not written the lesson" if route else "cut off while thinking"
    assert expected in lesson.data["model_error"]


def test_recent_outcomes_kept_between_lessons_equal_a_fresh_read(tmp_path: Path) -> None:
    """The engine's lessons read only the evaluations since the last lesson; what they see must equal a full read,
    after new evaluations (more than the window too), a re-timing of a child and of a parent, and a parent that
    is stored or evaluated only after its child."""
    store = Store.in_dir(tmp_path, readonly=False)
    kept = RecentOutcomes(store, window=5)
    rng = random.Random(3)

    def made(parent: Program | None, op: str = "constants") -> Program:
        child = Program(source=f"X = {rng.random()}\n", parents=(parent.id,) if parent else (), operator=op,
                        meta={"changed": [{"name": "X", "line": 1}]})
        store.add_program(child, None)
        return child

    def evaluate(p: Program, score: float | None) -> None:
        p.status, p.score = (Status.EVALUATED, score) if score is not None else (Status.FAILED, None)
        p.error = None if score is not None else "invalid output 7"
        p.verdict = None if score is not None else json.dumps({"reasons": [{"check": "c", "reason": "r"}]})
        store.record_evaluation(p, {"admission": "new" if score is not None else None,
                                    "reason_kind": None if score is not None else "invalid", "reason": p.error},
                                None)

    def same() -> None:
        assert kept.read() == list(recent_outcomes(store, 5))

    seed = made(None, "seed")
    evaluate(seed, 1.0)
    same()
    children = [made(seed) for _ in range(3)]
    for c in children:
        evaluate(c, rng.random())
    same()
    for c in [made(children[0]) for _ in range(8)]:  # more than the window at once
        evaluate(c, rng.random() if rng.random() < 0.7 else None)
    same()
    newest = kept.read()[0]
    retimed = store.get_program(newest.program_id)
    retimed.score = 42.0
    store.record_retiming(retimed, {"old": newest.score, "new": 42.0})
    same()
    parent = store.get_program(kept.read()[1].program_id)  # a parent of a child made now, re-timed after
    child = made(parent)
    evaluate(child, 0.5)
    same()
    if parent.score is not None:
        parent.score += 1.0
        store.record_retiming(parent, {})
        same()
    late = Program(source="X = 0\n", operator="constants")  # the parent enters the store after its child
    orphan = made(late)
    evaluate(orphan, 0.25)
    same()
    assert kept.read()[0].parent_score is None
    store.add_program(late, None)
    evaluate(late, 3.0)
    same()
    assert kept.read()[1].parent_score == 3.0
    store.close()


def test_lesson_tallies_equal_one_outcome_at_a_time(tmp_path: Path) -> None:
    """`collect` tallies each group at once; the figures (gains in order, names in order of first sight) must be
    those of adding the outcomes one at a time, as it did before."""
    rng = random.Random(7)
    scores = [None, 0.0, 1.0, 1.5, -2.0, float("inf"), float("nan"), 1e308, -1e308, 5e-324]
    outcomes = []
    for i in range(600):
        ok = rng.random() < 0.8
        changed = [{"name": rng.choice(["A", "B", "C", None]), "line": rng.randint(1, 9)}
                   for _ in range(rng.randint(0, 3))]
        meta = rng.choice([{"changed": changed}, {"mode": "diff", "n_blocks": rng.randint(1, 5)}, {"mode": "rewrite"}, {}])
        outcomes.append(Outcome(rng.choice(["constants", "params", "llm_diff", "seed"]), ok,
                                rng.choice(["new", "improve", "rejected", None]), rng.choice(scores) if ok else None,
                                rng.choice(scores), None if ok else "invalid", None if ok else f"bad {i}", None, meta,
                                f"p{i}", rng.choice([None, f"p{i - 1}"])))

    def one_at_a_time(groups: dict[str, list[Outcome]]) -> list[tuple[str, int, int, int, int, list[float]]]:
        out = []
        for name, group in groups.items():
            tried = failed = admitted = improved = 0
            gains: list[float] = []
            for o in group:
                tried += 1
                failed += not o.ok
                admitted += o.admission in ("new", "improve")
                if o.ok and o.score is not None and o.parent_score is not None:
                    gains.append(o.score - o.parent_score)
                    improved += o.score > o.parent_score
            out.append((name, tried, failed, admitted, improved, gains))
        return out

    expected: dict[str, dict[str, list[Outcome]]] = {"operators": {}, "changes": {}, "parameters": {}}
    for o in outcomes:
        if o.operator == "seed":
            continue
        expected["operators"].setdefault(o.operator, []).append(o)
        expected["changes"].setdefault(_kind_of_change(o), []).append(o)
        for c in o.meta.get("changed") or []:
            expected["parameters"].setdefault(str(c.get("name") or f"the literal on line {c.get('line')}"), []).append(o)
    store = Store.in_dir(tmp_path, readonly=False)
    stats = collect(store, load_task("math/circle_packing_26"), 600, outcomes=outcomes)
    store.close()
    for field_name, groups in expected.items():
        got = [(name, t.tried, t.failed, t.admitted, t.improved, t.gains) for name, t in getattr(stats, field_name).items()]
        # nan != nan: compare gains by their text
        assert repr(got) == repr(one_at_a_time(groups)), field_name


def test_a_lessons_unexplored_regions_are_those_of_every_islands_table(old_run: Path) -> None:
    from evo.lessons import unexplored
    from evo.population.grid import GridCells
    from evo.population.islands import Population
    from evo.task import DescriptorSpec

    specs = [DescriptorSpec("a", -1.0, 1.0, 16), DescriptorSpec("b", 0.0, 3.0, 5)]
    population = Population(lambda: GridCells(specs), n_islands=2, migration_interval=7)
    rng = random.Random(3)
    for i in range(120):  # left unflushed in part: the keeper reads the archive as `tables()` does
        population.admit(f"p{i}", i % 2, rng.random(), [rng.uniform(-1.3, 0.2), rng.choice([0.1, 1.7, 2.9])])
    expected = unexplored(specs, [r["descriptors"] for t in population.tables() for r in t], 80)
    assert any("no elite in" in line for line in expected)
    store = Store.in_dir(old_run, readonly=True)
    try:
        keeper = LessonKeeper(store, load_task(str(_task(old_run.parent / "again"))), 0)
        stats = keeper._stats(30, population)
    finally:
        store.close()
    assert stats.unexplored == expected


def test_lessons_from_a_run_with_nothing_to_learn_is_refused_before_the_run(old_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    Store.in_dir(empty).close()  # a store and no evaluation
    result = subprocess.run(
        [sys.executable, "-m", "evo", "run", str(old_run.parent / "quad"), "--run-dir", str(tmp_path / "new"),
         "--budget", "4", "--lessons-from", str(empty), "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "that run has no evaluation and no lesson to learn from" in result.stderr
    assert not (tmp_path / "new").exists()


def test_evo_show_cuts_a_long_lesson_at_a_word_and_prints_it_whole_with_lessons(old_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evo.cli import cli

    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    words = [f"word{i:04d}" for i in range(400)]  # 3,600 characters: past the summary's 1,500
    store = Store.in_dir(run)
    try:
        last = lessons(store)[-1]
        add_lesson(store, last.run, last.task, 31, "structured", " ".join(words))
    finally:
        store.close()
    cut = CliRunner().invoke(cli, ["show", str(run)], terminal_width=200)
    assert cut.exit_code == 0, cut.output
    shown = [w for w in cut.output.split() if w.startswith("word")]
    assert 100 < len(shown) < 400 and shown == words[:len(shown)]  # no word cut in two
    assert f"{len(' '.join(words)) - len(' '.join(shown))} more characters: evo show RUN_DIR --lessons" in cut.output
    whole = CliRunner().invoke(cli, ["show", str(run), "--lessons"], terminal_width=200)
    assert whole.exit_code == 0, whole.output
    assert [w for w in whole.output.split() if w.startswith("word")] == words and "more characters" not in whole.output
