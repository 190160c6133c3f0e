"""`evo.load(run_dir)`: a run as pandas DataFrames, read-only, replayed from its store.

    import evo
    run = evo.load("runs/cp26")
    run.programs()            # one row per program; value, metric_*, descriptor_* in the task's units;
                              # provenance: where a seed from outside the run came from (else None)
    run.provenance()          # the seeds from outside the run, one row each, with their source and licence
    run.evaluations()         # finished evaluations in commit order
    run.admissions()          # every admission to a cell (new or improved elite)
    run.operator_calls()      # one row per operator call, with the model and its tokens
    run.verdicts()            # the auditor's verdict of each evaluated program, with its reasons
    run.lineage()             # parent -> child edges, with the child's operator
    run.embeddings()          # .ids and .vectors (float32) of the stored code embeddings
    run.archive(at=100)       # the population as it stood after 100 evaluations

Values are the task's own: `value` and `metric_<name>` are what the task reports (lower is better
for a minimised task); the engine's internal score, negated for such tasks, is not shown.

The store is opened read-only (`mode=ro`), so reading a run that is still being written is safe:
every method reads as of one commit of the writer. Each call reads afresh, so a later call sees a
later state of a live run; `with run.snapshot():` makes several calls see the same commit. Nothing
loads a whole table unless asked: choose `columns`, iterate `iter_programs` in chunks, or take
`embeddings(sample=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evo.config import RunConfig
from evo.errors import EvoError
from evo.program import Status
from evo.store import DB_NAME, Store
from evo.store import queries as q
from evo.task import TASK_ROOT_META, Task, load_run_task

if TYPE_CHECKING:  # the population pulls in pyribs (and torch): imported when an archive is asked for
    from evo.population import Population

_KEY = "_provenance_key"  # the program id read only to look its provenance up
DEFAULT_FIELDS = ("id", "seq", "status", "island", "operator", "created", "novelty")
OPTIONAL_FIELDS = ("parents", "error", "verdict", "model", "prompt_tokens", "completion_tokens", "eval_order")


@dataclass(frozen=True)
class Embeddings:
    """Stored code embeddings: `vectors[i]` is the embedding of program `ids[i]`."""

    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.ids)


def load(run_dir: str | Path) -> Run:
    """Open the run in `run_dir` for analysis (read-only)."""
    return Run(Path(run_dir))


class Run:
    """A run opened read-only: its tables as DataFrames and its archive at any evaluation count."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / DB_NAME).is_file():
            raise EvoError(f"{self.run_dir} is not an evo run directory (no {DB_NAME}): give the --run-dir "
                           "of an `evo run`")
        self.store = Store.in_dir(self.run_dir, readonly=True)
        q.tune_for_reading(self.store)
        raw = self.store.get_meta("config")
        if raw is None:
            raise EvoError(f"{self.run_dir} has no run config yet (it is being created, or its creation was "
                           "interrupted): load it once `evo run` has started")
        self.config: RunConfig = RunConfig.from_dict(raw, str(self.run_dir / DB_NAME))
        self.task: Task = load_run_task(self.config.task, self.store.get_meta(TASK_ROOT_META))
        self.metric: str = self.task.config.metric
        self.objective: str = self.task.config.objective
        # The order programs store their descriptors in (as `evo.report.programs.descriptor_names`).
        self.descriptor_names: list[str] = (
            [f"embedding_{i}" for i in range(self.config.embedding_dims)] if self.config.cells == "embedding"
            else [d.name for d in self.task.config.descriptors])
        self._metrics: list[str] | None = None
        self._memo: dict[tuple[object, ...], pd.DataFrame] | None = None  # set inside `snapshot()`

    def close(self) -> None:
        """Close the store (the Run is unusable afterwards)."""
        self.store.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, task={self.task.name!r}, evaluations={self.n_evaluations})"

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A block whose reads all see the run as of one commit (each call alone always does):
        `with run.snapshot(): ev, adm = run.evaluations(), run.admissions()` on a live run.

        Inside it nothing can change, so the event tables (evaluations, admissions, operator calls,
        rejections, verdicts) are read once and handed out as copies: a report asks for them often."""
        if self._memo is not None:
            yield
            return
        with q.snapshot(self.store):
            self._memo = {}
            try:
                yield
            finally:
                self._memo = None

    def _remember(self, key: tuple[object, ...], read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """`read()`, or inside `snapshot()` a copy of what it gave the first time."""
        if self._memo is None:
            return read()
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key].copy()

    # -- small facts ----------------------------------------------------------------------------
    @property
    def n_evaluations(self) -> int:
        """Finished evaluations committed so far."""
        return self.store.count_evaluations()

    @property
    def n_programs(self) -> int:
        """Programs proposed so far (rejected ones included)."""
        return self.store.count_programs()

    @property
    def metric_names(self) -> list[str]:
        """The task's metric first, then every other metric the run's programs report."""
        if self._metrics is None:
            others = [m for m in q.metric_keys(self.store) if m != self.metric]
            self._metrics = [self.metric, *others]
        return list(self._metrics)

    def value_of(self, score: float | None) -> float | None:
        """The task's own value of an engine score (the engine negates a minimised task's metric)."""
        return None if score is None else self.task.orient(score)

    # -- programs -------------------------------------------------------------------------------
    def iter_programs(self, columns: Sequence[str] | None = None, *, status: str | Sequence[str] | None = None,
                      chunksize: int = 50_000) -> Iterator[pd.DataFrame]:
        """The programs table in proposal order, one DataFrame of up to `chunksize` rows at a time.

        `columns` picks any of: the fields `id seq status island operator created novelty parents
        error verdict model prompt_tokens completion_tokens eval_order source`, `value`,
        `metric_<name>`, `descriptor_<name>`, `provenance`. Default: the default fields, `value`, every
        metric, every descriptor and `provenance` (no source, parents or error text).

        `provenance` is a dict for a seed that came from outside the run (`source`, `kind`, `path`,
        `commit`, `licence`, `author`, `imported`: see evo/seeding/) and None for any other program.
        """
        query, names = self._program_query(columns)
        statuses = (status,) if isinstance(status, str) else tuple(status or ())
        with q.snapshot(self.store):
            prov = self.store.provenance() if "provenance" in names else None
            for rows in q.iter_program_rows(self.store, query, statuses=statuses, chunk=chunksize):
                yield self._program_frame(rows, names, prov)

    def programs(self, columns: Sequence[str] | None = None, *, status: str | Sequence[str] | None = None,
                 ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The programs table (see `iter_programs` for `columns`), optionally only some statuses or ids."""
        query, names = self._program_query(columns)
        if ids is not None:
            with q.snapshot(self.store):
                prov = self.store.provenance(list(ids)) if "provenance" in names else None
                chunks = [self._program_frame(rows, names, prov)
                          for rows in q.iter_program_rows(self.store, query, ids=ids)]
        else:
            chunks = list(self.iter_programs(columns, status=status))
        return _concat(chunks, names)

    def _program_query(self, columns: Sequence[str] | None, internal: bool = False) -> tuple[q.ProgramQuery, list[str]]:
        if columns is None:
            columns = [*DEFAULT_FIELDS, "value", *(f"metric_{m}" for m in self.metric_names),
                       *(f"descriptor_{d}" for d in self.descriptor_names), "provenance"]
        fields, metrics, descs, source = [], [], [], False
        names: list[str] = []
        for col in columns:
            if col in q.PROGRAM_FIELDS and (col != "score" or internal):  # the oriented score stays inside
                fields.append(col)
            elif col in ("value", "source", "provenance"):
                pass
            elif col.startswith("metric_"):
                metrics.append(col[len("metric_"):])
            elif col.startswith("descriptor_") and col[len("descriptor_"):] in self.descriptor_names:
                descs.append(self.descriptor_names.index(col[len("descriptor_"):]))
            else:
                known = [*(f for f in q.PROGRAM_FIELDS if f != "score"), "value", "source", "provenance",
                         *(f"metric_{m}" for m in self.metric_names), *(f"descriptor_{d}" for d in self.descriptor_names)]
                raise EvoError(f"unknown program column {col!r}; known: {', '.join(known)}")
        if "value" in columns:
            metrics.insert(0, self.metric)
        source = "source" in columns
        provenance = "provenance" in columns
        if provenance and "id" not in fields:
            fields.append("id")  # the key of the provenance table, read under a name the frame drops
        names = [*(_KEY if f == "id" and "id" not in columns else f for f in fields),
                 *(["value"] if "value" in columns else []),
                 *(f"metric_{m}" for m in (metrics[1:] if "value" in columns else metrics)),
                 *(f"descriptor_{self.descriptor_names[i]}" for i in descs), *(["source"] if source else []),
                 *(["provenance"] if provenance else [])]
        return q.ProgramQuery(fields, metrics, descs, source), names

    def _program_frame(self, rows: list[q.Row], names: list[str],
                       provenance: dict[str, dict[str, object]] | None = None) -> pd.DataFrame:
        df = pd.DataFrame.from_records(rows, columns=[n for n in names if n != "provenance"])
        if "provenance" in names:
            key = df.pop(_KEY) if _KEY in df else df["id"]
            df["provenance"] = [provenance.get(i) for i in key] if provenance else None
        if "parents" in df:
            df["parents"] = [_ids(p) for p in df["parents"]]
        for col in names:
            if col == "value" or col.startswith(("metric_", "descriptor_")) or col == "novelty":
                df[col] = df[col].astype("float64")
        if "created" in df:
            df["created"] = pd.to_datetime(df["created"], unit="s", utc=True)
        return df

    def provenance(self) -> pd.DataFrame:
        """The seeds from outside the run, one row each in the order they were read: `program_id`, `status`
        and `value` here, `kind`, `source`, `path`, `commit`, `licence`, `author`, `imported` (the date it was
        read), and `origin_value`, `origin_device` (what its source said it measured, where it said)."""
        from evo.report.provenance import provenance_frame

        return provenance_frame(self)

    def task_origin(self) -> dict[str, object] | None:
        """Where the task came from, if it was imported from a benchmark (`evo tasks import`), else None."""
        from evo.report.provenance import task_origin

        return task_origin(self.task)

    def source(self, program_id: str) -> str:
        """The main file's text of one program."""
        src = q.get_source(self.store, program_id)
        return src if isinstance(src, str) else src.get("candidate.py", "")

    # -- evaluations and events -----------------------------------------------------------------
    def evaluations(self, *, metrics: bool = False, descriptors: bool = False, reasons: bool = True) -> pd.DataFrame:
        """Finished evaluations in commit order: `n` (1-based), `program_id`, `time` (UTC), `ok`, `value`
        (the task's), `wall_s`, `admission` (new / improve / rejected), `failure` (kind) and `reason`,
        `status`, `island`, `operator`, `model`; with `metrics`/`descriptors`, their columns too."""
        return self._remember(("evaluations", metrics, descriptors, reasons), lambda: self._read_evaluations(metrics=metrics, descriptors=descriptors, reasons=reasons))

    def _read_evaluations(self, *, metrics: bool = False, descriptors: bool = False, reasons: bool = True) -> pd.DataFrame:
        # Three scans joined here by hash (pandas), not one SQL join: a join looks each evaluation up in
        # the id indexes at random, ~5x slower than reading the tables in order at 1M programs.
        extra = [*(f"metric_{m}" for m in self.metric_names if metrics),
                 *(f"descriptor_{d}" for d in self.descriptor_names if descriptors)]
        query, names = self._program_query(["id", "score", "status", "island", "operator", "model", *extra],
                                           internal=True)
        with q.snapshot(self.store):
            order = _concat([pd.DataFrame.from_records(r, columns=["n", "program_id"])
                             for r in q.iter_evaluation_order(self.store)], ["n", "program_id"])
            events = _concat([pd.DataFrame.from_records(r, columns=q.EVALUATED_EVENT_FIELDS)
                              for r in q.iter_evaluated_events(self.store, reasons=reasons)],
                             list(q.EVALUATED_EVENT_FIELDS))
            progs = _concat([self._program_frame(r, names) for r in
                             q.iter_program_rows(self.store, query, statuses=("evaluated", "failed"))], names)
        events = events.drop_duplicates("program_id", keep="first")  # the first evaluated event counted
        df = order.merge(events, on="program_id", how="left").merge(
            progs.rename(columns={"id": "program_id"}), on="program_id", how="left")
        df["ok"] = df["ok"].fillna(0).astype(bool)
        sign = 1.0 if self.objective == "maximize" else -1.0
        df.insert(4, "value", df.pop("score").astype("float64") * sign)
        df.insert(2, "time", pd.to_datetime(df.pop("ts"), unit="s", utc=True))
        df["wall_s"] = df["wall_s"].astype("float64")
        return df

    def admissions(self) -> pd.DataFrame:
        """Every admission to a cell in order: `program_id`, `time`, `n` (its evaluation number), `island`,
        `cell`, `status` (new / improve), `value`, `previous` (the elite it replaced) and `previous_value`,
        `operator`, `model`. Elites copied between islands by migration are in `events("migration")`."""
        return self._remember(("admissions",), lambda: self._read_admissions())

    def _read_admissions(self) -> pd.DataFrame:
        names = ["seq", "ts", "kind", "program_id", "cell", "status", "island", "previous", "previous_score"]
        with q.snapshot(self.store):
            rows = [r for chunk in q.iter_event_rows(self.store, ["admitted"], ["$.cell", "$.status", "$.island",
                                                                                  "$.previous", "$.previous_score"])
                    for r in chunk]
            info = q.programs_by_id(self.store, [str(r[3]) for r in rows],
                                    ["operator", "model", "eval_order"], [self.metric])
        df = pd.DataFrame.from_records(rows, columns=names).drop(columns=["kind", "seq"])
        df.insert(1, "time", pd.to_datetime(df.pop("ts"), unit="s", utc=True))
        df.insert(2, "n", pd.array([info.get(p, (None,) * 4)[2] for p in df["program_id"]], dtype="Int64"))
        df["value"] = pd.array([info.get(p, (None,) * 4)[3] for p in df["program_id"]], dtype="float64")
        df["previous_value"] = [self.value_of(s) for s in df.pop("previous_score")]
        df["previous_value"] = df["previous_value"].astype("float64")
        df["operator"] = [info.get(p, (None,) * 4)[0] for p in df["program_id"]]
        df["model"] = [info.get(p, (None,) * 4)[1] for p in df["program_id"]]
        return df

    def operator_calls(self) -> pd.DataFrame:
        """One row per operator call, in order: `time`, `operator`, `island`, `parents`, `ok` (False: the
        operator raised), `children` (programs it made, with their ids in `program_ids`), `seconds`,
        `model`, `prompt_tokens`, `completion_tokens`, `failure` and `reason` of a failed call.

        The engine logs a call once per child it made, all with the same data; consecutive such rows of
        an LLM call (the only kind that makes several children) are merged here, so tokens are counted
        once per call."""
        return self._remember(("operator_calls",), lambda: self._read_operator_calls())

    def _read_operator_calls(self) -> pd.DataFrame:
        fields = ["$.operator", "$.island", "$.parents", "$.seconds", "$.llm.model", "$.llm.prompt_tokens",
                  "$.llm.completion_tokens", "$.reason_kind", "$.reason"]
        raw = ["seq", "time", "kind", "program_id", "operator", "island", "parents", "seconds", "model",
               "prompt_tokens", "completion_tokens", "failure", "reason"]
        with q.snapshot(self.store):
            ev = _concat([pd.DataFrame.from_records(rows, columns=raw) for rows in
                          q.iter_event_rows(self.store, ["operator_call", "operator_failed"], fields)], raw)
        # A row continues the call before it when it repeats that call's data exactly, and the call is an
        # LLM call (the only kind that makes several children; its usage tells two calls apart).
        same = pd.Series(True, index=ev.index)
        for col in ["kind", *raw[4:]]:
            prev = ev[col].shift()
            same &= (ev[col] == prev) | (ev[col].isna() & prev.isna())
        more = (same & (ev["kind"] == "operator_call") & ev["model"].notna()).to_numpy()
        heads = np.flatnonzero(~more)
        pids = ev["program_id"].tolist()
        made: list[list[str]] = [[pids[i]] if isinstance(pids[i], str) else [] for i in heads]  # NaN: none
        call_of = np.cumsum(~more) - 1  # each row's call, as an index into `heads`
        for i in np.flatnonzero(more):  # few: the extra children of multi-sample LLM calls
            made[call_of[i]].append(pids[i])
        df = ev.iloc[heads].drop(columns=["seq", "program_id"]).reset_index(drop=True)
        df.insert(3, "ok", (df.pop("kind") == "operator_call").to_numpy())
        df["parents"] = [_ids(str(p)) if p else [] for p in df["parents"]]
        df.insert(4, "children", [len(m) for m in made])
        df.insert(5, "program_ids", made)
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
        for col in ("prompt_tokens", "completion_tokens", "island"):
            df[col] = pd.array(df[col].tolist(), dtype="Int64")
        df["seconds"] = df["seconds"].astype("float64")
        names = ["time", "operator", "island", "parents", "ok", "children", "program_ids", "seconds", "model",
                 "prompt_tokens", "completion_tokens", "failure", "reason"]
        return df[names]

    def rejections(self) -> pd.DataFrame:
        """Children refused before evaluation (parse errors, near-duplicates, ...): `time`, `program_id`,
        `failure` (kind), `reason`, `operator`."""
        return self._remember(("rejections",), lambda: self._read_rejections())

    def _read_rejections(self) -> pd.DataFrame:
        with q.snapshot(self.store):
            rows = [r for chunk in q.iter_event_rows(self.store, ["rejected"], ["$.reason_kind", "$.reason"])
                    for r in chunk]
            info = q.programs_by_id(self.store, [str(r[3]) for r in rows if r[3] is not None], ["operator"])
        df = pd.DataFrame.from_records(rows, columns=["seq", "time", "kind", "program_id", "failure", "reason"])
        df = df.drop(columns=["seq", "kind"])
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
        df["operator"] = [info.get(p, (None,))[0] for p in df["program_id"]]
        return df

    def verdicts(self) -> pd.DataFrame:
        """The auditor's verdict of every evaluated program: `program_id`, `verdict` (pass / fail), `level`,
        `reasons` (a list of "check: reason"), `failure` and `error` of a failed evaluation."""
        return self._remember(("verdicts",), lambda: self._read_verdicts())

    def _read_verdicts(self) -> pd.DataFrame:
        query = q.ProgramQuery(["id", "verdict", "status", "error"])
        with q.snapshot(self.store):
            rows = [r for chunk in q.iter_program_rows(self.store, query, statuses=("evaluated", "failed"))
                    for r in chunk if r[1] is not None]
            reasons: dict[str, list[str]] = {}
            levels: dict[str, str] = {}
            failed = [str(r[0]) for r in rows if r[1] == "fail"]
            for chunk in q.iter_reason_rows(self.store, ids=failed):
                for pid, level, check, reason in chunk:
                    reasons.setdefault(pid, []).append(f"{check}: {reason}")
                    levels[pid] = level
        df = pd.DataFrame.from_records(rows, columns=["program_id", "verdict", "status", "error"])
        df["reasons"] = [reasons.get(p, []) for p in df["program_id"]]
        df["level"] = [levels.get(p) for p in df["program_id"]]
        return df

    def audit_reasons(self) -> pd.DataFrame:
        """One row per reason of a failed verdict: `program_id`, `level`, `check`, `reason`."""
        return self._remember(("audit_reasons",), lambda: self._read_audit_reasons())

    def _read_audit_reasons(self) -> pd.DataFrame:
        with q.snapshot(self.store):
            rows = [r for chunk in q.iter_reason_rows(self.store) for r in chunk]
        return pd.DataFrame.from_records(rows, columns=["program_id", "level", "check", "reason"])

    def events(self, kind: str, fields: Sequence[str] = ()) -> pd.DataFrame:
        """The raw events of one kind in order (`seq`, `time`, `program_id`, `data` as a dict), or with
        `fields` (JSON paths such as `$.cell`) one column per field instead of `data`."""
        paths = list(fields) or ["$"]
        with q.snapshot(self.store):
            rows = [r for chunk in q.iter_event_rows(self.store, [kind], paths) for r in chunk]
        cols = ["seq", "time", "kind", "program_id", *(list(fields) or ["data"])]
        df = pd.DataFrame.from_records(rows, columns=cols).drop(columns=["kind"])
        if not fields:
            df["data"] = [json.loads(d) if d else None for d in df["data"]]
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
        return df

    # -- lineage ----------------------------------------------------------------------------------
    def lineage(self) -> pd.DataFrame:
        """Every parent -> child edge: `parent`, `child`, `parent_index` (0: the main parent), `operator`
        (that made the child), `child_seq`."""
        names = ["parent", "child", "parent_index", "operator", "child_seq"]
        with q.snapshot(self.store):
            chunks = [pd.DataFrame.from_records(rows, columns=names) for rows in q.iter_lineage_rows(self.store)]
        return _concat(chunks, names)

    def ancestry(self, program_id: str, max_nodes: int = 500) -> pd.DataFrame:
        """The ancestors of one program (itself included) as edges `parent`, `child`, `parent_index`,
        `operator`, plus `child_value`; walked by index lookups, at most `max_nodes` programs."""
        seen: dict[str, tuple[str, list[str], float | None]] = {}
        frontier = [program_id]
        with q.snapshot(self.store):
            while frontier and len(seen) < max_nodes:
                found = q.parents_of(self.store, frontier[: max_nodes - len(seen)])
                seen.update(found)
                frontier = list(dict.fromkeys(p for _, ps, _ in found.values() for p in ps if p not in seen))
        if program_id not in seen:
            raise EvoError(f"no program {program_id!r} in {self.run_dir}")
        edges = [(parent, child, i, op, self.value_of(score))
                 for child, (op, parents, score) in seen.items() for i, parent in enumerate(parents)]
        nodes = pd.DataFrame([(pid, op, self.value_of(score)) for pid, (op, _, score) in seen.items()],
                             columns=["program_id", "operator", "value"])
        df = pd.DataFrame(edges, columns=["parent", "child", "parent_index", "operator", "child_value"])
        df.attrs["nodes"] = nodes
        return df

    def best(self, k: int = 5, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The `k` best evaluated programs, best first (by the task's value)."""
        ids = q.best_ids(self.store, k)
        df = self.programs(columns, ids=ids)
        return df.set_index("id").loc[ids].reset_index() if "id" in df and len(df) else df

    # -- embeddings and the archive ---------------------------------------------------------------
    def embeddings(self, ids: Sequence[str] | None = None, sample: int | None = None, seed: int = 0) -> Embeddings:
        """Stored code embeddings in proposal order: all, those of `ids`, or a random `sample` of them."""
        with q.snapshot(self.store):
            got, vectors = q.read_embeddings(self.store, ids=ids, sample=sample, seed=seed)
        return Embeddings(got, vectors)

    def archive(self, at: int | None = None) -> Population:
        """The population (islands of pyribs-backed cells) after the first `at` evaluations (all: None),
        replayed from the store in commit order exactly as the engine admitted them."""
        from evo.population import EmbeddingCellSpace
        from evo.replay import new_population

        raw = self.store.get_meta("cell_space")
        space = EmbeddingCellSpace.from_dict(raw) if self.config.cells == "embedding" and raw else None
        population = new_population(self.task, self.config, space)
        with q.snapshot(self.store):
            for rec, _ts in q.iter_replay(self.store, at, times=False):
                if rec.status == Status.EVALUATED and rec.score is not None:
                    population.admit(rec.program_id, rec.island, rec.score, rec.descriptors)
        return population

    def elites(self, at: int | None = None) -> pd.DataFrame:
        """The archive's elites after `at` evaluations: `island`, `cell`, `program_id`, `value`, and one
        `descriptor_<name>` column each."""
        population = self.archive(at)
        rows = []
        for island, table in enumerate(population.tables()):
            for r in table:
                rows.append([island, r["cell"], r["program_id"], self.value_of(r["score"]), *r["descriptors"]])
        names = ["island", "cell", "program_id", "value", *(f"descriptor_{d}" for d in self.descriptor_names)]
        return pd.DataFrame(rows, columns=names)


def _ids(text: str) -> list[str]:
    """A JSON list of program ids, read ~10x faster than `json.loads` (a million of them per table at scale):
    ids are hex, so a list without a backslash splits on its quotes; anything else goes to `json.loads`."""
    if text == "[]":
        return []
    if text.startswith('["') and text.endswith('"]') and "\\" not in text:
        return text[2:-2].replace('", "', '","').split('","')
    return json.loads(text)


def _concat(chunks: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    if not chunks:
        return pd.DataFrame(columns=names)
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)

