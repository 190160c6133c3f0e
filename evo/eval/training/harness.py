"""The training harness, trusted side: train one seed, score the weights, and the backend that does both.

    outcome = train_one(spec, files, folder)        # a sandboxed training process; the weights as data
    scored = score_weights(spec, files, outcome)    # the trusted scorer process: validation bpb and checks
    result = evaluate(spec, files, scratch)         # both, as the pipeline's EvalResult

`train_one` starts the candidate's training process (`trainer_child.py`) in the sandbox with only copies of
the training shards in its work dir (the held-out shards cannot be opened: `read_guard.py`), keeps the
budget on its own clock from the moment the process starts (start-up, imports and compilation count),
takes the weights as they arrive over the socket, and then watches the process from /proc: once its model
is taken, no other process of its sandbox may live and none of its threads may keep working. A model that
has not arrived by the budget plus the grace fails, and the process tree is killed. Every seed is a fresh
process in a fresh work dir, deleted afterwards; the sandbox lets it write nowhere else.

`score_weights` runs `scorer.py` in a fresh trusted interpreter, which computes the loss itself.
`time_to_target` (or anything else) can call the two in its own order: per seed, then a test over seeds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evo.data.shards import load_manifest
from evo.errors import EvoError
from evo.eval import wire
from evo.eval.backends.base import EvalResult
from evo.eval.fs_guard import looks_refused
from evo.eval.training.launch import DATA_SPLIT, ChildFailed, held_out, remove, start_child
from evo.eval.training.link import quiet
from evo.eval.training.spec import TrainingSpec
from evo.program import Program, source_files

if TYPE_CHECKING:
    from evo.eval.families.base import Job

BUDGET, CARRIED = "dynamic:budget", "dynamic:no_carried_state"
_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class TrainOutcome:
    """One seed's training: where its weights are (a folder only the trusted side writes), what was measured."""

    ok: bool
    folder: Path
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    train_s: float = 0.0
    params: int = 0
    tokens_seen: int = 0
    raw_access: bool = False
    failure: str | None = None
    error: str | None = None


def _leftovers(scratch: Path, before: set[str], allowed: set[str]) -> list[str]:
    try:
        now = set(os.listdir(scratch))
    except OSError:
        return []
    return sorted(now - before - allowed)


def train_one(spec: TrainingSpec, files: dict[str, str], folder: Path) -> TrainOutcome:
    """Train the candidate once (seed `spec.seed`) in a fresh sandboxed process; the weights land in
    `folder` (`weights.json`, `weights.bin`), which the caller made and which no candidate process can write."""
    manifest = load_manifest(Path(spec.data))
    workdir = folder.parent / f"{folder.name}-train"
    scratch = folder.parent
    before = set(os.listdir(scratch))
    out = TrainOutcome(False, folder)
    (workdir / "data").mkdir(parents=True)
    copies = []
    for i, path in enumerate(manifest.shard_paths("train")):  # copies: a link would let the candidate write ours
        copy = workdir / "data" / f"train_{i:03d}.bin"
        shutil.copyfile(path, copy)
        copies.append(str(copy))
    job = {"files": files, "vocab_size": manifest.vocab_size, "train_shards": copies}
    timeout = spec.budget_s + spec.grace_s + 30  # the sandbox's own backstop; the harness kills sooner
    link = None
    try:
        try:
            # The candidate's view of the deadline; the harness's clock starts a moment later, with the process.
            extra = {"deadline": time.monotonic() + spec.budget_s}
            link, out.checks = start_child("trainer_child", spec, job, workdir, timeout, extra)
        except ChildFailed as e:
            return _failed(out, str(e), "crashed")
        deadline = link.started + spec.budget_s + spec.grace_s
        link.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            header, payload = wire.recv(link.sock, max_payload=int(spec.max_weight_mb) << 20)
        except TimeoutError:
            _kill(link.pid)
            out.checks.append((BUDGET, False, f"no model after the budget of {spec.budget_s:g} s and the grace of "
                               f"{spec.grace_s:g} s (measured by the harness from the process's start): killed"))
            return _failed(out, out.checks[-1][2], "timeout")
        except (wire.WireError, OSError) as e:
            reason = link.why_gone("before it returned a model")
            if link.result is not None and link.result.status == "timeout":
                out.checks.append((BUDGET, False, reason))
            tail = link.result.stderr_tail if link.result is not None else ""
            if any(Path(p).name in tail for p in held_out(spec.data)) and looks_refused(tail):
                out.checks.append((DATA_SPLIT, False, f"it tried to open a held-out shard and was refused: {reason}"))
            elif looks_refused(reason):
                out.checks.append((CARRIED, False, f"a write outside its work dir was refused: {reason}"))
            hung = isinstance(e, (wire.HungUp, OSError))
            return _failed(out, reason if hung else f"malformed weights from the training process: {e}", "crashed")
        out.train_s = time.monotonic() - link.started
        if out.train_s > spec.budget_s + spec.grace_s:
            out.checks.append((BUDGET, False, f"the model arrived after {out.train_s:.1f} s (budget {spec.budget_s:g} s"
                               f" + grace {spec.grace_s:g} s)"))
            return _failed(out, out.checks[-1][2], "timeout")
        busy = quiet(link.pid) if link.pid else "the training process's pid is unknown"
        _kill(link.pid)  # taken: nothing it does from now on can matter, and nothing of it may go on
        if busy:
            out.checks.append((BUDGET, False, f"work after train() returned: {busy}"))
            return _failed(out, out.checks[-1][2], "audit")
        out.checks.append((BUDGET, True, f"model after {out.train_s:.1f} s of {spec.budget_s:g} s"))
        names, meta = header.get("names"), header.get("meta")
        if not isinstance(names, list) or not isinstance(meta, list) or len(names) != len(meta) or \
                not all(isinstance(n, str) for n in names):
            return _failed(out, "the training process sent malformed weights", "invalid")
        (folder / "weights.bin").write_bytes(bytes(payload or b""))
        (folder / "weights.json").write_text(json.dumps({"names": names, "meta": meta}))
        out.params = sum(_numel(m) for m in meta)
        out.tokens_seen = int(header.get("tokens_handed_out", 0) or 0)
        out.raw_access = bool(header.get("raw_access"))
    finally:  # also after a `return _failed(out, ...)` above: the checks below join that same `out`
        if link is not None:
            link.close()
            fs = link.write_guard or (link.result.fs_guard if link.result is not None else "")
            left = _leftovers(scratch, before, {workdir.name, folder.name})
            if left:
                out.checks.append((CARRIED, False, f"files left beside the work dir: {', '.join(left[:5])}"))
            elif not fs.startswith("filesystem isolation: landlock"):
                out.checks.append((CARRIED, False, f"the write guard was not active ({fs or 'no report'})"))
            elif not any(c[0] == CARRIED for c in out.checks):
                out.checks.append((CARRIED, True, "fresh process and work dir; writes only beneath it"))
        remove(workdir)
    out.ok = True
    return out


def _numel(meta: Any) -> int:
    n = 1
    for s in meta.get("shape", []) if isinstance(meta, dict) else []:
        n *= int(s)
    return n if isinstance(meta, dict) and meta.get("type") == "Tensor" else 0


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, 9)  # the sandbox's init follows it, and with it everything left in the namespace
        except (ProcessLookupError, PermissionError):
            pass


def _failed(out: TrainOutcome, error: str, failure: str) -> TrainOutcome:
    out.ok, out.error, out.failure = False, error[:2000], failure
    return out


@dataclass
class ScoreOutcome:
    """The trusted scorer's answer (`scorer.py`): bpb and its checks, or why it could not score."""

    ok: bool
    val_bpb: float | None = None
    val_loss: float | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    failure: str | None = None
    error: str | None = None


def score_weights(spec: TrainingSpec, files: dict[str, str], trained: TrainOutcome) -> ScoreOutcome:
    """Validation bpb of the weights in `trained.folder`, by the trusted scorer in a fresh interpreter."""
    folder = trained.folder
    manifest = load_manifest(Path(spec.data))
    (folder / "score.json").write_text(json.dumps({"spec": spec.to_dict(), "files": files,
                                                   "vocab_size": manifest.vocab_size}))
    batches = spec.eval_tokens // (spec.seq_len * spec.eval_batch) + spec.rescore_batches + 4 * spec.probe_trials
    timeout = 2 * (spec.startup_s + 60) + batches * max(2.0, spec.seq_len * spec.eval_batch / 2e4)
    env = {**os.environ, "PYTHONPATH": str(_REPO_ROOT), "EVO_SCORER_PARENT": str(os.getpid())}
    try:
        # A session of its own: a Ctrl-C at the terminal reaches the engine, which lets this evaluation finish,
        # never the scorer, whose death would be recorded as the candidate's failure.
        proc = subprocess.run([sys.executable, "-P", "-m", "evo.eval.training.scorer", str(folder)], env=env,
                              capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return ScoreOutcome(False, failure="timeout", error=f"scoring took over {timeout:.0f} s")
    result_file = folder / "result.json"
    if proc.returncode != 0 or not result_file.is_file():
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
        return ScoreOutcome(False, failure="crashed", error=f"the scorer failed: {tail[0][:500] if tail else proc.returncode}")
    raw = json.loads(result_file.read_text())
    checks = [tuple(c) for c in raw.get("checks", [])]
    if not raw.get("ok"):
        return ScoreOutcome(False, checks=checks, failure=raw.get("failure", "invalid"), error=raw.get("error"))
    return ScoreOutcome(True, raw["val_bpb"], raw["val_loss"], checks)


def evaluate(spec: TrainingSpec, files: dict[str, str], scratch: Path, descriptors: tuple[str, ...] = ()) -> EvalResult:
    """Train once and score: the pipeline's `EvalResult`, scored (oriented: minus bpb) and with every check."""
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="trusted-", dir=scratch))
    os.chmod(folder, 0o700)  # the harness's: the sandbox uid cannot even look in
    try:
        trained = train_one(spec, files, folder)
        metrics = {"params": float(trained.params), "tokens_seen": float(trained.tokens_seen),
                   "train_s": trained.train_s, "tokens_seen_is_lower_bound": float(trained.raw_access)}
        if not trained.ok:
            return EvalResult(False, metrics=metrics, failure=trained.failure, error=trained.error,
                              wall_s=time.perf_counter() - start, checks=trained.checks)
        scored = score_weights(spec, files, trained)
        checks = trained.checks + scored.checks
        if not scored.ok:
            return EvalResult(False, metrics=metrics, failure=scored.failure, error=scored.error,
                              wall_s=time.perf_counter() - start, checks=checks)
        metrics.update(val_bpb=float(scored.val_bpb), val_loss=float(scored.val_loss))
        refused = [f"{name}: {reason}" for name, passed, reason in checks if not passed]
        if refused:  # scored, but a check failed: no score leaves the harness (the full audit says the same)
            return EvalResult(False, metrics=metrics, failure="audit", error="; ".join(refused)[:2000],
                              wall_s=time.perf_counter() - start, checks=checks)
        desc = tuple(metrics.get(name, 0.0) for name in descriptors)
        return EvalResult(True, -float(scored.val_bpb), metrics, desc, wall_s=time.perf_counter() - start,
                          checks=checks)
    finally:
        remove(folder)


@contextmanager
def in_own_folder(scratch: Path, program_id: str) -> Iterator[Path]:
    """A fresh folder under `scratch` for one evaluation (the sandbox may read it), removed when done.

    Each evaluation has its own: a candidate's leftovers are looked for beside its own work dir."""
    own = Path(tempfile.mkdtemp(prefix=f"{program_id[:12]}-", dir=scratch))
    os.chmod(own, 0o755)
    try:
        yield own
    finally:
        remove(own)


class TrainingEvaluator:
    """The training family's backend: `workers` evaluations at once (one per GPU on a GPU machine), each
    `evaluate` above in a thread of this process, its candidate code in sandboxed children."""

    def __init__(self, spec: TrainingSpec, workers: int, scratch: Path, descriptors: tuple[str, ...] = ()):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.spec, self.workers, self.descriptors = spec, workers, descriptors
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(self.scratch, 0o755)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evo-train")

    async def evaluate(self, program: Program) -> EvalResult:
        loop = asyncio.get_running_loop()
        with in_own_folder(self.scratch, program.id) as own:
            return await loop.run_in_executor(self._pool, evaluate, self.spec, source_files(program.source), own,
                                              self.descriptors)

    async def run(self, job: Job) -> EvalResult:
        """The job at its rung: the `short` rung trains for its `budget_fraction` of the budget (a cheap first
        look), the full rung for all of it. The data and device are this machine's (the spec's)."""
        fraction = float(job.settings.get("budget_fraction", 1.0))
        if not 0 < fraction <= 1:
            raise EvoError(f"a training rung's budget_fraction is in (0, 1], got {fraction}")
        if fraction == 1:
            return await self.evaluate(job.program)
        loop = asyncio.get_running_loop()
        spec = self.spec.with_(budget_s=self.spec.budget_s * fraction)
        with in_own_folder(self.scratch, job.program_id) as own:
            return await loop.run_in_executor(self._pool, evaluate, spec, dict(job.files), own, self.descriptors)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
