"""``lofihippseg view``: write the frequency-masked second view of a scan, on the scan's grid."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from lofihippseg.errors import InputError
from lofihippseg.io.nifti import Volume, is_image_file, load_image, save_like
from lofihippseg.io.paths import ensure_writable_dir
from lofihippseg.models.registry import ModelSpec
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.views.frequency import FREQUENCY_MODES, frequency_view


def second_view_volume(
    volume: Volume,
    mode: str = "highpass",
    cutoff: float = 0.1,
    spec: ModelSpec | None = None,
) -> np.ndarray:
    """The second view of a loaded scan, pasted into a zero volume of the scan's canonical shape.

    Crops and normalises exactly as training and inference do (``crop_and_normalise`` with the
    spec's margin and percentile clip), computes the view on the crop and pastes it back.

    Example:
        >>> view = second_view_volume(load_image("scan.nii.gz"), "legacy")  # doctest: +SKIP
    """
    spec = spec or ModelSpec()
    crop, box = crop_and_normalise(volume.data, spec.crop_margin, spec.clip_percentiles)
    full = np.zeros(volume.data.shape, dtype=np.float32)
    full[box] = frequency_view(crop, mode=mode, cutoff=cutoff)
    return full


@click.command(name="view")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file (.nii.gz, .nii or .mgz), written as float32 on the input's grid.",
)
@click.option(
    "--mode",
    type=click.Choice(FREQUENCY_MODES),
    default="highpass",
    show_default=True,
    help="highpass: remove the ball around the DC term (the paper's view); lowpass: keep only "
    "that ball; legacy: the released code's ball around the un-shifted spectrum's centre.",
)
@click.option(
    "--cutoff",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Radius of the frequency ball as a fraction of the crop's largest size.",
)
def command(image: Path, output: Path, mode: str, cutoff: float) -> None:
    """Write the frequency-masked second view of IMAGE, so you can look at it.

    The image is cropped to its non-zero bounding box and min-max normalised as in training; the
    view of the crop is pasted into a zero volume of the input's size.
    """
    if not is_image_file(output):
        raise InputError(output, "output must end in .nii.gz, .nii or .mgz")
    if output.resolve() == image.resolve():
        raise InputError(output, "refusing to overwrite the input image; choose another -o")
    volume = load_image(image)
    ensure_writable_dir(output.parent)
    view = second_view_volume(volume, mode=mode, cutoff=cutoff)
    save_like(view, volume, output, dtype=np.float32)
    click.echo(f"wrote {output} ({mode}, cutoff {cutoff})")
