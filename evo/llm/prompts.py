"""Prompts for the LLM operators.

The order is chosen for vLLM's prefix cache: what many requests share comes first (the rules
of the house and the task), what varies least next (inspirations: elites change slowly), and
the parent, its feedback and the instruction last.
"""

from __future__ import annotations

from collections.abc import Sequence

from evo.program import Program

SYSTEM = (
    "You improve programs for an automated search. Each program is scored by a trusted "
    "evaluator that also audits it: results that come from cheating (caching outputs, reading "
    "the evaluator's memory, special-casing inputs, tampering with timers) are rejected. "
    "Make real improvements only."
)

DIFF_INSTRUCTION = """Change the parent program to improve its score. Reply with one or more edit blocks, exactly:

<<<<<<< SEARCH
lines copied exactly from the parent
=======
the new lines
>>>>>>> REPLACE

Each SEARCH must match the parent exactly, including indentation. Keep the edits small and explain nothing."""

REWRITE_INSTRUCTION = """Write an improved version of the parent program. Reply with the complete program in one
```python fenced block; keep the required function names and signatures."""

CROSSOVER_INSTRUCTION = """Combine the best ideas of the two parent programs into one better program. Reply with the
complete program in one ```python fenced block; keep the required function names and signatures."""

INSTRUCTIONS = {"diff": DIFF_INSTRUCTION, "rewrite": REWRITE_INSTRUCTION, "crossover": CROSSOVER_INSTRUCTION}


def _describe(program: Program, label: str) -> str:
    scores = ", ".join(f"{k} = {v:.6g}" for k, v in sorted(program.metrics.items())) or "not scored"
    return f"## {label} (id {program.id[:12]}; {scores})\n```python\n{program.text}\n```"


def build_messages(
    mode: str,
    task_prompt: str,
    parents: Sequence[Program],
    inspirations: Sequence[Program] = (),
    feedback: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Chat messages for one operator call: shared prefix first, the parent and instruction last."""
    if mode not in INSTRUCTIONS:
        raise ValueError(f"unknown prompt mode {mode!r}; choose one of {', '.join(INSTRUCTIONS)}")
    parts = [f"# Task\n{task_prompt.strip()}"]
    if inspirations:
        parts.append("# Other good programs, for inspiration\n" + "\n\n".join(
            _describe(p, f"Inspiration {i + 1}") for i, p in enumerate(inspirations)))
    labels = ["Parent"] if len(parents) == 1 else [f"Parent {i + 1}" for i in range(len(parents))]
    parts.append("# " + ("The program to change" if len(parents) == 1 else "The programs to combine") + "\n"
                 + "\n\n".join(_describe(p, label) for p, label in zip(parents, labels, strict=True)))
    notes = [f.strip() for f in feedback if f and f.strip()]
    if notes:
        parts.append("# Feedback from the evaluator and the auditor\n" + "\n".join(f"- {n[:500]}" for n in notes[:8]))
    parts.append("# Instruction\n" + INSTRUCTIONS[mode])
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
