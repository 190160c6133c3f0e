"""Publishing: a run's best programs into `archive/`, each behind the auditor's strictest level.

A program is published only with a `publish` verdict of `pass`: the static checks again (with the
publish-only ones, such as a kernel's provenance) and, for task families with dynamic checks, a
result for every one of them from the program's stored full audit. Each published program is a
source file beside a JSON record of its provenance: task, run, lineage, operator, evaluation,
verdict, date. `archive/` is then a seed source for new runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.audit import Level, Verdict, audit
from evo.errors import EvoError
from evo.program import Program, source_files
from evo.store import DB_NAME, Store
from evo.task import load_task


@dataclass
class Published:
    program_id: str
    score: float | None
    path: Path | None  # None: refused
    verdict: Verdict


def _stored_dynamic(program: Program) -> list[tuple[str, bool, str]]:
    """The dynamic check results of the program's full audit, as the harness reported them."""
    if not program.verdict:
        return []
    data = json.loads(program.verdict)
    failed = {name for name, _ in data.get("reasons", [])}
    ran = [c for c in data.get("checks", []) if str(c).startswith("dynamic:")]
    return [(c, c not in failed, "") for c in ran]


def _lineage(store: Store, program: Program, depth: int = 50) -> list[dict[str, Any]]:
    chain, current = [], program
    for _ in range(depth):
        if not current.parents:
            break
        parent = store.get_program(current.parents[0])
        chain.append({"id": parent.id, "operator": parent.operator, "score": parent.score})
        current = parent
    return chain


def publish_run(run_dir: Path, top: int, archive: Path) -> list[Published]:
    """Audit the run's `top` best programs at level publish and write those that pass to `archive`."""
    run_dir = Path(run_dir)
    if not (run_dir / DB_NAME).is_file():
        raise EvoError(f"{run_dir} is not an evo run directory (no {DB_NAME})")
    store = Store.in_dir(run_dir, readonly=True)
    try:
        task = load_task(str(store.get_meta("config", {}).get("task") or store.get_meta("task")))
        results = []
        for program in store.best_programs(top):
            verdict = audit(program.source, Level.PUBLISH, task, {"dynamic": _stored_dynamic(program)})
            path = None
            if verdict.passed:
                folder = Path(archive) / task.name
                folder.mkdir(parents=True, exist_ok=True)
                files = source_files(program.source)
                if len(files) == 1:
                    path = folder / f"{program.id[:16]}.py"
                    path.write_text(next(iter(files.values())))
                else:
                    path = folder / program.id[:16]
                    for rel, text in files.items():
                        (path / rel).parent.mkdir(parents=True, exist_ok=True)
                        (path / rel).write_text(text)
                record = {
                    "task": task.name, "program_id": program.id, "score": program.score, "metrics": program.metrics,
                    "operator": program.operator, "parents": list(program.parents), "lineage": _lineage(store, program),
                    "run_dir": str(run_dir.resolve()), "run_config": store.get_meta("config"),
                    "verdict": verdict.to_dict(), "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                (folder / f"{program.id[:16]}.json").write_text(json.dumps(record, indent=1, default=str))
            results.append(Published(program.id, program.score, path, verdict))
        return results
    finally:
        store.close()
