"""A run directory: creating a new run in one, and opening an existing one to continue it.

A run directory holds the store (`evo.db`): its meta rows are the run's identity (task, config, and for
embedding cells the frozen cell space) and its program rows start with the task's seeds. Both
`create_run` and `open_run` return an `OpenedRun`: what an `Engine` is built from (the store, the task,
the run's config) and the lock that keeps any other `evo run`/`evo resume` out of the directory while
this process writes to it.

Everything a user can get wrong is checked before anything is written: a config error never leaves a
directory that neither `evo run` nor `evo resume` can use.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evo.audit.gate import task_policy
from evo.config import RunConfig, validate_options
from evo.embed import Embedder, duplicate_threshold, make_embedder
from evo.errors import EvoError, OperatorError
from evo.eval.families import family_of
from evo.operators import ProposalRequest, build_operators
from evo.population import EmbeddingCellSpace
from evo.population.novelty import NoveltyArchive
from evo.program import Program
from evo.seeding import ScreenedSeeds, read_sources, screen_seeds
from evo.store import DB_NAME, Store
from evo.task import TASK_ROOT_META, Task, load_run_task, load_task

log = logging.getLogger("evo.run_dir")

LOCK_NAME = "evo.lock"

# What `evo resume` may change: none of these alters what is replayed from the store (cells,
# islands and migrations, stored embeddings), so the resumed run is the same run, carried on
# differently. A change is recorded as a `config_changed` event.
RESUMABLE = frozenset({
    "budget", "workers", "time_limit_s", "operators", "operator_selection", "llm", "llm_serve_args",
    "llm_samples", "llm_max_tokens", "llm_temperature", "duplicate_threshold", "novelty_k", "exploit_ratio",
    "explore_ratio", "n_inspirations", "max_consecutive_rejections", "proposal_concurrency",
    "proposal_processes", "retime_on_resume", "track", "backend", "ray_address", "lessons_every", "review",
})
# Why the others cannot change: the reason a refusal gives.
_FIXED_BECAUSE = {
    "task": "the run's programs were written and scored for its task",
    "cells": "the archive's cells are fixed when the run is created",
    "embedding_cells": "the archive's cells are fixed when the run is created",
    "embedding_dims": "the archive's cells are fixed when the run is created",
    "islands": "the population is replayed from the store with the islands it was run with",
    "migration_interval": "the population is replayed from the store with the migrations it was run with",
    "migrants": "the population is replayed from the store with the migrations it was run with",
    "seed": "the run's random streams follow from its seed",
    "embedder": "the stored embeddings (novelty index, cells) were made by this embedder",
    "qd_offset": "the QD-scores already reported are on this offset",
    "seed_from": "the seeds were read when the run was created; `evo seed RUN_DIR --from SOURCE` adds more",
    "ablation": "a baseline is compared on its whole budget; start a new run for another one",
}


class RunLock:
    """An exclusive `flock` on RUN_DIR/evo.lock, holding the holder's pid, host and command.

    The kernel drops the lock when the holding process dies (kill -9 included), so a stale lock
    file never blocks a resume. The descriptor is not inherited by the evaluation processes
    (`os.open` makes it close-on-exec and they are exec'd), which could otherwise keep it alive.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Take the lock, or raise an `EvoError` that names who holds it."""
        path = Path(run_dir) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise EvoError(f"cannot write to the run directory {run_dir} ({e.strerror}): give a --run-dir "
                           "you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise EvoError(f"{run_dir} is in use by {holder}: wait for it to finish, or stop it (Ctrl-C in its "
                           f"terminal) and then `evo resume {run_dir}`") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (idempotent); the file stays, emptied, for the next holder."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)  # no stale holder for a process that loses a race with the next one
            os.close(fd)


def _describe_holder(fd: int) -> str:
    # The holder writes who it is just after it takes the lock: a racer that lost by microseconds finds the
    # file still empty, so it looks again for a moment before it settles for "starting up".
    deadline = time.monotonic() + 1.0
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):  # half written
            info = {}
        if info or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if not info:
        return "another evo process (starting up)"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"(`{info.get('command')}`)")


def _command() -> str:
    args = sys.argv[1:]
    if Path(sys.argv[0]).name in ("evo", "__main__.py"):
        return "evo " + shlex.join(args)
    return shlex.join(sys.argv)


@dataclass
class OpenedRun:
    """A run directory opened for writing: what `Engine` is built from, and the lock held on it."""

    store: Store
    task: Task
    config: RunConfig
    lock: RunLock
    created: list[Path] = field(default_factory=list)  # what `create_run` made, for `discard`

    def release(self) -> None:
        """Close the store and drop the lock."""
        self.store.close()
        self.lock.release()

    def discard(self) -> None:
        """Undo a creation that failed after `create_run` returned: close, then remove what it made."""
        self.release()
        for path in self.created:
            for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if not p.is_dir():  # the run's folder itself is removed below
                    p.unlink(missing_ok=True)
        for path in self.created:
            if path.is_dir():  # made by this process, under its lock: all in it is ours (the lock, scratch)
                shutil.rmtree(path, ignore_errors=True)


def _make_dir(run_dir: Path) -> bool:
    """Create `run_dir` (and parents); True if it was new. One-line errors for a file or no permission."""
    if run_dir.exists() and not run_dir.is_dir():
        raise EvoError(f"--run-dir {run_dir} is a file, not a directory: give a directory (it is created "
                       "if missing)")
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvoError(f"cannot create the run directory {run_dir} ({e.strerror}): give a --run-dir you can "
                       "write to") from None
    _check_writable(run_dir)
    return not existed


def _check_writable(run_dir: Path) -> None:
    """Make and remove a file in `run_dir`: the one test that root, read-only mounts and ACLs all answer."""
    try:
        with tempfile.TemporaryFile(dir=run_dir, prefix=".evo-probe-"):
            pass
    except OSError as e:
        raise EvoError(f"cannot write to the run directory {run_dir} ({e.strerror}): the run's store is written "
                       "there; give a --run-dir you can write to, or make it writable") from None


def create_run(run_dir: Path, config: RunConfig) -> OpenedRun:
    """Start a new run in `run_dir`: check everything, then store the config and the task's seeds."""
    run_dir = Path(run_dir)
    # 1. Everything that can be wrong, before anything is written.
    task = load_task(config.task)
    family_of(task)  # a task.toml without (or with an unknown) family, a reference.py without what it calls
    task_policy(task)  # an [audit] allow that names no check
    seeds = task.seeds()
    # A task given by folder path stays a path (resolved), so that resume finds it again.
    task_ref = str(task.root) if (Path(config.task) / "task.toml").is_file() else task.name
    # A task without descriptors (the kernel tasks) gets cells over code embeddings.
    cells = "embedding" if config.cells == "grid" and not task.config.descriptors else config.cells
    config = RunConfig.from_dict({**config.to_dict(), "task": task_ref, "cells": cells})
    plain = {k: w for k, w in config.operator_weights().items() if not k.startswith("llm_")}
    if plain:
        build_operators(plain)  # the LLM operators are built by the engine, with their model
    embedder = make_embedder(config.embedder)
    vectors = [embedder.embed([seed.text])[0] for seed in seeds]  # one call each: a server's batch limit
    # Seeds from --seed-from: read now (a bad source fails before anything is written), screened against
    # the task's seeds and each other as any child is (parse, near-duplicates).
    screened = None
    if config.seed_from:
        novelty = _novelty(config, embedder)
        for seed, vector in zip(seeds, vectors, strict=True):
            novelty.add(seed.id, vector)
        screened = _screen(read_sources(config.seed_from, task), embedder, novelty)
        log.info(f"--seed-from: {screened.describe()}")
        seeds = seeds + [p for p, _ in screened.kept]
        vectors = vectors + [v for _, v in screened.kept]
    cell_space = _fit_cell_space(seeds, config) if config.cells == "embedding" else None
    # 2. The directory, locked, then the store: in one transaction, so that a process killed while
    # creating leaves a store with no config, which the next `evo run` takes over.
    new_dir = _make_dir(run_dir)
    lock = RunLock.acquire(run_dir)
    try:
        db = run_dir / DB_NAME
        if db.exists():
            existing = Store.in_dir(run_dir, readonly=True)
            try:
                has_config, other = existing.get_meta("config") is not None, existing.get_meta("task")
            finally:
                existing.close()
            if has_config:
                if other != task.name:
                    raise EvoError(f"{run_dir} holds a run of task {other!r}, not {task.name!r}: "
                                   "choose another --run-dir")
                raise EvoError(f"{run_dir} already holds a run of {task.name}: continue it with "
                               f"`evo resume {run_dir}` or choose another --run-dir")
        created = [] if db.exists() else [db]
        store = Store.in_dir(run_dir)
    except BaseException:
        lock.release()
        raise
    stored = {**config.to_dict(), "time_limit_s": None}  # a time limit belongs to one invocation
    for i, seed in enumerate(seeds):
        seed.island = i % config.islands
        store.add_program(seed, vectors[i], events=[("proposed", {"operator": "seed", "island": seed.island})],
                          commit=False)
        if "provenance" in seed.meta:
            store.add_provenance(seed.id, seed.meta["provenance"])  # type: ignore[arg-type]
    if screened is not None:
        _store_dropped(store, screened)
    store.set_meta("task", task.name)
    store.set_meta(TASK_ROOT_META, str(task.root))
    store.set_meta("config", stored)
    store.set_meta("created", time.time())
    if cell_space is not None:
        store.set_meta("cell_space", cell_space.to_dict())
    store.log("run_created", {"config": stored})  # commits the whole creation
    return OpenedRun(store, task, config, lock, created + ([run_dir] if new_dir else []))


def open_run(run_dir: Path, overrides: dict[str, Any] | None = None, source: str = "resume") -> OpenedRun:
    """Reopen a run to continue it, with `overrides` applied (options of `evo resume` and its --config).

    Only the `RESUMABLE` options may change; a change is recorded as a `config_changed` event. The
    time limit applies to this invocation only. A budget below the evaluations already done is an
    error. A run whose seeds all failed gets its seeds queued again (see `_retry_seeds`).
    """
    run_dir = Path(run_dir)
    if not (run_dir / DB_NAME).is_file():
        raise EvoError(f"{run_dir} is not an evo run directory (no {DB_NAME}); start one with `evo run`")
    _check_writable(run_dir)
    lock = RunLock.acquire(run_dir)
    store: Store | None = None
    try:
        store = Store.in_dir(run_dir)
        raw = store.get_meta("config")
        if raw is None:
            raise EvoError(f"{run_dir / DB_NAME} has no run config (its creation was interrupted): "
                           f"start the run again with `evo run TASK --run-dir {run_dir}`")
        raw = {k: v for k, v in raw.items() if k != "time_limit_s"}  # older runs stored one
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        given = validate_options(given, source, whole=False)  # the whole config is checked just below
        changes = _changes(RunConfig.from_dict(raw, f"{run_dir / DB_NAME}"), given)
        config = RunConfig.from_dict({**raw, **given})
        done = store.count_evaluations()
        if config.budget < done:
            raise EvoError(f"budget {config.budget} is lower than the {done} evaluations this run has already "
                           f"done: give --budget {done} or more")
        task = load_run_task(config.task, store.get_meta(TASK_ROOT_META))
        stored_changes = {k: v for k, v in changes.items() if k != "time_limit_s"}
        if stored_changes:
            store.set_meta("config", {**config.to_dict(), "time_limit_s": None})
            store.log("config_changed", {"changes": stored_changes, "by": source})
        _retry_seeds(store, task, config)
        return OpenedRun(store, task, config, lock)
    except BaseException:
        if store is not None:
            store.close()
        lock.release()
        raise


def _changes(stored: RunConfig, given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{key: {"old", "new"}} of the given options that differ from the run's; refuses fixed ones."""
    changes: dict[str, dict[str, Any]] = {}
    for key, new in given.items():
        old = getattr(stored, key)
        if key == "task" and new != old:
            # The same task named another way (a relative path, a name) is no change.
            same = load_task(new).root == load_task(old).root
            if same:
                continue
        if new == old:
            continue
        if key not in RESUMABLE:
            reason = _FIXED_BECAUSE.get(key, "it is part of the run's identity")
            raise EvoError(f"resume cannot change {key} (the run has {old!r}, asked {new!r}): {reason}. "
                           "Drop it from the config, or start a new run with `evo run` to use another value")
        changes[key] = {"old": old, "new": new}
    return changes


def _retry_seeds(store: Store, task: Task, config: RunConfig) -> None:
    """Queue the task's seeds again when every evaluation so far failed and nothing is pending.

    Such a run (every seed failed: a task folder the sandbox could not see, a seed that raised)
    has no program to mutate; once the cause is fixed, `evo resume` evaluates the seeds afresh,
    read again from the task folder, as new programs. The failed evaluations stay counted in
    the budget: nothing is counted twice, nothing is forgotten.
    """
    if store.count_evaluations() == 0 or store.best_programs(limit=1) or store.pending_programs():
        return
    if store.count_evaluations() >= config.budget:
        return  # no room to evaluate them: the resume says the budget is spent
    seeds = task.seeds()
    embedder = make_embedder(config.embedder)
    vectors = [embedder.embed([seed.text])[0] for seed in seeds]
    for i, seed in enumerate(seeds):
        seed.island = i % config.islands
        store.add_program(seed, vectors[i], events=[("proposed", {"operator": "seed", "island": seed.island})],
                          commit=False)
    store.log("seeds_requeued", {"seeds": len(seeds), "reason": "every evaluation so far failed"})


def _fit_cell_space(seeds: list[Program], config: RunConfig) -> EmbeddingCellSpace:
    """Embedding-defined cells: PCA fitted on the seeds and a few of their mutants, frozen for the run."""
    embedder = make_embedder(config.embedder)
    rng = np.random.default_rng(config.seed)
    texts = [s.text for s in seeds]
    plain = {k: w for k, w in config.operators.items() if not k.startswith("llm_") and w > 0}
    ops = [op for op, _ in build_operators(plain) if op.arity == 1] if plain else []
    for _ in range(64):
        if not ops:
            break
        op = ops[int(rng.integers(len(ops)))]
        parent = seeds[int(rng.integers(len(seeds)))]
        try:
            proposals = asyncio.run(op.propose(ProposalRequest(parents=[parent], rng=rng)))
        except OperatorError:
            continue
        texts.extend(p.source if isinstance(p.source, str) else "" for p in proposals)
    vectors = embedder.embed(texts)
    return EmbeddingCellSpace.fit(vectors, n_dims=config.embedding_dims, n_cells=config.embedding_cells,
                                  seed=config.seed)


@dataclass
class SeedReport:
    """What `seed_run` did: the seeds queued and dropped, and the evaluations the budget has left for them."""

    queued: list[Program]
    dropped: list[Program]
    budget_left: int


def seed_run(run_dir: Path, sources: list[str], licence: str | None = None) -> SeedReport:
    """Add the seeds of `sources` to a stopped run as proposed programs, with their provenance.

    They are screened against every program the run holds (parse, near-duplicates: the engine's novelty
    index rebuilt from the store); the next `evo resume` evaluates them first, through the pipeline, within
    the run's budget. Holds the run directory's lock while it writes.
    """
    from evo.replay import replay_embeddings

    opened = open_run(run_dir, source="evo seed")
    try:
        store, config = opened.store, opened.config
        seeds = read_sources(sources, opened.task, licence)
        embedder = make_embedder(config.embedder)
        novelty = _novelty(config, embedder)
        replay_embeddings(store, novelty, embedder.dim)
        screened = _screen(seeds, embedder, novelty)
        # Islands in turn after the run's own programs, so that the new seeds spread over them.
        first = store.count_programs()
        for i, (seed, vector) in enumerate(screened.kept):
            seed.island = (first + i) % config.islands
            store.add_program(seed, vector, events=[("proposed", {"operator": "seed", "island": seed.island})],
                              commit=False)
            store.add_provenance(seed.id, seed.meta["provenance"])  # type: ignore[arg-type]
        _store_dropped(store, screened)
        store.log("seeded", {"sources": list(sources), **screened.summary()})  # commits every row above
        left = config.budget - store.count_evaluations() - len(store.pending_programs()) + len(screened.kept)
        return SeedReport([p for p, _ in screened.kept], screened.dropped, max(0, left))
    finally:
        opened.release()


def _novelty(config: RunConfig, embedder: Embedder) -> NoveltyArchive:
    return NoveltyArchive(embedder.dim, k=config.novelty_k,
                          duplicate_threshold=duplicate_threshold(embedder, config.duplicate_threshold))


def _screen(seeds: list[Any], embedder: Embedder, novelty: NoveltyArchive) -> ScreenedSeeds:
    programs = [s.program() for s in seeds]
    vectors = [embedder.embed([p.text])[0] for p in programs]  # one call each: a server's batch limit
    return screen_seeds(programs, vectors, novelty)


def _store_dropped(store: Store, screened: ScreenedSeeds) -> None:
    """The dropped seeds as rejected programs with their reason and provenance: what was left out, and why."""
    for p in screened.dropped:
        store.add_program(p, None, events=[("rejected", {"reason_kind": p.meta["reason_kind"], "reason": p.error,
                                                         "operator": "seed"})], commit=False)
        store.add_provenance(p.id, p.meta["provenance"])  # type: ignore[arg-type]
