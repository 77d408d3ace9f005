"""Options shared by several subcommands."""

from __future__ import annotations

import click

DEVICES = ["auto", "cpu", "cuda"]


def device_option(help_text: str = "Where to compute; auto = CUDA when available."):
    """``--device auto|cpu|cuda`` (default auto), with a command-specific help text."""
    return click.option(
        "--device", type=click.Choice(DEVICES), default="auto", show_default=True, help=help_text
    )


def family_option():
    """``--family auto|agreement|NAME``: which pair of networks runs (models with several)."""
    return click.option(
        "--family",
        default="auto",
        show_default=True,
        help="Which pair of networks runs when the model has several (the shipped model: t2 "
        "and t1). auto = the model's advice (the shipped model: t2 for heads, t1 for crops "
        "narrower than 80 mm from left to right, such as the MSD crops); agreement = run each "
        "pair and keep the one whose two views agree best (v12's rule, ~2x slower); or a name.",
    )


def edge_weight_option():
    """``--edge-weight W``: how much the scan's intensities move each outline
    (``inference.edge_refine``); None = the recipe's default."""
    return click.option(
        "--edge-weight",
        type=click.FloatRange(0, 10),
        default=None,
        help="How much the scan's own intensities move each outline near its edge (0 = the "
        "networks' outline as it is). Default: the recipe's (paper: 1, or 0 when the outline "
        "refiner runs, as with the shipped model; released: 0).",
    )


def refiner_option():
    """``--refiner/--no-refiner``: run the model's outline refiner (``inference.refiner``);
    None = the recipe's default (on when the model has one, never for the released recipe)."""
    return click.option(
        "--refiner/--no-refiner",
        default=None,
        help="Re-read the scan around each found hippocampus with the model's outline refiner. "
        "Default: on when the model has one (the shipped model does), off for the released "
        "recipe.",
    )
