"""Exception types a user can cause; the CLI prints their message without a traceback."""


class EvoError(Exception):
    """A failure the user can mend: the message says what was wrong and how to fix it."""


class OperatorError(Exception):
    """An operator could not make a child (no literals, parse error, ...); recorded as a failed proposal."""
