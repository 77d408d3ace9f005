"""The ``lofihippseg`` command line: a thin layer over the Python API.

Each subcommand lives in its own module here and is registered in ``COMMANDS``. Errors caused by
the user's input (:class:`~lofihippseg.errors.LoFiError`) print as one line and exit with code 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from lofihippseg import __version__
from lofihippseg.errors import LoFiError

# subcommand name -> module defining a click command called ``command``
COMMANDS = {
    "evaluate": "lofihippseg.cli.evaluate",
    "view": "lofihippseg.cli.view",
    "train": "lofihippseg.cli.train",
    "predict": "lofihippseg.cli.predict",
    "synth": "lofihippseg.cli.synth",
    "demo": "lofihippseg.cli.demo",
    "example": "lofihippseg.cli.example",
    "bids": "lofihippseg.cli.bids",
    "report": "lofihippseg.cli.report",
    "model-info": "lofihippseg.cli.model_info",
}


class LazyGroup(click.Group):
    """Imports a subcommand's module (and torch) only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, module in COMMANDS.items() if importlib.util.find_spec(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or importlib.util.find_spec(COMMANDS[name]) is None:
            return None
        return importlib.import_module(COMMANDS[name]).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lofihippseg")
@click.option("-v", "--verbose", is_flag=True, help="Show debug messages.")
def cli(verbose: bool) -> None:
    """Segment the left and right hippocampus in low-field brain MRI."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def _usage_line(exc: click.UsageError) -> str:
    """A click usage error as one line: the problem, then where to find help."""
    command = exc.ctx.command_path if exc.ctx is not None else "lofihippseg"
    return f"error: {exc.format_message()} (see `{command} --help`)"


def _os_error_line(exc: OSError) -> str:
    """An OS error (unwritable output, full disk ...) as ``error: PATH: reason``."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"error: {where}: {reason}" if where else f"error: {reason}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one-line messages (exit code 2).

    Errors of the user's input or settings (:class:`LoFiError`), usage errors and OS errors
    (an output that cannot be written, a full disk) print one line ``error: ...``.
    """
    try:
        cli.main(args=argv, prog_name="lofihippseg", standalone_mode=False)
    except LoFiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        click.echo(_usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        click.echo(_os_error_line(exc), err=True)
        sys.exit(2)
