"""A joint search over a suite of tasks: the task bandit, transfer between tasks and its credit, and a
two-task suite run through `evo run --suite` and `evo resume`, on real sandboxed evaluations and real stores."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evo.cli import cli
from evo.config import RunConfig
from evo.errors import EvoError, OperatorError
from evo.llm.prompts import build_messages
from evo.operators.base import ProposalRequest
from evo.operators.transplant import ParamTransplant
from evo.program import Program, Status
from evo.store import Store
from evo.store.lessons import lessons
from evo.store.transfer import transfer_credit, transfers
from evo.suite import member_dir
from evo.suite.bandit import TaskBandit
from evo.suite.loop import Suite
from evo.suite.tasks import category, related_tasks, resolve_suite

REFERENCE = '''import numpy as np

TARGET = np.array({target})


def run_candidate(module) -> dict:
    return {{"x": np.asarray(module.solve(), dtype=np.float64)}}


def evaluate(outputs: dict) -> dict:
    x = np.asarray(outputs.get("x"))
    if x.shape != (2,) or not np.all(np.isfinite(x)):
        return {{"valid": False, "metrics": {{}}, "error": f"need 2 finite numbers, got shape {{x.shape}}"}}
    return {{"valid": True, "metrics": {{"loss": float(np.sum((x - TARGET) ** 2)), "x0": float(x[0])}}, "error": None}}
'''
TASK_TOML = '''description = "Suite test task: two numbers near a target."
family = "math"
objective = "minimize"
metric = "loss"

[evaluation]
timeout_s = 10
memory_mb = 512

[[descriptors]]
name = "x0"
low = -1.0
high = 1.0
bins = 8
'''
SEED_AT = '''A = {a}  # evo: float(-1.0, 1.0)
B = {b}  # evo: float(-1.0, 1.0)


def solve():
    return [A, B]
'''
SEED = SEED_AT.format(a=0.0, b=0.0)
CONFIG = '''workers = 2
lessons_every = 0
[operators]
params = 1.0
transplant = 1.0
'''


@pytest.fixture()
def tasks_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two cheap math tasks, `pair/near_a` and `pair/near_b`, whose seeds declare the same parameters."""
    root = tmp_path / "tasks"
    # Seeds that start apart: a transplant has another legal value to carry from the first proposal on (with
    # equal seeds it had none until a task's elite moved, and a 12-evaluation run made no transplant 1 in 5).
    for name, target, start in (("near_a", [0.3, -0.2], (0.1, -0.1)), ("near_b", [0.35, -0.25], (0.0, 0.0))):
        folder = root / "pair" / name
        folder.mkdir(parents=True)
        (folder / "task.toml").write_text(TASK_TOML)
        (folder / "reference.py").write_text(REFERENCE.format(target=target))
        (folder / "seed.py").write_text(SEED_AT.format(a=start[0], b=start[1]))
    monkeypatch.setenv("EVO_TASKS_PATH", str(root))
    return root


def _evo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evo", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))


def _evaluated_per_program(run_dir: Path, tasks: tuple[str, ...] = ("pair/near_a", "pair/near_b")) -> Counter[str]:
    """How many `evaluated` events each program of each task got (never more than one)."""
    counts: Counter[str] = Counter()
    for task in tasks:
        store = Store.in_dir(member_dir(run_dir, task), readonly=True)
        try:
            counts.update(pid for _, _, _, pid, _ in store.events("evaluated"))
        finally:
            store.close()
    return counts


# -- the bandit ------------------------------------------------------------------------------------------


def test_the_floor_keeps_a_stalled_task_in_the_search() -> None:
    bandit = TaskBandit(["rising", "stalled", "flat"], floor=0.3, window=8, warmup=2)
    rng = np.random.default_rng(0)
    for name in bandit.tasks:
        bandit.observe(name, 1.0, seed=True)
    best = 1.0
    for _ in range(600):
        name = bandit.choose(rng)
        bandit.grant(name)
        if name == "rising":
            best *= 1.05
            bandit.observe(name, best)
        else:
            bandit.observe(name, 0.5)  # worse than the seed: no rise
    granted = bandit.granted()
    assert sum(granted.values()) == 600
    for name in ("stalled", "flat"):  # the floor: at least 0.3 / 3 of the proposals each
        assert granted[name] >= 0.1 * 600 - 1, granted
    assert granted["rising"] > 0.7 * 600, granted  # the rest goes where progress is made


def test_allocation_follows_recent_improvement_per_evaluation() -> None:
    bandit = TaskBandit(["a", "b"], floor=0.0, window=4, warmup=1)
    bandit.observe("a", 1.0, seed=True)
    bandit.observe("b", 10.0, seed=True)
    assert bandit.value("a") == bandit.value("b") == 1.0  # no child yet: optimistic alike
    bandit.observe("a", 1.1)  # +10 % in one evaluation
    bandit.observe("b", 10.5)  # +5 %, relative to its own scale
    bandit.observe("b", None)  # a failure: an evaluation without a rise
    assert bandit.value("a") == pytest.approx(0.1)
    assert bandit.value("b") == pytest.approx(0.025)
    for _ in range(4):  # the window forgets a's old rise
        bandit.observe("a", 1.0)
    assert bandit.value("a") == 0.0
    picks = Counter(bandit.choose(np.random.default_rng(i)) for i in range(200))
    assert picks["b"] > 190  # a's value is 0: only the epsilon keeps it drawn at all


def test_the_bandit_refuses_bad_settings_and_an_empty_choice() -> None:
    with pytest.raises(ValueError, match="floor must be a fraction"):
        TaskBandit(["a"], floor=1.5)
    with pytest.raises(ValueError, match="no task can take a proposal"):
        TaskBandit(["a"]).choose(np.random.default_rng(0), [])


# -- transfer --------------------------------------------------------------------------------------------


def _request(parent: str, *foreign: Program) -> ProposalRequest:
    return ProposalRequest(parents=[Program(source=parent)], rng=np.random.default_rng(1), foreign=list(foreign))


def test_transplant_writes_a_related_tasks_settings_and_names_its_donor() -> None:
    donor = Program(source=SEED.replace("A = 0.0", "A = 0.3").replace("B = 0.0", "B = -0.2"),
                    meta={"task": "pair/near_b"})
    children = []
    for seed in range(6):
        request = _request(SEED, donor)
        request.rng = np.random.default_rng(seed)
        (child,) = asyncio.run(ParamTransplant().propose(request))
        children.append(child)
        assert child.meta["transfer"] == [{"task": "pair/near_b", "program": donor.id, "role": "parent"}]
        assert "A = 0.3" in child.source or "B = -0.2" in child.source
    assert any("A = 0.3" in c.source and "B = -0.2" in c.source for c in children)  # the whole setting, at times
    with pytest.raises(OperatorError, match="suite run"):
        asyncio.run(ParamTransplant().propose(_request(SEED)))
    stranger = Program(source="N = 3  # evo: int(1, 9)\n", meta={"task": "other/t"})
    with pytest.raises(OperatorError, match="of other/t"):
        asyncio.run(ParamTransplant().propose(_request(SEED, stranger)))


def test_a_prompt_shows_related_tasks_elites_labelled_as_another_tasks() -> None:
    elite = Program(source="def solve():\n    return [0.3, -0.2]\n", metrics={"loss": 0.01}, meta={"task": "pair/near_b"})
    text = build_messages("diff", "Put two numbers near a target.", [Program(source=SEED)], foreign=[elite])[1]["content"]
    assert "related tasks" in text and "From another task, pair/near_b" in text
    assert text.index("From another task") < text.index("# The program to change")


def test_related_kernel_tasks_share_their_declared_parameters() -> None:
    from evo.embed import make_embedder
    from evo.task import load_task

    names = ["kernels/rmsnorm_fwd", "kernels/layernorm_fwd", "kernels/gemm_bias_relu", "kernels/gemm_bias_gelu"]
    tasks = [load_task(n) for n in names]
    assert category(tasks[0].seeds()) == ("BLOCK_ROWS", "NUM_WARPS")
    related = related_tasks(tasks, make_embedder("ngram"), k=1)
    assert related["kernels/gemm_bias_relu"][0].task == "kernels/gemm_bias_gelu"
    assert related["kernels/gemm_bias_relu"][0].same_category
    assert related["kernels/rmsnorm_fwd"][0].task == "kernels/layernorm_fwd"
    assert all(r.task != "kernels/rmsnorm_fwd" for r in related["kernels/rmsnorm_fwd"])


def test_a_suite_spec_names_a_family_globs_and_lists() -> None:
    assert len(resolve_suite("kernels")) >= 30
    assert resolve_suite("kernels/rmsnorm_*,kernels/rmsnorm_fwd") == ["kernels/rmsnorm_bwd", "kernels/rmsnorm_fwd",
                                                                     "kernels/rmsnorm_gemm"]
    with pytest.raises(EvoError, match="matches no task"):
        resolve_suite("kernels/nothing_*")
    with pytest.raises(EvoError, match="at least two"):
        resolve_suite("kernels/rmsnorm_fwd")


def test_transfer_credit_counts_admissions_and_rises_of_the_best(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    seed = Program(source="s = 0\n", operator="seed")
    plain = Program(source="s = 1\n", operator="params", parents=(seed.id,))
    moved = Program(source="s = 2\n", operator="transplant", parents=(seed.id,),
                    meta={"transfer": [{"task": "pair/near_b", "program": "x" * 32, "role": "parent"}]})
    worse = Program(source="s = 3\n", operator="llm_diff", parents=(seed.id,),
                    meta={"transfer": [{"task": "pair/near_c", "program": "y" * 32, "role": "inspiration"}]})
    for p, score in ((seed, 1.0), (plain, 1.5), (moved, 2.5), (worse, 0.5)):
        store.add_program(p, None)
        p.status, p.score = Status.EVALUATED, score
        store.record_evaluation(p, {"ok": True}, None if p is worse else {"cell": 0})
    assert set(transfers(store)) == {moved.id, worse.id}
    credit = transfer_credit(store)
    assert (credit.admitted, credit.admitted_transfer, credit.proposed_transfer) == (2, 1, 2)
    assert (credit.improvements, credit.improvements_transfer) == (2, 1)
    assert credit.share == pytest.approx(1.0 / 1.5)  # 1.5 -> 2.5 of the whole rise 1.0 -> 2.5
    assert dict(credit.by_task) == {"pair/near_b": 1}
    store.close()
    old = Store.in_dir(tmp_path / "old")  # a store written before transfers: none, and no error
    old.close()
    assert transfer_credit(Store.in_dir(tmp_path / "old", readonly=True)).proposed_transfer == 0


# -- a suite run -----------------------------------------------------------------------------------------


def test_a_two_task_suite_through_evo_run_and_evo_show(tasks_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "suite.toml"
    config.write_text(CONFIG)
    run_dir = tmp_path / "suite"
    # In this process (the engine's imports are paid already); `evo show` and `evo resume` below are subprocesses.
    cli.main(["run", "--suite", "pair/*", "--run-dir", str(run_dir), "--budget", "12", "--config", str(config),
              "--suite-floor", "0.5", "--quiet"], standalone_mode=False)
    assert "budget spent" in capsys.readouterr().out
    per_task = {}
    made_by_transplant = 0
    for task, other in (("pair/near_a", "pair/near_b"), ("pair/near_b", "pair/near_a")):
        store = Store.in_dir(member_dir(run_dir, task), readonly=True)
        per_task[task] = store.count_evaluations()
        moved = transfers(store)
        for p in store.iter_programs():
            if p.operator == "transplant":
                made_by_transplant += 1
                assert [(t, role) for t, _, role in moved[p.id]] == [(other, "parent")]
        store.close()
    assert sum(per_task.values()) == 12  # one budget for the suite
    assert min(per_task.values()) >= 12 * 0.5 / 2 - 1  # the floor: a quarter each, less one in flight
    assert made_by_transplant > 0
    shown = _evo("show", str(run_dir))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "pair/near_a" in shown.stdout and "through transfer:" in shown.stdout
    alone = _evo("resume", str(member_dir(run_dir, "pair/near_a")))
    assert alone.returncode != 0 and "is a task of the suite" in alone.stderr
    assert f"evo show {member_dir(run_dir, 'pair/near_a')}`" in shown.stdout  # the hint names a real folder
    # --lessons-from a suite's directory takes the lessons of the same task's run in it.
    after = _evo("run", "pair/near_b", "--run-dir", str(tmp_path / "after"), "--budget", "3", "--config", str(config),
                 "--lessons-from", str(run_dir), "--quiet")
    assert after.returncode == 0, after.stderr[-2000:]
    store = Store.in_dir(tmp_path / "after", readonly=True)
    carried = lessons(store, carried=True)
    store.close()
    assert carried and {x.carried_from for x in carried} == {str(member_dir(run_dir, "pair/near_b"))}
    assert {x.task for x in carried} == {"pair/near_b"}


def test_a_stopped_suite_resumes_with_nothing_lost_or_counted_twice(tasks_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "suite"
    config = RunConfig.from_dict({"budget": 12, "workers": 2, "lessons_every": 0, "operators": {"params": 1.0}})
    suite = Suite.create(run_dir, "pair/near_a,pair/near_b", config)

    def stop_early(s: Suite) -> None:
        if s.done >= 4:
            s.request_stop("test")

    asyncio.run(suite.run_async(on_tick=stop_early))
    stopped_at = suite.done
    observed = {t: (st["children"], st["best"]) for t, st in suite.bandit.state().items()}
    suite.close()
    assert 4 <= stopped_at < 12
    resumed = Suite.open(run_dir, {"budget": 12})
    assert resumed.done == stopped_at
    # The bandit is replayed from the tasks' stores: what it saw live, it sees again.
    assert {t: (st["children"], st["best"]) for t, st in resumed.bandit.state().items()} == observed
    resumed.run()
    counts = _evaluated_per_program(run_dir)
    assert sum(counts.values()) == 12  # exactly the budget over both sessions
    assert max(counts.values()) == 1  # no program evaluated (or counted) twice


@pytest.mark.slow
def test_a_suite_of_kernel_tasks_shares_one_worker_pool(tmp_path: Path) -> None:
    """Kernel tasks of a suite share one zygote and one judge per GPU (not one each), every task's data kept, and
    the shared pool is closed with the suite: a two-kernel suite on the CPU (Triton's interpreter), then resumed."""
    config = RunConfig.from_dict({"budget": 5, "workers": 2, "lessons_every": 0, "retime_on_resume": False,
                                  "operators": {"params": 1.0}})
    suite = Suite.create(tmp_path / "suite", "kernels/rmsnorm_fwd,kernels/silu_fwd", config)
    pools = {id(e.evaluator.backend.pool) for e in suite.parts.members.values()}  # type: ignore[attr-defined]
    assert len(pools) == 1 and suite.parts.pool is not None
    workers = suite.parts.pool.workers
    suite.run()
    assert all(w.proc.poll() is not None for w in workers)  # closed with the suite
    resumed = Suite.open(tmp_path / "suite", {"budget": 6})
    resumed.run()
    counts = _evaluated_per_program(tmp_path / "suite", ("kernels/rmsnorm_fwd", "kernels/silu_fwd"))
    assert sum(counts.values()) == 6 and max(counts.values()) == 1
    stores = [Store.in_dir(member_dir(tmp_path / "suite", t), readonly=True)
              for t in ("kernels/rmsnorm_fwd", "kernels/silu_fwd")]
    try:  # each task's seed was judged (on its own task's data): none failed for the shared worker's memory
        for store in stores:
            seeds = [p for p in store.iter_programs() if p.operator == "seed"]
            assert seeds and all(p.status is Status.EVALUATED for p in seeds), [(p.status, p.error) for p in seeds]
    finally:
        for store in stores:
            store.close()
