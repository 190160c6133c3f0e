"""Time to target, trusted side: train a candidate over seeds, decide with a t-test, time it against the record.

    rule = resolve_rule(task_root, spec.device)          # target_bpb, seeds, alpha ([training], [training.cpu])
    cascade = run_cascade(spec, rule, files, scratch)    # seeds one at a time; stops when the first misses
    decision = decide(losses, rule.target_bpb, alpha)    # one-sided one-sample t-test (scipy)
    evaluator = TimeToTargetEvaluator(spec, rule, ...)   # the family's backend for such a task

The candidate trains for the schedule it declares and returns its model; `train_one` (harness.py) times it
from outside, from the process's start to the weights' arrival, and `score_weights` computes validation bits
per byte in the trusted scorer. Nothing is measured during training, so a run cannot stop on a lucky
validation reading. The cascade trains seed 0, scores it, and goes on to the other seeds only when that first
loss is below the target; the candidate is valid only when the mean bpb over all its seeds is below the target
at p < alpha (`scipy.stats.ttest_1samp(..., alternative="less")`). Its fitness is the mean training time.

The record (the fastest valid candidate this evaluator has timed) is re-timed in this same session, on this
machine, before a challenger that beats its time is allowed to replace it: the challenger's time is then
expressed on the record's clock (`measured * record_time / record_retimed`), so the comparison is between two
runs made minutes apart rather than between today's run and one from another session or load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import statistics
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from evo.errors import EvoError
from evo.eval.backends.base import EvalResult
from evo.eval.training.harness import in_own_folder, score_weights, train_one
from evo.eval.training.launch import remove
from evo.eval.training.spec import TrainingSpec
from evo.program import Program, source_files

KIND = "time_to_target"  # `kind` in a task's [training] table routes it here (evo/eval/families/training.py)


@dataclass(frozen=True)
class TargetRule:
    """When a candidate reaches the target: the mean validation bpb over `seeds` runs is below `target_bpb`
    at p < `alpha` (one-sided). Bits per byte, not nats per token: the target does not depend on the tokenizer."""

    target_bpb: float
    seeds: int = 3
    alpha: float = 0.01


def task_kind(task_root: Path) -> str:
    """`kind` of the task's [training] table: "budget" (fixed budget, the default) or "time_to_target"."""
    raw = _training_table(task_root)
    return str(raw.get("kind", "budget"))


def _training_table(task_root: Path) -> dict:
    path = Path(task_root) / "task.toml"
    try:
        return tomllib.loads(path.read_text()).get("training", {})
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EvoError(f"cannot read {path}: {e}") from e


def resolve_rule(task_root: Path, device: str, **overrides: float) -> TargetRule:
    """The rule of a task on `device`: [training], then [training.cpu] off a GPU, then `overrides`."""
    raw = _training_table(task_root)
    settings = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    if not str(device).startswith("cuda"):
        settings.update(raw.get("cpu", {}))
    settings.update(overrides)
    if "target_bpb" not in settings:
        raise EvoError(f"{Path(task_root) / 'task.toml'}: a time-to-target task needs `target_bpb` in [training]")
    rule = TargetRule(float(settings["target_bpb"]), int(settings.get("seeds", 3)), float(settings.get("alpha", 0.01)))
    if rule.seeds < 2 or not 0 < rule.alpha < 1 or not rule.target_bpb > 0:
        raise EvoError(f"{Path(task_root) / 'task.toml'}: [training] needs seeds >= 2 (a t-test needs a spread), "
                       f"0 < alpha < 1 and target_bpb > 0 (got {rule.seeds}, {rule.alpha}, {rule.target_bpb})")
    return rule


@dataclass(frozen=True)
class Decision:
    """The t-test's answer: valid when the mean is below the target at p < alpha."""

    valid: bool
    mean: float
    p_value: float
    reason: str


def decide(losses: list[float], target: float, alpha: float) -> Decision:
    """One-sided one-sample t-test of H0: mean >= target, as the modded-nanogpt speedrun's rule."""
    try:
        from scipy import stats
    except ImportError:
        raise EvoError("time-to-target tasks need scipy for their t-test: pip install 'evo[training]'") from None
    mean = statistics.fmean(losses)
    if len(losses) < 2:
        return Decision(False, mean, 1.0, f"one seed ({mean:.4f} bpb) cannot be tested: a t-test needs two or more")
    if len(set(losses)) == 1:  # no spread: scipy answers nan; the question is then plain
        p = 0.0 if mean < target else 1.0
    else:
        p = float(stats.ttest_1samp(losses, target, alternative="less").pvalue)
    below = p < alpha
    word = "below" if below else "not below"
    return Decision(below, mean, p, f"mean val_bpb {mean:.4f} over {len(losses)} seeds is {word} the target "
                    f"{target:g} at p < {alpha:g} (p = {p:.3g})")


@dataclass
class SeedRun:
    """One seed trained and scored."""

    seed: int
    train_s: float
    val_bpb: float
    val_loss: float
    params: int
    tokens_seen: int


@dataclass
class Cascade:
    """What the cascade measured: the seeds run (in order), every check, and the failure that stopped it."""

    runs: list[SeedRun] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    failure: str | None = None
    error: str | None = None
    decision: Decision | None = None

    @property
    def valid(self) -> bool:
        return self.failure is None and self.decision is not None and self.decision.valid


def _own_folder(scratch: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="trusted-", dir=scratch))
    os.chmod(folder, 0o700)  # the harness's: the sandbox uid cannot even look in
    return folder


def _tag(checks: list[tuple[str, bool, str]], seed: int) -> list[tuple[str, bool, str]]:
    return [(name, passed, f"seed {seed}: {reason}") for name, passed, reason in checks]


def run_cascade(spec: TrainingSpec, rule: TargetRule, files: dict[str, str], scratch: Path) -> Cascade:
    """Train and score seed 0, then (only if it is below the target) seeds 1 .. rule.seeds - 1; then the test.
    Each seed is `train_one` in a fresh process and work dir and `score_weights` in a fresh scorer."""
    out = Cascade()
    for seed in range(rule.seeds):
        seeded = spec.with_(seed=seed)
        folder = _own_folder(scratch)
        try:
            trained = train_one(seeded, files, folder)
            out.checks += _tag(trained.checks, seed)
            if not trained.ok:
                out.failure, out.error = trained.failure, f"seed {seed}: {trained.error}"
                return out
            scored = score_weights(seeded, files, trained)
            out.checks += _tag(scored.checks, seed)
            if not scored.ok:
                out.failure, out.error = scored.failure, f"seed {seed}: {scored.error}"
                return out
        finally:
            remove(folder)
        refused = [f"{name}: {reason}" for name, passed, reason in out.checks if not passed]
        if refused:  # a failed check: no further seed, and no score (the full audit says the same)
            out.failure, out.error = "audit", "; ".join(refused)[:2000]
            return out
        out.runs.append(SeedRun(seed, trained.train_s, float(scored.val_bpb), float(scored.val_loss),
                                trained.params, trained.tokens_seen))
        if seed == 0 and scored.val_bpb >= rule.target_bpb:
            out.failure = "invalid"
            out.error = (f"seed 0 reached val_bpb {scored.val_bpb:.4f}, not below the target {rule.target_bpb:g}: "
                         f"no further seed was trained ({rule.seeds - 1} skipped)")
            return out
    out.decision = decide([r.val_bpb for r in out.runs], rule.target_bpb, rule.alpha)
    if not out.decision.valid:
        out.failure, out.error = "invalid", out.decision.reason
    return out


def time_again(spec: TrainingSpec, files: dict[str, str], scratch: Path, seeds: int) -> float | None:
    """The mean training time of `seeds` fresh runs of `files` (trained, not scored: its loss was tested
    already); None when any run fails or fails a check."""
    times = []
    for seed in range(seeds):
        folder = _own_folder(scratch)
        try:
            trained = train_one(spec.with_(seed=seed), files, folder)
        finally:
            remove(folder)
        if not trained.ok or not all(passed for _, passed, _ in trained.checks):
            return None
        times.append(trained.train_s)
    return statistics.fmean(times)


@dataclass
class Record:
    """The fastest valid candidate timed by this evaluator: its files, its fitness (seconds, on the clock the
    session's scores are on) and how many seeds it was timed over."""

    files: dict[str, str]
    fitness_s: float
    seeds: int


def _metrics(cascade: Cascade, rule: TargetRule) -> dict[str, float]:
    runs = cascade.runs
    metrics = {"target_bpb": rule.target_bpb, "seeds_trained": float(len(runs))}
    if runs:
        bpb, secs = [r.val_bpb for r in runs], [r.train_s for r in runs]
        metrics.update(val_bpb=statistics.fmean(bpb), val_loss=statistics.fmean(r.val_loss for r in runs),
                       train_s_measured=statistics.fmean(secs), params=float(runs[0].params),
                       tokens_seen=statistics.fmean(float(r.tokens_seen) for r in runs),
                       val_bpb_std=statistics.stdev(bpb) if len(bpb) > 1 else 0.0,
                       train_s_std=statistics.stdev(secs) if len(secs) > 1 else 0.0)
    if cascade.decision is not None and math.isfinite(cascade.decision.p_value):
        metrics["p_value"] = cascade.decision.p_value
    return metrics


class TimeToTargetEvaluator:
    """The backend of a time-to-target task: the cascade per candidate, `workers` at once in threads of this
    process (their candidate code in sandboxed children), and the session's record re-timed before a
    challenger replaces it. Timing is only fair one at a time per device: give it one worker per GPU."""

    def __init__(self, spec: TrainingSpec, rule: TargetRule, workers: int, scratch: Path,
                 descriptors: tuple[str, ...] = ()):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.spec, self.rule, self.workers, self.descriptors = spec, rule, workers, descriptors
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(self.scratch, 0o755)
        self.record: Record | None = None
        self._record_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evo-ttt")

    async def evaluate(self, program: Program) -> EvalResult:
        loop = asyncio.get_running_loop()
        with in_own_folder(self.scratch, program.id) as own:
            return await loop.run_in_executor(self._pool, self.evaluate_files, source_files(program.source), own)

    def evaluate_files(self, files: dict[str, str], scratch: Path) -> EvalResult:
        """The cascade, the test, and the fitness (mean training time, on the record's clock when re-timed)."""
        start = time.perf_counter()
        cascade = run_cascade(self.spec, self.rule, files, scratch)
        metrics = _metrics(cascade, self.rule)
        report = {"seeds": [dataclasses.asdict(r) for r in cascade.runs], "target_bpb": self.rule.target_bpb,
                  "decision": cascade.decision.reason if cascade.decision else cascade.error}
        if not cascade.valid:
            return EvalResult(False, metrics=metrics, failure=cascade.failure, error=cascade.error,
                              wall_s=time.perf_counter() - start, checks=cascade.checks, report=report)
        metrics["train_s"] = self._fitness(files, metrics, scratch)
        desc = tuple(metrics.get(name, 0.0) for name in self.descriptors)
        return EvalResult(True, -metrics["train_s"], metrics, desc, wall_s=time.perf_counter() - start,
                          checks=cascade.checks, report=report)

    def _fitness(self, files: dict[str, str], metrics: dict[str, float], scratch: Path) -> float:
        """The challenger's time; when it beats the record's, the record is timed again first and the
        challenger's time is put on the record's clock. A faster one becomes the record."""
        measured = metrics["train_s_measured"]
        with self._record_lock:  # one re-timing at a time, and the record read and replaced as one step
            record, fitness = self.record, measured
            if record is not None and measured < record.fitness_s:
                again = time_again(self.spec, record.files, scratch, record.seeds)
                if again is not None:
                    metrics.update(record_train_s=record.fitness_s, record_retimed_s=again)
                    fitness = measured * record.fitness_s / again
            if record is None or fitness < record.fitness_s:
                self.record = Record(dict(files), fitness, int(metrics["seeds_trained"]))
        return fitness

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
