"""The engine's screen, for seeds: a seed that does not parse, or is a near-duplicate of a program the run
already holds (or of an earlier seed), is dropped before evaluation, with the reason kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evo.ast_parse import parse_source
from evo.population.novelty import NoveltyArchive
from evo.program import Program, Status


@dataclass
class ScreenedSeeds:
    """Seeds as the screen left them: `kept` (proposed, with their embeddings) and `dropped` (rejected,
    `error` saying why, `meta['reason_kind']` parse_error or near_duplicate)."""

    kept: list[tuple[Program, np.ndarray]] = field(default_factory=list)
    dropped: list[Program] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for an event and a message."""
        kinds: dict[str, int] = {}
        for p in self.dropped:
            kind = str(p.meta.get("reason_kind"))
            kinds[kind] = kinds.get(kind, 0) + 1
        return {"kept": len(self.kept), "dropped": kinds}

    def describe(self) -> str:
        """One line: how many seeds were kept, and each dropped one with its reason."""
        text = f"{len(self.kept)} seed(s) kept"
        if self.dropped:
            why = "; ".join(f"{_where(p)}: {p.meta.get('reason_kind')} ({p.error})" for p in self.dropped[:5])
            more = f"; {len(self.dropped) - 5} more" if len(self.dropped) > 5 else ""
            text += f", {len(self.dropped)} dropped: {why}{more}"
        return text


def _where(program: Program) -> str:
    prov = program.meta.get("provenance")
    return str(prov.get("path") or prov.get("source")) if isinstance(prov, dict) else program.id[:12]


def screen_seeds(programs: list[Program], vectors: list[np.ndarray], novelty: NoveltyArchive) -> ScreenedSeeds:
    """Parse each seed and check it against `novelty` (which the kept ones join, in order)."""
    out = ScreenedSeeds()
    for program, vector in zip(programs, vectors, strict=True):
        reason = kind = None
        try:
            parse_source(program.text)
        except SyntaxError as e:
            kind, reason = "parse_error", f"line {e.lineno}: {e.msg}"
        if kind is None:
            seen = novelty.assess(vector)
            if seen.duplicate:
                kind, reason = "near_duplicate", f"cosine {seen.similarity:.5f} to {seen.nearest}"
            else:
                program.meta["novelty"] = round(seen.novelty, 6)
        if kind is not None:
            program.status, program.error = Status.REJECTED, reason
            program.meta["reason_kind"] = kind
            out.dropped.append(program)
            continue
        novelty.add(program.id, vector)
        out.kept.append((program, vector))
    return out
