"""Pictures of a run: archive heatmaps, progress, the embedding map, the best program's lineage.

Each function takes a `Run` (or what `evo.report.metrics` made of one) and returns a matplotlib
`Figure`; nothing is shown or saved here (`fig.savefig`, or `evo report` embeds them in HTML).
matplotlib is used through its object API (a bare `Figure`, never pyplot): nothing needs a display,
no figure is kept in pyplot's registry, and a notebook's own backend is left alone.

Colours are the task's values; the colour map is flipped for a minimised task, so that bright is
always better.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from evo.report.load import Run

if TYPE_CHECKING:
    from evo.population import Population


def _cmap(run: Run) -> str:
    return "viridis" if run.objective == "maximize" else "viridis_r"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# -- the archive ------------------------------------------------------------------------------------
def archive_heatmap(run: Run, at: int | None = None, population: Population | None = None) -> Figure:
    """One heatmap per island of the archive after `at` evaluations (all: None), coloured by the task's
    value; pyribs' own `grid_archive_heatmap` / `cvt_archive_heatmap` draw it. `population`: the
    archive already replayed (`at` then only titles the figure)."""
    from ribs.archives import CVTArchive, GridArchive
    from ribs.visualize import cvt_archive_heatmap, grid_archive_heatmap

    from evo.population.grid import CVTCells, GridCells

    population = run.archive(at) if population is None else population
    n = len(population.islands)
    fig = _figure(5.2 * n, 4.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    values = [run.value_of(r["score"]) for t in population.tables() for r in t]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    label = f"{run.metric} ({'higher' if run.objective == 'maximize' else 'lower'} is better)"
    for i, (ax, cells) in enumerate(zip(axes, population.islands, strict=True)):
        rows = cells.table()
        objective = np.array([run.value_of(r["score"]) for r in rows], dtype=np.float64)
        # A copy of the island holding task values (the engine's archive holds scores, negated for a
        # minimised task), drawn by pyribs.
        if isinstance(cells, GridCells) and len(cells.specs) <= 2:
            specs = cells.specs
            display = GridArchive(solution_dim=1, dims=[s.bins for s in specs] or [1],
                                  ranges=[(s.low, s.high) for s in specs] or [(0.0, 1.0)])
            measures = np.array([r["descriptors"] or [0.0] for r in rows], dtype=np.float64)
            if rows:
                display.add(np.zeros((len(rows), 1)), objective, measures.reshape(len(rows), -1))
            grid_archive_heatmap(display, ax=ax, cmap=_cmap(run), vmin=vmin, vmax=vmax,
                                 cbar_kwargs={"label": label})
            names = [s.name for s in specs]
            ax.set_xlabel(names[0] if names else "")
            if len(names) > 1:
                ax.set_ylabel(names[1])
        elif isinstance(cells, CVTCells) and cells.centroids.shape[1] == 2:
            c = cells.centroids
            lo, hi = c.min(axis=0), c.max(axis=0)
            display = CVTArchive(solution_dim=1, centroids=c,
                                 ranges=list(zip(lo.tolist(), np.maximum(hi, lo + 1e-9).tolist(), strict=True)))
            if rows:
                display.add(np.zeros((len(rows), 1)), objective,
                            np.array([c[r["cell"]] for r in rows], dtype=np.float64))
            cvt_archive_heatmap(display, ax=ax, cmap=_cmap(run), vmin=vmin, vmax=vmax, cbar_kwargs={"label": label})
            ax.set_xlabel("embedding axis 0")
            ax.set_ylabel("embedding axis 1")
        else:  # more than two axes: the elites' first two descriptors
            d = np.array([r["descriptors"][:2] for r in rows], dtype=np.float64).reshape(len(rows), -1)
            sc = ax.scatter(d[:, 0], d[:, 1] if d.shape[1] > 1 else np.zeros(len(d)), c=objective,
                            cmap=_cmap(run), vmin=vmin, vmax=vmax)
            fig.colorbar(sc, ax=ax, label=label)
            ax.set_xlabel(run.descriptor_names[0] if run.descriptor_names else "")
            if len(run.descriptor_names) > 1:
                ax.set_ylabel(run.descriptor_names[1])
        ax.set_title(f"island {i}: {cells.num_elites} elites, coverage {cells.coverage:.1%}")
    done = run.n_evaluations if at is None else min(at, run.n_evaluations)
    fig.suptitle(f"{run.task.name}: archive after {done} evaluations")
    return fig


# -- progress ------------------------------------------------------------------------------------------
def progress_plot(progress: pd.DataFrame, run: Run) -> Figure:
    """Best value, coverage, QD-score and evaluations per minute against evaluations
    (`progress` is `evo.report.metrics.progress(run)`)."""
    fig = _figure(11, 6.5)
    axes = fig.subplots(2, 2, sharex=True)
    n = progress["n"]
    ax = axes[0, 0]
    ax.scatter(n, progress["value"], s=6, alpha=0.35, color="tab:gray", label="each evaluation")
    ax.plot(n, progress["best_value"], color="tab:blue", lw=2, label="best so far")
    ax.set_ylabel(run.metric)
    ax.set_title(f"{run.metric} ({'max' if run.objective == 'maximize' else 'min'}imised)")
    ax.legend(loc="best", fontsize=8)
    for ax, col, title in ((axes[0, 1], "coverage", "coverage (filled cells, mean over islands)"),
                           (axes[1, 0], "qd_score", "QD-score"),
                           (axes[1, 1], "evals_per_min", "evaluations per minute (last minute)")):
        ax.plot(n, progress[col], lw=2)
        ax.set_title(title)
    for ax in axes[1]:
        ax.set_xlabel("evaluations")
    return fig


def bar_plot(table: pd.DataFrame, column: str, title: str) -> Figure:
    """A horizontal bar per row of `table` (its index labels the bars), of `column`."""
    fig = _figure(7, 0.4 * max(len(table), 3) + 1.2)
    ax = fig.subplots()
    labels = [str(x)[:50] for x in table.index]
    ax.barh(labels[::-1], table[column].to_numpy()[::-1], color="tab:blue")
    ax.set_xlabel(column)
    ax.set_title(title)
    return fig


def novelty_plot(novelty: pd.DataFrame) -> Figure:
    """The distribution of children's novelty when proposed, admitted ones apart
    (`novelty` is `evo.report.metrics.novelty(run)`)."""
    fig = _figure(7, 3.8)
    ax = fig.subplots()
    values = novelty["novelty"].to_numpy(dtype=float)
    bins = np.histogram_bin_edges(values, bins=30) if len(values) else 10
    ax.hist(values[~novelty["admitted"].to_numpy(dtype=bool)], bins=bins, alpha=0.6, label="not admitted")
    ax.hist(values[novelty["admitted"].to_numpy(dtype=bool)], bins=bins, alpha=0.6, label="admitted")
    ax.set_xlabel("novelty (mean cosine distance to the nearest stored programs)")
    ax.set_ylabel("children")
    ax.legend()
    return fig


# -- embeddings --------------------------------------------------------------------------------------------
def embedding_map(run: Run, method: str = "pca", sample: int = 3000, seed: int = 0) -> Figure:
    """Program embeddings in 2-D (PCA or t-SNE from scikit-learn) of up to `sample` programs, coloured by
    the task's value (left) and by the archive cell each program competed for (right)."""
    emb = run.embeddings(sample=sample if run.n_programs > sample else None, seed=seed)
    progs = run.programs(["id", "status", "value", *(f"descriptor_{d}" for d in run.descriptor_names)],
                         ids=emb.ids).set_index("id").reindex(emb.ids)
    fig = _figure(12, 5)
    axes = fig.subplots(1, 2)
    if len(emb) < 3:
        for ax in axes:
            ax.text(0.5, 0.5, "fewer than 3 embedded programs", ha="center", va="center")
        return fig
    xy = project_2d(emb.vectors, method, seed)
    value = progs["value"].to_numpy(dtype=float)
    ok = np.isfinite(value)
    ax = axes[0]
    ax.scatter(xy[~ok, 0], xy[~ok, 1], s=10, c="lightgray", label="failed / not evaluated")
    sc = ax.scatter(xy[ok, 0], xy[ok, 1], s=14, c=value[ok], cmap=_cmap(run))
    fig.colorbar(sc, ax=ax, label=run.metric)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"code embeddings ({method.upper()}), by {run.metric}")
    cells = _cells_of(run, progs, ok)
    ax = axes[1]
    ax.scatter(xy[~ok, 0], xy[~ok, 1], s=10, c="lightgray")
    codes = pd.Series(cells[ok]).astype("category").cat.codes.to_numpy()
    ax.scatter(xy[ok, 0], xy[ok, 1], s=14, c=codes, cmap="tab20")
    ax.set_title(f"by archive cell ({len(set(cells[ok].tolist()))} cells)")
    return fig


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of `vectors` by PCA or t-SNE."""
    from sklearn.decomposition import PCA

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(vectors)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
    raise ValueError(f"embedding_map: method is 'pca' or 'tsne', not {method!r}")


def _cells_of(run: Run, progs: pd.DataFrame, ok: np.ndarray) -> np.ndarray:
    """The cell (of island 0's layout) that each evaluated program's descriptors fall in."""
    population = run.archive(0)  # empty: only its cell layout is used
    cells = population.islands[0]
    out = np.full(len(progs), -1)
    cols = [f"descriptor_{d}" for d in run.descriptor_names]
    for i, row in enumerate(progs[cols].to_numpy(dtype=float)):
        if ok[i] and np.all(np.isfinite(row)):
            out[i] = cells.decide("?", 0.0, row.tolist()).cell
    return out


# -- lineage -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One edge of a lineage: `child` made from `parent` by `operator`, with the unified diff."""

    parent: str
    child: str
    operator: str
    parent_value: float | None
    child_value: float | None
    diff: str


def lineage_tree(run: Run, program_id: str | None = None, max_nodes: int = 80) -> Figure:
    """The ancestors of a program (the best, by default) as a tree, oldest at the top, each edge labelled
    with the operator that made the child, each node coloured by its value."""
    pid = program_id or _best_id(run)
    fig = _figure(12, 7)
    ax = fig.subplots()
    ax.set_axis_off()
    if pid is None:
        ax.text(0.5, 0.5, "no evaluated program yet", ha="center", va="center")
        return fig
    edges = run.ancestry(pid, max_nodes=max_nodes)
    nodes = edges.attrs["nodes"].set_index("program_id")
    depth = _depths(pid, edges)
    levels: dict[int, list[str]] = {}
    for node, d in sorted(depth.items(), key=lambda kv: (kv[1], kv[0])):
        levels.setdefault(d, []).append(node)
    top = max(levels) if levels else 0
    pos = {}
    for d, members in levels.items():
        for j, node in enumerate(members):
            pos[node] = ((j + 1) / (len(members) + 1), (top - d) / max(top, 1))  # the best at the bottom
    for _, e in edges.iterrows():
        if e.parent not in pos or e.child not in pos:
            continue
        (x0, y0), (x1, y1) = pos[e.parent], pos[e.child]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": "gray" if e.parent_index else "black", "lw": 1})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, e.operator, fontsize=7, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    xs = [pos[n][0] for n in pos]
    ys = [pos[n][1] for n in pos]
    vals = [nodes["value"].get(n) for n in pos]
    colours = [np.nan if v is None else v for v in vals]
    sc = ax.scatter(xs, ys, s=140, c=colours, cmap=_cmap(run), edgecolors="black", zorder=3,
                    plotnonfinite=True)
    for n, (x, y) in pos.items():
        ax.text(x, y - 0.045, n[:8], fontsize=6, ha="center", va="top")
    fig.colorbar(sc, ax=ax, label=run.metric, shrink=0.8)
    best_value = nodes["value"].get(pid)
    shown = "-" if best_value is None or not math.isfinite(best_value) else f"{best_value:.6g}"
    ax.set_title(f"lineage of {pid[:12]} ({run.metric} {shown}); {len(pos)} programs")
    return fig


def _best_id(run: Run) -> str | None:
    best = run.best(1, columns=["id"])
    return None if best.empty else str(best["id"].iloc[0])


def _depths(pid: str, edges: pd.DataFrame) -> dict[str, int]:
    """Generations back from `pid` (0) along the shortest path, over all parents."""
    parents: dict[str, list[str]] = {}
    for p, c in zip(edges["parent"], edges["child"], strict=True):
        parents.setdefault(c, []).append(p)
    depth = {pid: 0}
    frontier = [pid]
    while frontier:
        nxt = []
        for node in frontier:
            for p in parents.get(node, []):
                if p not in depth:
                    depth[p] = depth[node] + 1
                    nxt.append(p)
        frontier = nxt
    return depth


def lineage_steps(run: Run, program_id: str | None = None, max_steps: int = 200) -> list[Step]:
    """The main line of descent of a program (the best, by default): from its oldest ancestor through
    each first parent to it, with the unified diff each operator made."""
    pid = program_id or _best_id(run)
    if pid is None:
        return []
    chain = [pid]
    edges = run.ancestry(pid, max_nodes=max_steps + 1)
    first = {c: p for p, c, i in zip(edges["parent"], edges["child"], edges["parent_index"], strict=True) if i == 0}
    while chain[-1] in first and len(chain) <= max_steps:
        chain.append(first[chain[-1]])
    chain.reverse()
    nodes = edges.attrs["nodes"].set_index("program_id")
    sources = {p: run.source(p) for p in chain}
    steps = []
    for parent, child in zip(chain, chain[1:], strict=False):
        diff = "".join(difflib.unified_diff(sources[parent].splitlines(keepends=True),
                                            sources[child].splitlines(keepends=True),
                                            fromfile=parent[:12], tofile=child[:12], n=2))
        steps.append(Step(parent, child, str(nodes["operator"].get(child)), _num(nodes["value"].get(parent)),
                          _num(nodes["value"].get(child)), diff))
    return steps


def _num(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def format_steps(steps: Sequence[Step], metric: str = "value") -> str:
    """The lineage as text: one header line per step and its diff."""
    out = []
    for s in steps:
        pv = "-" if s.parent_value is None else f"{s.parent_value:.6g}"
        cv = "-" if s.child_value is None else f"{s.child_value:.6g}"
        out.append(f"== {s.parent[:12]} -> {s.child[:12]} by {s.operator}: {metric} {pv} -> {cv}\n{s.diff}")
    return "\n".join(out)
