"""Population and store at scale: evo's hot path with 10k, 100k and 1M programs stored (issue 6).

One run fills a real run store (SQLite, through `Store.add_programs`) in a temporary run
directory up to each size in turn, and at each size measures, in a fresh process (so that its
peak memory is the engine's, not the filler's):

- resume: `Engine.open` on the store (what `evo resume` does: the novelty index refilled from
  the stored embeddings, the population replayed from the evaluations), then the time until
  the novelty index's background build is ready;
- sample: `Population.sample` (a parent and its inspirations) plus reading those programs from
  the store (uncached: the engine's worst case);
- admit: what the engine does for one evaluated child: `Store.add_program` (commit),
  `NoveltyArchive.add`, then `Engine.record` (commit of the evaluation, grid admission);
- novelty query: `NoveltyArchive.assess` (k = 10 nearest), and recall@10 of `nearest` against
  an exact scan on a subset of the queries;
- disk bytes per program (database after a checkpoint / programs) and peak RSS;
- SQL plans of every statement that sample and admit ran: none may scan a table.

The programs are synthetic Python of ~57 lines grown as lineages (see `LineageGenerator`);
embeddings come from evo's default embedder (hashed n-grams, 256-d) or, with
`--embeddings lowrank`, from a lineage walk in a 32-d latent space projected to 256-d.

    .venv/bin/python benchmarks/population_scale.py                       # 10k, 100k, 1M
    .venv/bin/python benchmarks/population_scale.py --sizes 10000 --json /tmp/x.json

Prints a table and writes JSON (default benchmarks/results/population_scale.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evo.config import RunConfig  # noqa: E402
from evo.program import Program, Status, new_program_id  # noqa: E402
from evo.store import DB_NAME, Store  # noqa: E402

TASK = "math/circle_packing_26"
DESCRIPTOR_RANGES = ((0.0, 0.06), (0.0, 0.7))  # the task's radius_std, boundary_fraction
CHUNK = 10_000  # programs a fill worker grows as one lineage forest (an island's worth)
EXTRA = (2000, 200)  # more children per chunk (first two chunks, others), never stored: queries, candidates
HELD_MAX = 6000  # held-out children kept for the next sizes
DIM = 256
LATENT = 32
TARGETS = {"sample_p50_ms": 1.0, "admit_p50_ms": 2.0, "query_p99_ms": 2.0, "recall_at_10": 0.95,
           "resume_s": 60.0, "peak_rss_gb": 8.0}

# -- synthetic programs --------------------------------------------------------------------
WORDS = (
    "alpha beta gamma delta eps theta lam mu sigma tau rho phi psi omega radius center width height"
    " grid cell point pts xs ys dist score best step rate decay scale shift offset margin limit count"
    " total value values item items node nodes edge edges queue heap stack seen cache memo key keys pair"
    " pairs left right low high mid lo hi acc buf out res tmp cur prev nxt idx pos size weight bias"
).split()

BLOCKS = (
    """def {f}({a}, {b}={i0}):
    {c} = [{a} * {x0} + {i1} for _ in range({i2})]
    return sum({c}) / max(len({c}), 1) + {b}
""",
    """def {f}({a}, {b}):
    {c} = 0.0
    for {d} in range(len({a})):
        {c} += ({a}[{d}] - {b}) ** 2
    return {c} ** 0.5 * {x0}
""",
    """class {K}:
    def __init__(self, {a}={i0}, {b}={x1}):
        self.{a} = {a}
        self.{b} = {b}

    def {g}(self, {c}):
        return self.{a} * {c} + self.{b} - {x0}
""",
    """def {f}({a}):
    {b} = sorted({a}, key=lambda {c}: ({c} * {x0}) % {i0})
    {d} = {{}}
    for {e} in {b}:
        {d}[{e} % {i1}] = {d}.get({e} % {i1}, 0) + 1
    return {d}
""",
    """{U} = {x1}
{V} = {i0}
{W}S = [{x0}, {x2}, {x1}, {i1}]
""",
    """def {f}({a}, {b}={i0}, {c}={x0}):
    if {a} < {x1}:
        return {c}
    while {a} > {b}:
        {a} = {a} * {x2} - {i1}
    return {a} + {c}
""",
    """def {f}({a}):
    {b} = []
    for {c} in range({i0}):
        {d} = math.sin({c} * {x0}) * {x1}
        {e} = math.cos({c} * {x2}) * {x0}
        {b}.append(({d}, {e}, {a} * {i1}))
    return {b}
""",
    """def {f}({a}, {b}):
    try:
        {c} = {a} / ({b} - {x0})
    except ZeroDivisionError:
        {c} = {x1}
    return max(min({c}, {i0}), -{i1})
""",
    """def {f}({a}, {b}={i0}):
    {c} = [[0.0] * {b} for _ in range({i1})]
    for {d} in range({i1}):
        for {e} in range({b}):
            {c}[{d}][{e}] = {a}[{d} % len({a})] * {x0} + {e} * {x1}
    return {c}
""",
    """def {f}({a}):
    {b}, {c} = {x0}, {i0}
    for {d} in {a}:
        if {d} > {b}:
            {b}, {c} = {d}, {c} + 1
    return {b}, {c}
""",
)

N_BLOCKS = 8
MUTATIONS = (("fresh", 0.10), ("constants", 0.50), ("structure", 0.30), ("crossover", 0.10))


@dataclass(frozen=True)
class Block:
    template: int
    names: int  # seed of the identifiers
    literals: int  # seed of the numeric literals


def render_block(block: Block) -> str:
    names = random.Random(block.names)
    lit = random.Random(block.literals)
    w = names.sample(WORDS, 8)
    return BLOCKS[block.template].format(
        f=f"{w[0]}_{w[1]}", g=f"{w[2]}_{w[3]}", K=w[4].title() + w[5].title(),
        U=w[5].upper(), V=w[6].upper(), W=w[7].upper(),
        a=w[3], b=w[4], c=w[5], d=w[6], e=w[7],
        i0=lit.randrange(2, 500), i1=lit.randrange(1, 100), i2=lit.randrange(2, 64),
        x0=round(lit.uniform(-5, 5), lit.randrange(1, 6)), x1=round(lit.uniform(0, 2), 3),
        x2=round(lit.uniform(0, 1), 4),
    )


class LineageGenerator:
    """Programs of one chunk, each a fresh program or a mutant of an earlier one of the chunk."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.genomes: list[tuple[int, tuple[Block, ...]]] = []  # (header seed, blocks)
        self._cache: dict[Block, str] = {}

    def _block(self) -> Block:
        r = self.rng
        return Block(r.randrange(len(BLOCKS)), r.getrandbits(32), r.getrandbits(32))

    def _text(self, block: Block) -> str:
        text = self._cache.get(block)
        if text is None:
            text = self._cache[block] = render_block(block)
        return text

    def next(self) -> tuple[str, int | None, str]:
        """(source, index of the parent in this chunk or None, mutation kind)."""
        r = self.rng
        u, kind = r.random(), "fresh"
        for name, p in MUTATIONS:
            if u < p:
                kind = name
                break
            u -= p
        parent = None
        if kind == "fresh" or not self.genomes:
            kind = "fresh"
            header, blocks = r.getrandbits(32), tuple(self._block() for _ in range(N_BLOCKS))
        else:
            parent = r.randrange(len(self.genomes))
            header, blocks = self.genomes[parent]
            i = r.randrange(N_BLOCKS)
            if kind == "constants":
                b = blocks[i]
                blocks = blocks[:i] + (Block(b.template, b.names, r.getrandbits(32)),) + blocks[i + 1 :]
            elif kind == "structure":
                blocks = blocks[:i] + (self._block(),) + blocks[i + 1 :]
            else:
                other = self.genomes[r.randrange(len(self.genomes))][1]
                blocks = blocks[:i] + other[i:]
        self.genomes.append((header, blocks))
        source = (
            f'"""Candidate {header}: a heuristic for the task."""\nimport math\nimport random\n\n'
            + "\n".join(self._text(b) for b in blocks)
            + f"\ndef main():\n    return run({header % 97})\n"
        )
        return source, parent, kind


# -- filling -------------------------------------------------------------------------------
def grow_chunk(args: tuple[int, int, int, str]) -> dict[str, Any]:
    """One chunk: `n` programs to store and `extra` children (of them) to hold out, with embeddings."""
    seed, n, extra, embeddings = args
    gen = LineageGenerator(seed)
    made = [gen.next() for _ in range(n + extra)]
    sources = [m[0] for m in made]
    if embeddings == "ngram":
        from evo.embed import NgramEmbedder

        vectors = NgramEmbedder(DIM).embed(sources)
    else:  # a lineage walk in a LATENT-d space, seen through a fixed random projection
        rng = np.random.default_rng(seed)
        z = np.empty((len(made), LATENT), dtype=np.float32)
        for i, (_, parent, kind) in enumerate(made):
            step = {"fresh": 0.0, "constants": 0.15, "structure": 0.4, "crossover": 0.5}[kind]
            z[i] = rng.standard_normal(LATENT) if parent is None else z[parent] + step * rng.standard_normal(LATENT)
        proj = np.random.default_rng(12345).standard_normal((LATENT, DIM)).astype(np.float32)
        vectors = z @ proj + 0.05 * rng.standard_normal((len(made), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return {"sources": sources, "parents": [m[1] for m in made], "kinds": [m[2] for m in made],
            "vectors": vectors.astype(np.float32), "n": n}


OPERATOR_OF = {"fresh": "llm_rewrite", "constants": "constants", "structure": "llm_diff", "crossover": "crossover"}


def chunk_programs(chunk: dict[str, Any], index: int, rng: np.random.Generator, islands: int) -> list[Program]:
    """Programs of a stored chunk, 90% evaluated (score, descriptors) and 10% failed."""
    n = chunk["n"]
    ids = [new_program_id() for _ in range(n)]
    programs = []
    for i in range(n):
        parent = chunk["parents"][i]
        failed = rng.random() < 0.1
        score = None if failed else float(rng.normal(2.0, 0.3))
        descriptors = () if failed else tuple(float(rng.uniform(lo, hi)) for lo, hi in DESCRIPTOR_RANGES)
        programs.append(Program(
            source=chunk["sources"][i], id=ids[i], parents=() if parent is None else (ids[parent],),
            operator=OPERATOR_OF[chunk["kinds"][i]], island=index % islands,
            status=Status.FAILED if failed else Status.EVALUATED, score=score,
            metrics={} if failed else {"sum_radii": score}, descriptors=descriptors,
            error="IndexError: list index out of range" if failed else None,
            meta={"novelty": round(float(rng.uniform(0.0, 0.2)), 6)},
        ))
    return programs


def new_run(run_dir: Path, islands: int = 2) -> None:
    """A run directory whose store `Engine.open` accepts (config and task in its meta)."""
    store = Store.in_dir(run_dir)
    # Lessons off: a lesson every 200 evaluations reads the recent history (evo/lessons.py), work apart from
    # the sampling and admission this measures, and it would show here as their table scans.
    config = RunConfig(task=TASK, islands=islands, budget=10**9, lessons_every=0)
    store.set_meta("task", TASK)
    store.set_meta("config", config.to_dict())
    store.set_meta("created", time.time())
    store.close()


@dataclass
class Held:
    """Children never stored: queries for the novelty index and candidates to admit."""

    sources: list[str]
    vectors: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, vectors=self.vectors, sources=np.array(self.sources, dtype=object))

    @classmethod
    def load(cls, path: Path) -> Held:
        data = np.load(path, allow_pickle=True)
        return cls(list(data["sources"]), data["vectors"])

    def split(self, n: int) -> tuple[Held, Held]:
        """(the first n, the rest): children used once are not offered again."""
        return Held(self.sources[:n], self.vectors[:n]), Held(self.sources[n:], self.vectors[n:])


def fill(run_dir: Path, start: int, stop: int, embeddings: str, workers: int, held: Held | None,
         progress: Any = None) -> tuple[Held, float]:
    """Grow the store from `start` to `stop` programs; returns the held-out children and seconds."""
    t0 = time.perf_counter()
    store = Store.in_dir(run_dir)
    rng = np.random.default_rng(start)
    first_chunk = start // CHUNK
    jobs = [(1000 + c, min(CHUNK, stop - c * CHUNK), EXTRA[c >= 2], embeddings)
            for c in range(first_chunk, -(-stop // CHUNK))]
    sources = [] if held is None else list(held.sources)
    vectors = [] if held is None else [held.vectors]
    with Pool(workers) as pool:
        for j, chunk in enumerate(pool.imap(grow_chunk, jobs)):
            programs = chunk_programs(chunk, first_chunk + j, rng, 2)
            for lo in range(0, len(programs), 5000):
                store.add_programs(programs[lo : lo + 5000], chunk["vectors"][lo : min(lo + 5000, chunk["n"])])
            sources.extend(chunk["sources"][chunk["n"] :])
            vectors.append(chunk["vectors"][chunk["n"] :])
            if progress is not None:
                progress(len(programs))
    store.close()
    return Held(sources[-HELD_MAX:], np.concatenate(vectors)[-HELD_MAX:]), time.perf_counter() - t0


# -- measuring ---------------------------------------------------------------------------
class NullEvaluator:
    """The engine's evaluator slot; nothing is evaluated here."""

    workers = 1

    async def evaluate(self, program: Program) -> Any:  # pragma: no cover - never awaited
        raise RuntimeError("the scale benchmark evaluates nothing")

    def close(self) -> None:
        pass


def pct(xs: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(xs), q)) * 1e3  # ms


class SqlTrace:
    """Statements run on a store's connection while active, for their query plans."""

    def __init__(self, store: Store):
        self.store = store
        self.statements: set[str] = set()

    def __enter__(self) -> SqlTrace:
        self.store.db.set_trace_callback(self.statements.add)
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.db.set_trace_callback(None)

    def scans(self) -> list[str]:
        """Plan lines that read a whole table (SCAN without an index) for any traced statement."""
        bad = []
        for sql in sorted(self.statements):
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
                continue
            for row in self.store.db.execute("EXPLAIN QUERY PLAN " + sql):
                detail = row[-1]
                if detail.startswith("SCAN") and "USING" not in detail:
                    bad.append(f"{detail}  <-  {sql[:120]}")
        return bad


def measure(run_dir: Path, held: Held, samples: int, admits: int, queries: int, recall_queries: int,
            seed: int = 0) -> dict[str, Any]:
    """Resume the run with the engine and time its hot path (see the module docstring)."""
    from evo.engine import Engine

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    engine = Engine.open(run_dir, evaluator=NullEvaluator())
    out["resume_open_s"] = time.perf_counter() - t0
    engine.novelty.wait()
    out["resume_s"] = time.perf_counter() - t0
    out["programs"] = engine.store.count_programs()
    out["novelty_index"] = engine.novelty.kind
    rng = np.random.default_rng(seed)
    # The garbage-collector settings of the engine's loop (Engine.run_async): what exists is frozen,
    # young objects are collected less often.
    gc.collect()
    gc.freeze()
    gc_threshold = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        out.update(_hot_path(engine, held, samples, admits, queries, recall_queries, rng))
    finally:
        gc.set_threshold(*gc_threshold)
        gc.unfreeze()
        engine.close()
    return out


def _hot_path(engine: Any, held: Held, samples: int, admits: int, queries: int, recall_queries: int,
              rng: np.random.Generator) -> dict[str, Any]:
    from evo.eval.backends.base import EvalResult

    store = engine.store
    run_dir = engine.run_dir

    # sample: parent + inspirations, then their programs from the store (no cache)
    t_pop, t_all = [], []
    with SqlTrace(store) as trace_sample:
        for i in range(samples):
            t = time.perf_counter()
            parents, inspirations = engine.population.sample(i % engine.config.islands, rng, n_parents=1)
            t1 = time.perf_counter()
            [store.get_program(pid) for pid in parents + inspirations]
            t2 = time.perf_counter()
            t_pop.append(t1 - t)
            t_all.append(t2 - t)

    # novelty queries, and recall@10 against an exact scan
    q_rows, a_rows = range(queries), range(queries, min(queries + admits, len(held.sources)))
    t_q = []
    for r in q_rows:
        t = time.perf_counter()
        engine.novelty.assess(held.vectors[r])
        t_q.append(time.perf_counter() - t)
    recalls = []
    for r in q_rows[:recall_queries]:
        approx = {pid for pid, _ in engine.novelty.nearest(held.vectors[r], 10)}
        exact = {pid for pid, _ in engine.novelty.exact_nearest(held.vectors[r], 10)}
        recalls.append(len(approx & exact) / max(len(exact), 1))

    # admit: store the child, index it, record its evaluation, admit it to the grid
    elite_ids = engine.population.islands[0].elite_ids() or [None]
    t_admit, t_parts = [], {"store_add_program": [], "novelty_add": [], "record": []}
    with SqlTrace(store) as trace_admit:
        for j, r in enumerate(a_rows):
            island = j % engine.config.islands
            parent = elite_ids[j % len(elite_ids)]
            child = Program(source=held.sources[r], parents=() if parent is None else (parent,),
                            operator="constants", island=island)
            child.meta["novelty"] = 0.05
            call = {"operator": "constants", "parents": list(child.parents), "island": island}
            result = EvalResult(ok=True, score=float(rng.normal(2.0, 0.3)), metrics={"sum_radii": 2.0},
                                descriptors=tuple(float(rng.uniform(lo, hi)) for lo, hi in DESCRIPTOR_RANGES))
            t = time.perf_counter()
            store.add_program(child, held.vectors[r], events=[("operator_call", call),
                                                               ("proposed", {"operator": "constants",
                                                                             "novelty": 0.05})])
            t1 = time.perf_counter()
            engine.novelty.add(child.id, held.vectors[r])
            t2 = time.perf_counter()
            engine.record(child, result)
            t3 = time.perf_counter()
            t_admit.append(t3 - t)
            t_parts["store_add_program"].append(t1 - t)
            t_parts["novelty_add"].append(t2 - t1)
            t_parts["record"].append(t3 - t2)
    scans = trace_sample.scans() + trace_admit.scans()

    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db_bytes = sum(p.stat().st_size for p in run_dir.glob(DB_NAME + "*"))
    n_programs = store.count_programs()
    return {
        "sample_p50_ms": pct(t_all, 0.5), "sample_p99_ms": pct(t_all, 0.99),
        "sample_population_only_p50_ms": pct(t_pop, 0.5), "sample_population_only_p99_ms": pct(t_pop, 0.99),
        "admit_p50_ms": pct(t_admit, 0.5), "admit_p99_ms": pct(t_admit, 0.99),
        "admit_parts_p50_ms": {k: pct(v, 0.5) for k, v in t_parts.items()},
        "query_p50_ms": pct(t_q, 0.5), "query_p99_ms": pct(t_q, 0.99),
        "recall_at_10": float(np.mean(recalls)) if recalls else None,
        "disk_bytes_per_program": db_bytes / n_programs, "db_bytes": db_bytes,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "table_scans": scans,
        "counts": {"samples": samples, "admits": len(a_rows), "queries": len(q_rows), "recall_queries": len(recalls)},
    }


def measure_in_subprocess(run_dir: Path, held: Held, args: argparse.Namespace) -> dict[str, Any]:
    held_path = run_dir / "held.npz"  # the first --queries are queries, the next --admits candidates
    held.save(held_path)
    out_path = run_dir / "measure.json"
    cmd = [sys.executable, __file__, "--_measure", str(run_dir), "--_out", str(out_path),
           "--samples", str(args.samples), "--admits", str(args.admits), "--queries", str(args.queries),
           "--recall-queries", str(args.recall_queries)]
    subprocess.run(cmd, check=True)
    return json.loads(out_path.read_text())


# -- report --------------------------------------------------------------------------------
ROWS = [
    ("fill (programs/s)", "fill_per_s", "{:,.0f}"),
    ("resume: Engine.open (s)", "resume_open_s", "{:.1f}"),
    ("resume: + novelty index ready (s)", "resume_s", "{:.1f}"),
    ("sample parent+inspirations p50 / p99 (ms)", ("sample_p50_ms", "sample_p99_ms"), "{:.3f}"),
    ("  population only p50 (ms)", "sample_population_only_p50_ms", "{:.3f}"),
    ("admit p50 / p99 (ms)", ("admit_p50_ms", "admit_p99_ms"), "{:.3f}"),
    ("novelty query p50 / p99 (ms)", ("query_p50_ms", "query_p99_ms"), "{:.3f}"),
    ("recall@10 vs exact", "recall_at_10", "{:.3f}"),
    ("novelty index", "novelty_index", "{}"),
    ("disk per program (bytes)", "disk_bytes_per_program", "{:,.0f}"),
    ("peak RSS of the engine (GB)", "peak_rss_gb", "{:.2f}"),
    ("table scans in sample/admit", "table_scans", "{}"),
]


def cell(result: dict[str, Any], key: Any, fmt: str) -> str:
    if isinstance(key, tuple):
        return " / ".join(fmt.format(result[k]) for k in key)
    value = result.get(key)
    if key == "table_scans":
        return str(len(value or []))
    return "-" if value is None else fmt.format(value)


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evo population and store at scale")
    table.add_column("operation")
    for r in results:
        table.add_column(f"{r['size']:,}", justify="right")
    for label, key, fmt in ROWS:
        table.add_row(label, *(cell(r, key, fmt) for r in results))
    Console().print(table)


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    return {
        key: (r[key] is not None and (r[key] >= target if key == "recall_at_10" else r[key] <= target))
        for key, target in TARGETS.items()
    } | {"no_table_scans": not r["table_scans"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="stored programs, comma-separated, rising")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "population_scale.json")
    ap.add_argument("--embeddings", choices=("ngram", "lowrank"), default="ngram")
    ap.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                    help="processes that generate and embed programs while filling")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--admits", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=800)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--run-dir", type=Path, default=None, help="keep the store here (default: a temp dir)")
    ap.add_argument("--_measure", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._measure is not None:  # the child process: resume and measure
        held = Held.load(args._measure / "held.npz")
        result = measure(args._measure, held, args.samples, args.admits, args.queries, args.recall_queries)
        args._out.write_text(json.dumps(result))
        return 0

    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.admits + args.queries > EXTRA[0]:
        ap.error(f"--admits + --queries must be at most {EXTRA[0]}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    tmp = None
    if args.run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="evo-scale-")
        run_dir = Path(tmp.name) / "run"
    else:
        run_dir = args.run_dir
        if (run_dir / DB_NAME).exists():
            ap.error(f"{run_dir} already holds a store; give an empty --run-dir")
    new_run(run_dir)
    results: list[dict[str, Any]] = []
    held: Held | None = None
    stored = 0
    for size in sizes:
        with Progress(TextColumn("filling to {task.total:,} programs"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn()) as progress:
            task = progress.add_task("fill", total=size, completed=stored)
            held, seconds = fill(run_dir, stored, size, args.embeddings, args.workers, held,
                                 lambda n, task=task: progress.advance(task, n))
        filled = size - stored
        stored = size
        print(f"filled {filled:,} programs in {seconds:.1f} s ({filled / seconds:,.0f}/s): measuring ...", flush=True)
        used, held = held.split(args.queries + args.admits)
        r = measure_in_subprocess(run_dir, used, args)
        r.update(size=size, fill_s=seconds, fill_per_s=filled / seconds)
        r["passed"] = verdicts(r)
        results.append(r)
        stored = r["programs"]  # the admitted candidates are in the store too
        print_table(results)
    report = {
        "benchmark": "population_scale",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "embeddings": args.embeddings,
        "fill": f"Store.add_programs in batches of 5,000 (one transaction each); programs generated and embedded "
                f"by {args.workers} processes, chunks of {CHUNK:,} grown as lineages; 90% evaluated, 10% failed",
        "targets": TARGETS,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg": os.getloadavg()},
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
