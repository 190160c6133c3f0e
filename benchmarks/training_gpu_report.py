"""The reading side of benchmarks/training_gpu.py: markdown tables of its JSON file, and the measured target
written into the time_to_target task. Plain data in, text out (no torch, no GPU)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

Record = dict[str, Any]
Decide = Callable[[list[float], float, float], Any]  # evo.eval.training.target.decide


def fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def mean_std(xs: list[float], digits: int = 4) -> str:
    """`mean ± sample std` (the std of one value is 0)."""
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.{digits}f} ± {sd:.{digits}f}"


def seeds_table(runs: list[Record], names: list[str]) -> list[str]:
    """Both lm_budget seeds per device and budget: bpb mean and std over RNG seeds, each seed's bpb."""
    groups = sorted({(r["device"], float(r["budget_s"])) for r in runs if r["kind"] == "seed"})
    if not groups:
        return []
    lines = ["| device | budget s | seed | runs | val bpb (mean ± std) | per RNG seed | params | tokens seen (mean) "
             "| tokens / s |", "| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for device, budget in groups:
        for which in names:
            rs = sorted((r for r in runs if r["ok"] and r["kind"] == "seed" and r["which"] == which
                         and r["device"] == device and float(r["budget_s"]) == budget), key=lambda r: r["seed"])
            if not rs:
                continue
            per = ", ".join(f"{r['seed']}: {r['val_bpb']:.4f}" for r in rs)
            tokens = statistics.fmean(r["tokens_seen"] for r in rs)
            rate = statistics.fmean(r["tokens_seen"] / r["train_s"] for r in rs)
            lines.append(f"| {device} | {budget:g} | {which} | {len(rs)} | {mean_std([r['val_bpb'] for r in rs])} "
                         f"| {per} | {rs[0]['params']:,.0f} | {tokens:,.0f} | {rate:,.0f} |")
    return lines


def search_table(search: Record | None) -> list[str]:
    """The search's evaluations, its seeds' bpb and its best."""
    if not search:
        return []
    best = search["best"] or {}
    seeds = ", ".join(f"{name}: {fmt(v)}" for name, v in search["seeds"].items())
    budget = "-" if search["budget_s"] is None else f"{search['budget_s']:g}"
    return ["| devices | budget s | evaluations (valid) | seeds' val bpb | best val bpb | best by | best params |",
            "| --- | ---: | ---: | --- | ---: | --- | ---: |",
            f"| {', '.join(search['devices'])} | {budget} | {search['evaluations']} ({search['valid']}) | {seeds} "
            f"| **{fmt(best.get('val_bpb'))}** | {best.get('operator', '-')} | {best.get('params') or 0:,.0f} |"]


def ttt_table(runs: list[Record], decide: Decide, alpha: float) -> list[str]:
    """Time to target per device and schedule: the seeds' bpb, the one-sided t-test, the mean training time."""
    groups = sorted({(r["device"], r["which"], r["source"]) for r in runs if r["kind"] == "ttt"})
    if not groups:
        return []
    lines = ["| device | schedule | target bpb | seeds | val bpb (mean ± std) | p (one-sided t) | below target "
             "| time to target s (mean ± std) |", "| --- | --- | ---: | ---: | --- | ---: | --- | --- |"]
    for group in groups:
        rs = [r for r in runs if r["ok"] and r["kind"] == "ttt" and (r["device"], r["which"], r["source"]) == group]
        target = rs[0]["target_bpb"] if rs else None
        d = decide([r["val_bpb"] for r in rs], target, alpha) if len(rs) >= 2 and target else None
        lines.append(f"| {group[0]} | {group[1]} | {fmt(target)} | {len(rs)} | {mean_std([r['val_bpb'] for r in rs])} "
                     f"| {'-' if d is None else f'{d.p_value:.2g}'} | {'-' if d is None else d.valid} "
                     f"| {mean_std([r['train_s'] for r in rs], 1)} |")
    return lines


def table(data: Record, names: list[str], decide: Decide, alpha: float) -> str:
    """Every table the file can fill, then its failures and its provenance (dates, commits, torch)."""
    runs = data["runs"]
    lines: list[str] = []
    for part in (seeds_table(runs, names), search_table(data.get("search")), ttt_table(runs, decide, alpha)):
        lines += ([""] if lines and part else []) + part
    failed = [r for r in runs if not r["ok"]]
    if failed:
        lines += ["", "Failed runs: " + "; ".join(f"{r['kind']} {r['which']} seed {r['seed']} on {r['device']}: "
                                                   f"{r['failure']} ({(r['error'] or '')[:120]})" for r in failed)]
    if runs:
        dates = sorted(r["date"][:10] for r in runs)
        lines += ["", f"Dates {dates[0]} to {dates[-1]}; commits {', '.join(sorted({r['commit'] for r in runs}))}; "
                  f"torch {', '.join(sorted({r['torch'] for r in runs}))}."]
    commands = [f"    python3 benchmarks/training_gpu.py {' '.join(c['argv'])}    # {c['device']}, {c['date'][:10]}"
                for c in data.get("calls", []) if c["command"] != "table"]
    if commands:
        lines += ["", "Calls:", "", *commands]
    return "\n".join(lines) if lines else "no runs yet"


def set_target(path: Path, line: str) -> None:
    """Replace the `target_bpb = ...` line of the [training] table in `path` (never [training.cpu]'s)."""
    text = path.read_text()
    cpu = text.find("[training.cpu]")
    head, tail = (text, "") if cpu < 0 else (text[:cpu], text[cpu:])
    new, count = re.subn(r"^target_bpb = .*$", line, head, count=1, flags=re.M)
    if count != 1:
        raise ValueError(f"{path}: no `target_bpb = ...` line in its [training] table")
    path.write_text(new + tail)
