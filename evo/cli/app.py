"""The `evo` command group and its consoles; each command lives in a module of this package."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console

# Piped output (logs, CI, tests) gets a wide page instead of rich's 80 columns, so that paths
# and tables are not folded or cut.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, soft_wrap=True)
out = Console(width=None if sys.stdout.isatty() else 160)


class _ConsoleLog(logging.Handler):
    """evo's warnings (a model server starting, unreachable, restarted) on the console, above the live table."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            console.print(f"{record.levelname.lower()}: {self.format(record)}", highlight=False, markup=False)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


def show_logs() -> None:
    logger = logging.getLogger("evo")
    if not any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        logger.addHandler(_ConsoleLog())
        logger.setLevel(logging.INFO)
        logger.propagate = False



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evo")
def cli() -> None:
    """evo: open-ended evolutionary search over programs.

    \b
    Start a search:     evo run math/circle_packing_26 --run-dir runs/cp26 --budget 600
    Continue it:        evo resume runs/cp26
    Look at it:         evo show runs/cp26
    List tasks:         evo tasks
    """
