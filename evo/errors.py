"""Exception types a user can cause; the CLI prints their message without a traceback."""

from __future__ import annotations


class EvoError(Exception):
    """A failure the user can mend: the message says what was wrong and how to fix it."""


class OperatorError(Exception):
    """An operator could not make a child (no literals, parse error, ...); recorded as a failed proposal.

    `meta` carries what the attempt cost or learned (e.g. an LLM call's token counts), stored with it.
    """

    def __init__(self, message: str, meta: dict[str, object] | None = None):
        super().__init__(message)
        self.meta = meta or {}
