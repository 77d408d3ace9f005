"""Label maps shipped with the package, so ``lofihippseg synth`` works with no arguments.

Three of the 16 SynthSeg training label maps (Apache-2.0, see ``data/label_maps/NOTICE.md``),
cropped to the head and stored as uint16 NIfTI with their original FreeSurfer labels.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from lofihippseg.errors import InputError
from lofihippseg.io.nifti import is_image_file

PACKAGE_DIR = "data/label_maps"


def packaged_label_maps() -> list[Path]:
    """Paths of the label maps shipped inside the package (sorted by name).

    Example:
        >>> len(packaged_label_maps()) >= 1
        True
    """
    root = resources.files("lofihippseg").joinpath(PACKAGE_DIR)
    paths = [Path(str(p)) for p in root.iterdir() if is_image_file(p.name)]
    if not paths:
        raise InputError(str(root), "no packaged label maps found; reinstall lofihippseg")
    return sorted(paths)


def find_label_maps(folder: str | Path) -> list[Path]:
    """All NIfTI/MGZ label maps directly in ``folder`` (sorted).

    Raises:
        InputError: the folder is missing or holds no label maps.

    Example:
        >>> find_label_maps("../shared/data/synthseg_label_maps")  # doctest: +SKIP
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder; give a folder of FreeSurfer label maps (.nii.gz)")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p.name))
    if not paths:
        raise InputError(folder, "holds no .nii/.nii.gz/.mgz label maps")
    return paths


def pack_label_map(src: str | Path, dst: str | Path, margin: int = 2) -> Path:
    """Write a compact copy of a label map: cropped to its non-zero box, uint16, gzip level 9.

    The affine is shifted to the crop, so world coordinates and labels are unchanged.

    Example:
        >>> pack_label_map("training_seg_01.nii.gz", "seg_01.nii.gz")  # doctest: +SKIP
    """
    img = nib.load(str(src))
    data = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
    if data.min() < 0 or data.max() > np.iinfo(np.uint16).max:
        raise InputError(src, "labels outside the uint16 range")
    nz = np.nonzero(data)
    box = tuple(
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + 1 + margin, n))
        for i, n in zip(nz, data.shape, strict=True)
    )
    cropped = img.slicer[box]
    out = nib.Nifti1Image(data[box].astype(np.uint16), cropped.affine)
    out.set_qform(cropped.affine, code=1)
    out.set_sform(cropped.affine, code=1)
    old = nib.openers.Opener.default_compresslevel
    nib.openers.Opener.default_compresslevel = 9
    try:
        nib.save(out, str(dst))
    finally:
        nib.openers.Opener.default_compresslevel = old
    return Path(dst)
