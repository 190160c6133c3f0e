"""Prompts for the LLM operators.

The order is chosen for vLLM's prefix cache: what many requests share comes first (the rules
of the house and the task, then the run's lessons, which change every few hundred evaluations),
what varies least next (inspirations: elites change slowly), and the parent, its feedback and
the instruction last.
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


LESSONS_TOKENS = 600  # the lessons' share of a prompt; beyond it a lesson is cut at a line
CHARS_PER_TOKEN = 4  # a tokenizer-free estimate, close for English and code alike


def lessons_section(lessons: Sequence[str], budget_tokens: int = LESSONS_TOKENS) -> str:
    """The prompt's lessons, newest first, within `budget_tokens` (estimated): a lesson that does
    not fit whole is cut after its last line that fits; those after it are left out. "" if none."""
    room = budget_tokens * CHARS_PER_TOKEN
    kept: list[str] = []
    for lesson in lessons:
        text = lesson.strip()
        if not text or room <= 0:
            continue
        if len(text) > room:
            cut = text[:room]
            text = cut[: cut.rfind("\n")].rstrip() if "\n" in cut else ""
            if not text:
                break
            text += "\n(cut to fit the prompt)"
        kept.append(text)
        room -= len(text)
    if not kept:
        return ""
    return "# Lessons of this search so far (what helped, what failed, what is unexplored)\n" + "\n\n".join(kept)


def _describe(program: Program, label: str) -> str:
    scores = ", ".join(f"{k} = {v:.6g}" for k, v in sorted(program.metrics.items())) or "not scored"
    return f"## {label} (id {program.id[:12]}; {scores})\n```python\n{program.text}\n```"


def foreign_section(foreign: Sequence[Program]) -> str:
    """Elites of related tasks (a suite run), each labelled with its task: ideas to adapt, not code to paste."""
    if not foreign:
        return ""
    return ("# Good programs of related tasks (other tasks of this suite, not this one: their inputs, outputs and "
            "rules differ; adapt an idea, never copy one as it is)\n" + "\n\n".join(
                _describe(p, f"From another task, {p.meta.get('task', '?')}") for p in foreign))


def build_messages(
    mode: str,
    task_prompt: str,
    parents: Sequence[Program],
    inspirations: Sequence[Program] = (),
    feedback: Sequence[str] = (),
    lessons: Sequence[str] = (),
    foreign: Sequence[Program] = (),
) -> list[dict[str, str]]:
    """Chat messages for one operator call: shared prefix first, the parent and instruction last.
    `lessons` (newest first) are kept within `LESSONS_TOKENS`; `foreign`: elites of related tasks, labelled."""
    if mode not in INSTRUCTIONS:
        raise ValueError(f"unknown prompt mode {mode!r}; choose one of {', '.join(INSTRUCTIONS)}")
    parts = [f"# Task\n{task_prompt.strip()}"]
    if section := lessons_section(lessons):
        parts.append(section)
    if inspirations:
        parts.append("# Other good programs, for inspiration\n" + "\n\n".join(
            _describe(p, f"Inspiration {i + 1}") for i, p in enumerate(inspirations)))
    if section := foreign_section(foreign):
        parts.append(section)
    labels = ["Parent"] if len(parents) == 1 else [f"Parent {i + 1}" for i in range(len(parents))]
    parts.append("# " + ("The program to change" if len(parents) == 1 else "The programs to combine") + "\n"
                 + "\n\n".join(_describe(p, label) for p, label in zip(parents, labels, strict=True)))
    notes = [f.strip() for f in feedback if f and f.strip()]
    if notes:
        parts.append("# Feedback from the evaluator and the auditor\n" + "\n".join(f"- {n[:500]}" for n in notes[:8]))
    parts.append("# Instruction\n" + INSTRUCTIONS[mode])
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
