"""``lofihippseg synth``: write a synthetic low-field dataset in the LISA layout."""

from __future__ import annotations

from pathlib import Path

import click

from lofihippseg.cli.options import device_option


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from lofihippseg.errors import LoFiError

        raise LoFiError("--device cuda: no CUDA GPU is available; use --device cpu")
    return name


@click.command(name="synth")
@click.option(
    "--label-maps",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of whole-head FreeSurfer label maps (.nii.gz; 17 = left, 53 = right "
    "hippocampus). Default: the few maps shipped with the package.",
)
@click.option("--n", "n", type=int, default=20, show_default=True, help="Number of cases.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("synthetic_lisa"),
    show_default=True,
    help="Output folder (imagesTr/, labelsTr/, train.list, val.list).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (reproducible).")
@click.option(
    "--preview/--no-preview",
    default=False,
    help="Also write OUT/preview.png: a few samples beside their source anatomy.",
)
@device_option("Where to generate: the GPU if available (auto), or cpu/cuda.")
@click.option(
    "--val-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Fraction of label maps held out for validation cases (val.list); validation cases "
    "come only from those maps.",
)
@click.option(
    "--size",
    type=(int, int, int),
    default=None,
    help="Output grid in voxels (1 mm); default 160 192 176 (whole brain). A smaller grid is "
    "centred on the hippocampi (e.g. --size 128 128 96).",
)
@click.option(
    "--stacks",
    is_flag=True,
    help="Write each case as a session of separate stacks (axial, coronal, sagittal; 1.5 x 1.5 "
    "mm in plane, 4-6 mm slices, random rigid motion up to 5 degrees and 5 mm between them): "
    "OUT/stacks/CASE_axi|cor|sag.nii.gz, labels in the first stack's frame "
    "(OUT/labels/CASE_hipp.nii.gz), the motion-free _ciso-like image (OUT/ciso/) and the true "
    "motions (OUT/sessions.json). For `predict --stacks`.",
)
def command(
    label_maps: Path | None,
    n: int,
    out: Path,
    seed: int,
    preview: bool,
    device: str,
    val_fraction: float,
    size: tuple[int, int, int] | None,
    stacks: bool,
) -> None:
    """Synthesise low-field-like T2 scans with left/right hippocampus labels from label maps."""
    import torch

    from lofihippseg.io.paths import ensure_writable_dir
    from lofihippseg.synth.assets import find_label_maps, packaged_label_maps
    from lofihippseg.synth.config import SynthConfig
    from lofihippseg.synth.dataset import write_preview, write_synthetic_dataset
    from lofihippseg.synth.generator import SyntheticGenerator

    maps = find_label_maps(label_maps) if label_maps else packaged_label_maps()
    ensure_writable_dir(out)
    config = SynthConfig()
    if size:
        # a grid smaller than the default cannot hold the whole brain: centre it on the hippocampi
        small = any(a < b for a, b in zip(size, config.output_shape, strict=True))
        try:
            config = SynthConfig(
                output_shape=tuple(size), centre_on="hippocampi" if small else "brain"
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--size") from None
    dev = _device(device)
    if stacks:
        from lofihippseg.synth.stacks import write_stack_sessions

        cases = write_stack_sessions(maps, n, out, seed, config, device=dev)
        click.echo(f"wrote {len(cases)} sessions of separate stacks to {out} (sessions.json)")
        return
    result = write_synthetic_dataset(maps, n, out, seed, config, val_fraction, dev)
    click.echo(
        f"wrote {len(result.train)} training and {len(result.val)} validation cases to {out}"
        + (f" (validation from held-out maps: {', '.join(result.held_out_maps)})"
           if result.held_out_maps else "")
    )  # fmt: skip
    if preview:
        gen = SyntheticGenerator(maps, config, dev)
        g = torch.Generator().manual_seed(seed)
        samples = [gen.sample(g) for _ in range(min(4, max(n, 1)))]
        path = write_preview(samples, None, out / "preview.png")
        click.echo(f"preview: {path}")
