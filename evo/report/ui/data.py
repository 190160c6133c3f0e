"""What the live view shows of one run, as JSON-ready dicts, read through `evo.load` and bounded queries.

A `LiveRun` wraps one `evo.load` `Run` (the store opened read-only) and answers the view's
questions with reads whose cost does not grow with the run: rowid lookups, index ranges with a
LIMIT, and a tail of the admission events that it remembers between calls (the archive: each cell's
last admission, plus the elites copied by migration). Answers are cached against the newest event's
seq, so a run that has not moved costs one lookup per poll, and a run that moves is read again at
most every `min_interval_s` seconds, whatever the number of open pages; a page that already holds
the current version (`since`) is told so in a few bytes instead of being sent the answer again.

Tables of failures and credit cover the newest `window` evaluations (a sliding window, labelled as
such in the page): counting the whole history would read every event of a long run on each refresh.
"""

from __future__ import annotations

import difflib
import json
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evo.eval.peaks import PEAKS
from evo.report.load import Run, load
from evo.store import queries as q

JSON = dict[str, Any]
PROGRESS_POINTS = 150  # sampled points of the progress curve (three index lookups each)
DIFF_LINES = 400  # an edge's diff is cut after this many lines


def _num(x: object) -> float | None:
    """A finite float for JSON (NaN and infinities are not JSON), else None."""
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


class LiveRun:
    """One run as the live view reads it; safe to share between the server's threads."""

    def __init__(self, run_dir: str | Path, *, window: int = 10_000, min_interval_s: float = 1.0, gpu: str = "H100"):
        self.run: Run = load(run_dir)
        self.name = Path(run_dir).resolve().name
        self.window = window
        self.min_interval_s = min_interval_s
        self.peaks = PEAKS[gpu]  # the store does not say which GPU timed the run: the T_SOL shown assume this one
        self._sol_us: dict[str, float] | None = None  # workload -> T_SOL in µs (fixed by the task): `_load_sol`
        self._sol_error: str | None = None
        self._lock = threading.Lock()  # one sqlite connection: one reader thread at a time
        self._elite: dict[tuple[int, int], str] = {}  # (island, cell) -> program id
        self._cell_of: dict[str, int] = {}  # admitted program -> its cell (migration keeps the cell)
        self._tail = 0  # seq of the last admission/migration event taken into `_elite`
        self._cache: dict[str, tuple[int, float, JSON]] = {}

    def close(self) -> None:
        with self._lock:
            self.run.close()

    # -- shape of the run ----------------------------------------------------------------------
    def info(self) -> JSON:
        """What does not change while the run goes on: task, metric, budget and the archive's layout."""
        run, cfg = self.run, self.run.config
        if cfg.cells == "embedding":
            layout: JSON = {"kind": "cvt", "cells": cfg.embedding_cells}
        else:
            specs = run.task.config.descriptors
            layout = {"kind": "grid", "axes": [{"name": s.name, "bins": s.bins, "low": s.low, "high": s.high}
                                               for s in specs] or [{"name": "(one cell)", "bins": 1, "low": 0,
                                                                    "high": 1}]}
        return {"name": self.name, "run_dir": str(run.run_dir), "task": run.task.name, "family": run.task.family,
                "metric": run.metric, "objective": run.objective, "budget": cfg.budget, "islands": cfg.islands,
                "layout": layout}

    def _cached(self, key: str, compute: Callable[[], JSON], min_interval_s: float | None = None) -> JSON:
        """`compute()` unless the run has not changed since it last ran (or ran under `min_interval_s` ago)."""
        with self._lock:
            version = q.last_event_seq(self.run.store)
            hit = self._cache.get(key)
            wait = self.min_interval_s if min_interval_s is None else min_interval_s
            if hit is not None and (hit[0] == version or time.monotonic() - hit[1] < wait):
                return hit[2]
            with q.snapshot(self.run.store):
                value = compute()
            value["version"] = version
            self._cache[key] = (version, time.monotonic(), value)
            return value

    # -- overview: polled every few seconds ----------------------------------------------------
    def overview(self, since: int | None = None) -> JSON:
        """Progress, throughput, the best value over time and the archive's cells; only
        `{"version", "unchanged": True}` when that is still the version `since` (what the page holds)."""
        return self._unless_held(self._cached("overview", self._overview), since)

    @staticmethod
    def _unless_held(value: JSON, since: int | None) -> JSON:
        return {"version": since, "unchanged": True} if since is not None and since == value["version"] else value

    def _overview(self) -> JSON:
        run, store = self.run, self.run.store
        done = q.evaluation_count(store)
        last = q.last_event_seq(store)
        # Progress: the evaluation count at evenly spaced events (the event log grows with everything
        # the run does, so its seqs are a clock that needs no scan).
        seqs = sorted({max(1, round(last * i / PROGRESS_POINTS)) for i in range(PROGRESS_POINTS + 1)}) if last else []
        points = q.evaluated_near(store, seqs)
        created = store.get_meta("created")
        start = float(created) if isinstance(created, int | float) else (points[0][1] if points else time.time())
        progress = [{"n": n, "t": ts - start} for n, ts in points]
        recent = q.latest_events(store, "evaluated", limit=400)  # newest first
        now_ts = recent[0][1] if recent else None
        rate = None
        if recent:
            minute = [r for r in recent if float(r[1]) >= float(recent[0][1]) - 60.0]  # type: ignore[arg-type]
            span = float(minute[0][1]) - float(minute[-1][1])  # type: ignore[arg-type]
            rate = (len(minute) - 1) / span * 60.0 if len(minute) > 1 and span > 0 else None
        started = q.latest_events(store, "run_started", limit=1)
        stopped = q.latest_events(store, "run_stopped", limit=1)
        running = bool(started) and (not stopped or stopped[0][0] < started[0][0])
        best = [{"n": n, "id": pid, "value": run.value_of(score)} for n, pid, score in q.best_records(store)]
        self._advance_archive()
        ids = sorted(set(self._elite.values()))
        scores = q.programs_by_id(store, ids, ["score"]) if ids else {}
        cells = [{"island": i, "cell": c, "id": pid, "value": _num(run.value_of(_num(scores.get(pid, (None,))[0])))}
                 for (i, c), pid in sorted(self._elite.items())]
        return {
            # The budget as stored now: `evo resume --budget` raises it while the view is open.
            "evaluations": done, "budget": int((store.get_meta("config") or {}).get("budget", run.config.budget)),
            "programs": q.program_count(store), "running": running,
            "elapsed_s": None if now_ts is None else float(now_ts) - start,  # type: ignore[arg-type]
            "evals_per_min": _num(rate), "progress": progress, "best": best,
            "best_value": best[-1]["value"] if best else None, "best_id": best[-1]["id"] if best else None,
            "cells": cells, "elites": len(cells),
        }

    def _advance_archive(self) -> None:
        """Take the admissions and migrations after the last one read into the cell table."""
        while True:
            rows = q.events_after(self.run.store, ["admitted", "migration"], self._tail,
                                  ["$.cell", "$.island", "$.moves"], limit=50_000)
            for seq, _ts, kind, pid, cell, island, moves in rows:
                if kind == "admitted" and pid is not None and cell is not None:
                    self._elite[(int(island or 0), int(cell))] = str(pid)  # type: ignore[call-overload]
                    self._cell_of[str(pid)] = int(cell)  # type: ignore[call-overload]
                elif kind == "migration" and moves:
                    for mid, _src, dst in json.loads(str(moves)):  # a copy lands in the same cell elsewhere
                        if mid in self._cell_of:
                            self._elite[(int(dst), self._cell_of[mid])] = mid
                self._tail = int(seq)  # type: ignore[call-overload]
            if len(rows) < 50_000:
                return

    # -- details: polled less often ------------------------------------------------------------
    def details(self, since: int | None = None) -> JSON:
        """Failures and audit rejections by reason, operator and model credit, lessons, the kernel suite row
        (failures and credit over the newest `window` evaluations); `since` as for `overview`."""
        self._load_sol()
        return self._unless_held(self._cached("details", self._details,
                                              min_interval_s=max(self.min_interval_s, 5.0)), since)

    def _details(self) -> JSON:
        run, store = self.run, self.run.store
        ev = q.latest_events(store, "evaluated", ["$.ok", "$.reason_kind", "$.reason", "$.admission"],
                             limit=self.window)
        failures: Counter[tuple[str, str]] = Counter()
        example: dict[tuple[str, str], str] = {}
        failed_ids = []
        for _seq, _ts, _k, pid, ok, kind, reason, _adm in ev:
            if not ok:
                key = ("evaluation", str(kind or "failed"))
                failures[key] += 1
                example.setdefault(key, str(reason or "")[:300])
                failed_ids.append(str(pid))
        for kind_name, stage in (("rejected", "proposal"), ("operator_failed", "operator")):
            for _seq, _ts, _k, _pid, kind, reason in q.latest_events(store, kind_name, ["$.reason_kind", "$.reason"],
                                                                      limit=self.window):
                key = (stage, str(kind or kind_name))
                failures[key] += 1
                example.setdefault(key, str(reason or "")[:300])
        checks: Counter[str] = Counter()
        check_example: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        for rows in q.iter_reason_rows(store, ids=failed_ids):
            for pid, _level, check, reason in rows:
                if (pid, check) not in seen:  # programs per check, not reasons
                    seen.add((pid, check))
                    checks[str(check)] += 1
                    check_example.setdefault(str(check), str(reason or "")[:300])
        return {
            "window": len(ev),
            "failures": [{"stage": s, "kind": k, "count": c, "example": example[(s, k)]}
                         for (s, k), c in failures.most_common()],
            "audit": [{"check": c, "count": n, "example": check_example[c]} for c, n in checks.most_common()],
            "credit": self._credit(ev),
            "lessons": self._lessons(),
            "suite": self._suite_row() if run.task.family == "kernels" else None,
        }

    def _credit(self, ev: list[q.Row]) -> JSON:
        """Per operator and per model, over the window: evaluations, ok, new cells, improved cells, tokens."""
        info = q.programs_by_id(self.run.store, [str(r[3]) for r in ev], ["operator", "model"])
        tables: dict[str, dict[str, Counter[str]]] = {"operator": defaultdict(Counter), "model": defaultdict(Counter)}
        for _seq, _ts, _k, pid, ok, _kind, _reason, admission in ev:
            op, model = info.get(str(pid), (None, None))
            for key, name in (("operator", op), ("model", model)):
                if key == "model" and name is None:
                    continue  # only programs an LLM wrote have a model
                row = tables[key][str(name)]
                row["evaluations"] += 1
                row["ok"] += bool(ok)
                row["new"] += admission == "new"
                row["improve"] += admission == "improve"
        last: tuple[object, ...] | None = None
        calls = q.latest_events(self.run.store, "operator_call", ["$.operator", "$.llm.model", "$.llm.completion_tokens",
                                                                   "$.llm.prompt_tokens"], limit=self.window)
        for _seq, _ts, _k, _pid, op, model, ctok, ptok in calls:
            key = (op, model, ctok, ptok)
            if ctok is not None and key == last:
                continue  # one LLM call logged once per child it made: count its tokens once
            last = key
            for table, name in (("operator", op), ("model", model)):
                if table == "model" and model is None:
                    continue
                row = tables[table][str(name)]
                row["calls"] += 1
                row["tokens"] += int(ctok or 0)  # type: ignore[call-overload]
        out: JSON = {}
        for key, rows in tables.items():
            out[key] = sorted(({"name": name, **{k: int(row[k]) for k in ("calls", "tokens", "evaluations", "ok",
                                                                          "new", "improve")},
                                "admissions": int(row["new"] + row["improve"])} for name, row in rows.items()),
                              key=lambda r: (-r["admissions"], -r["evaluations"]))
        return out

    def _lessons(self) -> JSON | None:
        """The newest lessons, when this store has any (a table or events that a later version writes)."""
        store = self.run.store
        if q.table_exists(store, "lessons"):
            cols, rows = q.latest_rows(store, "lessons", limit=20)
            # The readable columns of evo/store/lessons.py's table when they are there (not its raw statistics).
            keep = [i for i, c in enumerate(cols) if c in ("task", "version", "evaluations", "source", "text",
                                                            "carried_from")] or list(range(len(cols)))
            return {"columns": [cols[i] for i in keep],
                    "rows": [[None if r[i] is None else str(r[i])[:4000] for i in keep] for r in rows]}
        events = q.latest_events(store, "lessons", ["$"], limit=20)
        if events:
            return {"columns": ["time", "lessons"], "rows": [[r[1], str(r[4])[:4000]] for r in events]}
        return None

    def _suite_row(self) -> JSON:
        """A kernel task's row of the suite table: SOL score of the seed and of the best, and per workload
        its time against its speed of light (T_SOL, as the kernel scorer computes it)."""
        run, store = self.run, self.run.store
        best = q.best_ids(store, 1)
        seeds = [r for r in q.first_programs(store, ["id", "operator", "status", "score"]) if r[1] == "seed"
                 and r[2] == "evaluated" and r[3] is not None]
        seed = max(seeds, key=lambda r: float(r[3]))[0] if seeds else None  # type: ignore[arg-type]
        wanted = list(dict.fromkeys(i for i in (*best, seed) if i))
        # The workloads timed are those these programs report (a GPU's, or the CPU's small shapes).
        times = [m for m in q.metric_keys_of(store, wanted) if m.startswith("time_us/")]
        found = q.programs_by_id(store, wanted, ["score"], times) if wanted else {}

        def of(pid: str | None) -> JSON | None:
            if pid is None or pid not in found:
                return None
            score, *us = found[pid]
            return {"id": pid, "sol_score": _num(run.value_of(_num(score))),
                    "time_us": {m.split("/", 1)[1]: _num(t) for m, t in zip(times, us, strict=True)}}

        seed_row, best_row = of(seed), of(best[0] if best else None)
        sol = self._sol_us or {}
        workloads = []
        for name in (m.split("/", 1)[1] for m in times):
            t_sol = sol.get(name)
            seed_us = seed_row["time_us"].get(name) if seed_row else None
            best_us = best_row["time_us"].get(name) if best_row else None
            workloads.append({"name": name, "t_sol_us": t_sol, "seed_us": seed_us, "best_us": best_us,
                              # how many times its speed of light the best takes (1.0: at it)
                              "best_x_sol": _num(best_us / t_sol) if best_us and t_sol else None})
        return {"task": run.task.name, "seed": seed_row, "best": best_row, "peaks": self.peaks.name,
                "workloads": workloads, "sol_error": self._sol_error}

    def _load_sol(self) -> None:
        """T_SOL in µs of every workload the task declares (the GPU's and the CPU's small shapes), from its FLOP
        and byte counts and the assumed GPU's peaks: once, outside any read transaction (the reference's
        import of torch takes seconds, and an open transaction would hold back the writer's checkpoints)."""
        if self._sol_us is not None or self.run.task.family != "kernels":
            return
        from evo.eval.peaks import speed_of_light_s
        from evo.eval.reference_data import workloads_for

        try:
            ref = self.run.task.reference
            self._sol_us = {w.name: 1e6 * speed_of_light_s(ref.flops(dict(w.params)), ref.min_bytes(dict(w.params)),
                                                           ref.SPEC.dtype, self.peaks)
                            for device in ("cuda", "cpu") for w in workloads_for(ref.SPEC, device)}
        except Exception as e:  # the task's own code (or torch) failing here costs the T_SOL column, not the page
            self._sol_us, self._sol_error = {}, f"no speed of light: the task's reference failed ({e})"[:300]

    # -- one program -----------------------------------------------------------------------------
    def program(self, program_id: str) -> JSON | None:
        """One program: code, metrics, descriptors, verdict with reasons, lineage facts (None: no such id)."""
        run = self.run
        cols = ["id", "seq", "status", "island", "operator", "parents", "error", "verdict", "model", "eval_order",
                "value", *(f"metric_{m}" for m in run.metric_names), *(f"descriptor_{d}" for d in run.descriptor_names),
                "source"]
        with self._lock, q.snapshot(run.store):
            df = run.programs(cols, ids=[program_id])
            if df.empty:
                return None
            reasons = [{"level": lv, "check": c, "reason": r}
                       for rows in q.iter_reason_rows(run.store, ids=[program_id]) for _p, lv, c, r in rows]
        row = df.iloc[0]
        return {
            "id": program_id, "seq": int(row["seq"]), "status": row["status"], "island": int(row["island"]),
            "operator": row["operator"], "parents": list(row["parents"]), "error": row["error"],
            "verdict": row["verdict"], "reasons": reasons, "model": row["model"],
            "evaluation": None if row["eval_order"] is None or row["eval_order"] != row["eval_order"]
            else int(row["eval_order"]),
            "value": _num(row["value"]), "cell": self._cell_of.get(program_id),
            "metrics": {m: _num(row[f"metric_{m}"]) for m in run.metric_names if _num(row[f"metric_{m}"]) is not None},
            "descriptors": {d: _num(row[f"descriptor_{d}"]) for d in run.descriptor_names},
            "source": row["source"],
        }

    def lineage(self, program_id: str, depth: int = 30) -> JSON | None:
        """The chain of main parents back from a program (at most `depth` steps), oldest first, with the diff
        from each parent to its child; a child's other parents (crossover) are named on its edge."""
        run = self.run
        chain: list[tuple[str, str, list[str], float | None]] = []
        with self._lock, q.snapshot(run.store):
            current: str | None = program_id
            while current is not None and len(chain) <= depth:
                found = q.parents_of(run.store, [current])
                if current not in found:
                    break
                op, parents, score = found[current]
                chain.append((current, op, parents, score))
                current = parents[0] if parents and parents[0] not in {c[0] for c in chain} else None
            if not chain:
                return None
            sources = run.programs(["id", "source"], ids=[c[0] for c in chain]).set_index("id")["source"].to_dict()
        chain.reverse()
        nodes = []
        for i, (pid, op, parents, score) in enumerate(chain):
            node: JSON = {"id": pid, "operator": op, "value": _num(run.value_of(score)), "other_parents": parents[1:]}
            if i > 0:
                prev = chain[i - 1][0]
                diff = list(difflib.unified_diff(str(sources.get(prev, "")).splitlines(),
                                                 str(sources.get(pid, "")).splitlines(),
                                                 f"{prev[:12]}", f"{pid[:12]}", n=2, lineterm=""))
                node["diff"] = "\n".join(diff[:DIFF_LINES]) + ("\n... (cut)" if len(diff) > DIFF_LINES else "")
            nodes.append(node)
        return {"id": program_id, "truncated": current is not None, "chain": nodes}
