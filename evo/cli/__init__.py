"""The `evo` command. Errors a user can cause print one line and exit 2, never a traceback."""

from __future__ import annotations

import sys

import click

from evo.cli import cluster, data, evaluate, llm, report, results, run, seed, tasks, ui  # noqa: F401  - each registers its commands
from evo.cli.app import cli, console
from evo.errors import EvoError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `evo` command."""
    try:
        code = cli.main(args=argv, standalone_mode=False)
    except EvoError as e:
        console.print(f"error: {e}", highlight=False, markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.UsageError as e:  # a bad flag or value: one line, as every other mistake, and where help is
        where = e.ctx.command_path if e.ctx is not None else "evo"
        console.print(f"error: {e.format_message()} (`{where} --help` says more)", highlight=False, markup=False,
                      soft_wrap=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted: `evo resume RUN_DIR` continues the run")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
