"""Options shared by several subcommands."""

from __future__ import annotations

import click

DEVICES = ["auto", "cpu", "cuda"]


def device_option(help_text: str = "Where to compute; auto = CUDA when available."):
    """``--device auto|cpu|cuda`` (default auto), with a command-specific help text."""
    return click.option(
        "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help=help_text
    )
