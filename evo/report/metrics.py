"""What a run's evaluations add up to: progress over time, where admissions came from, why things failed.

Every function takes a `Run` (see `evo.report.load`) and returns a DataFrame (or a dict of numbers);
values are in the task's units. `progress` replays the archive from the store in commit order,
so its coverage and QD-score are exactly those the engine had after each evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evo.program import Status
from evo.report.load import Run
from evo.store import queries as q

if TYPE_CHECKING:
    from evo.population import Population
    from evo.store import Store


def progress(run: Run, points: int = 2000) -> pd.DataFrame:
    """The run after each evaluation (or every k-th, so that at most about `points` rows come back):
    `n`, `time`, `elapsed_s`, `value` (of that evaluation), `best_value` (the best so far), `coverage`,
    `qd_score`, `elites`, `admissions` (cumulative) and `evals_per_min` (over the last minute)."""
    return replay(run, points)[0]


def replay(run: Run, points: int = 2000) -> tuple[pd.DataFrame, Population]:
    """`progress(run)` and the population at its end, from one replay of the store (a replay of 1M
    evaluations takes about a minute: a report makes one)."""
    from evo.population import EmbeddingCellSpace
    from evo.replay import new_population

    raw = run.store.get_meta("cell_space")
    space = EmbeddingCellSpace.from_dict(raw) if run.config.cells == "embedding" and raw else None
    population = new_population(run.task, run.config, space)
    total = run.n_evaluations
    every = max(1, math.ceil(total / max(points, 1)))
    sign = 1.0 if run.objective == "maximize" else -1.0
    rows: list[tuple[int, float, float, float, float, float, int, int]] = []
    best = -math.inf
    admitted = 0
    with q.snapshot(run.store):
        for rec, ts in q.iter_replay(run.store):
            value = math.nan
            if rec.status == Status.EVALUATED and rec.score is not None:
                if population.admit(rec.program_id, rec.island, rec.score, rec.descriptors).admitted:
                    admitted += 1
                best = max(best, rec.score)
                value = sign * rec.score
            if rec.n % every == 0 or rec.n == total:
                rows.append((rec.n, ts, value, sign * best if math.isfinite(best) else math.nan,
                             population.coverage, population.qd_score, population.num_elites, admitted))
    df = pd.DataFrame(rows, columns=["n", "ts", "value", "best_value", "coverage", "qd_score", "elites",
                                     "admissions"])
    start = _start_time(run, df)
    df["elapsed_s"] = df["ts"] - start
    df["evals_per_min"] = _rate(df["n"].to_numpy(), df["ts"].to_numpy())
    df.insert(1, "time", pd.to_datetime(df.pop("ts"), unit="s", utc=True))
    return df, population


def _start_time(run: Run, df: pd.DataFrame) -> float:
    """When the run was created (its store's meta), else its first evaluation."""
    created = run.store.get_meta("created")
    if isinstance(created, int | float):
        return float(created)
    return float(df["ts"].iloc[0]) if len(df) else 0.0


def _rate(n: np.ndarray, ts: np.ndarray, window_s: float = 60.0) -> np.ndarray:
    """Evaluations per minute over the `window_s` seconds before each point (the run so far, if shorter)."""
    out = np.full(len(n), np.nan)
    j = 0
    for i in range(len(n)):
        while ts[i] - ts[j] > window_s:
            j += 1
        span = ts[i] - ts[j]
        if i > j and span > 0:
            out[i] = (n[i] - n[j]) / span * 60.0
    return out


def evaluations_per_minute(run: Run) -> pd.Series:
    """Finished evaluations in each wall-clock minute of the run (minutes without any: 0)."""
    ev = run.evaluations()
    if ev.empty:
        return pd.Series(dtype="int64", name="evaluations")
    counts = ev.set_index("time")["n"].resample("1min").count()
    counts.name = "evaluations"
    return counts


def admissions_by(run: Run, key: str = "operator") -> pd.DataFrame:
    """Per operator (or `key="model"`): `calls`, `completion_tokens`, `evaluations`, `ok`, `new`, `improve`,
    `admissions`, `admission_rate` (admissions per evaluation), `tokens_per_admission`. Sorted by admissions."""
    if key not in ("operator", "model"):
        raise ValueError(f"admissions_by: key is 'operator' or 'model', not {key!r}")
    ev = run.evaluations()
    calls = run.operator_calls()
    ev[key] = ev[key].fillna("-")
    calls[key] = calls[key].fillna("-")
    g = ev.groupby(key)
    out = pd.DataFrame({
        "evaluations": g.size(),
        "ok": g["ok"].sum(),
        "new": g["admission"].apply(lambda s: int((s == "new").sum())),
        "improve": g["admission"].apply(lambda s: int((s == "improve").sum())),
    })
    c = calls.groupby(key)
    out = out.join(pd.DataFrame({"calls": c.size(), "completion_tokens": c["completion_tokens"].sum()}), how="outer")
    out = out.fillna(0)
    for col in ("evaluations", "ok", "new", "improve", "calls", "completion_tokens"):
        out[col] = out[col].astype("int64")
    out["admissions"] = out["new"] + out["improve"]
    out["admission_rate"] = out["admissions"] / out["evaluations"].where(out["evaluations"] > 0)
    out["tokens_per_admission"] = out["completion_tokens"] / out["admissions"].where(out["admissions"] > 0)
    out.index.name = key
    cols = ["calls", "completion_tokens", "evaluations", "ok", "new", "improve", "admissions", "admission_rate",
            "tokens_per_admission"]
    return out[cols].sort_values(["admissions", "evaluations"], ascending=False)


def failure_reasons(run: Run) -> pd.DataFrame:
    """How often each kind of failure happened: `stage` (evaluation: a failed or invalid run, or the
    audit; proposal: a child refused before evaluation; operator: an operator that raised), `kind`,
    `count` and one `example` reason. Sorted by count."""
    frames = []
    ev = run.evaluations()
    failed = ev[~ev["ok"]]
    frames.append(failed.assign(stage="evaluation")[["stage", "failure", "reason"]])
    rej = run.rejections()
    frames.append(rej.assign(stage="proposal")[["stage", "failure", "reason"]])
    calls = run.operator_calls()
    frames.append(calls[~calls["ok"]].assign(stage="operator")[["stage", "failure", "reason"]])
    rows = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    if rows is None:
        return pd.DataFrame(columns=["stage", "kind", "count", "example"])
    rows["failure"] = rows["failure"].fillna("failed")
    out = rows.groupby(["stage", "failure"]).agg(count=("reason", "size"), example=("reason", "first")).reset_index()
    out = out.rename(columns={"failure": "kind"})
    out["example"] = out["example"].map(lambda r: None if not isinstance(r, str) else r[:300])
    return out.sort_values("count", ascending=False, ignore_index=True)


def audit_rejections(run: Run) -> pd.DataFrame:
    """Failed audit checks: `check`, `count` (programs whose verdict names it), `level`, one `example` reason."""
    reasons = run.audit_reasons()
    if reasons.empty:
        return pd.DataFrame(columns=["check", "count", "level", "example"])
    out = reasons.groupby("check").agg(count=("program_id", "nunique"), level=("level", "first"),
                                       example=("reason", "first")).reset_index()
    out["example"] = out["example"].map(lambda r: None if not isinstance(r, str) else r[:300])
    return out.sort_values("count", ascending=False, ignore_index=True)


def novelty(run: Run) -> pd.DataFrame:
    """The novelty of every screened child when it was proposed (mean distance to its nearest stored
    programs: 0 a copy, larger is newer), with its `operator` and whether it was later `admitted`."""
    progs = run.programs(["id", "operator", "status", "novelty"])
    progs = progs[progs["novelty"].notna()]
    adm = run.admissions()
    progs = progs.assign(admitted=progs["id"].isin(set(adm["program_id"])))
    return progs.rename(columns={"id": "program_id"}).reset_index(drop=True)


@dataclass
class Summary:
    """The run's headline numbers (values in the task's units)."""

    task: str
    metric: str
    objective: str
    evaluations: int
    budget: int
    programs: int
    best_value: float | None
    best_id: str | None
    seed_value: float | None
    coverage: float
    qd_score: float
    elites: int
    duration_s: float
    evals_per_min: float


def running_seconds(store: Store, finished: list[float]) -> float:
    """Seconds the run was running, its sessions added up: from each start (`run_started`) to the last evaluation
    that finished before the next start. The days between a stop and `evo resume` are no part of a rate."""
    starts = sorted(float(ts) for _, ts, *_ in store.events("run_started"))
    created = store.get_meta("created")
    if not starts and isinstance(created, int | float):
        starts = [float(created)]
    if not starts or not finished:
        return 0.0
    total, k = 0.0, 0
    ends = sorted(finished)
    for i, start in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else math.inf
        last = None
        while k < len(ends) and ends[k] < nxt:
            last = ends[k] if ends[k] >= start else last
            k += 1
        if last is not None:
            total += last - start
    return total


def summary(run: Run, population: Population | None = None) -> Summary:
    """Headline numbers of the run as it stands (`population`: its archive, if already replayed)."""
    population = run.archive() if population is None else population
    best = population.best()
    ev = run.evaluations()
    seeds = ev[(ev["operator"] == "seed") & ev["ok"]]["value"]
    seed_value = None if seeds.empty else float(seeds.max() if run.objective == "maximize" else seeds.min())
    duration = running_seconds(run.store, [ts.timestamp() for ts in ev["time"]]) if len(ev) else 0.0
    return Summary(
        task=run.task.name, metric=run.metric, objective=run.objective, evaluations=len(ev), budget=run.config.budget,
        programs=run.n_programs, best_value=None if best is None else run.value_of(best[1]),
        best_id=None if best is None else best[0], seed_value=seed_value, coverage=population.coverage,
        qd_score=population.qd_score, elites=population.num_elites, duration_s=duration,
        evals_per_min=len(ev) / duration * 60.0 if duration > 0 else math.nan,
    )
