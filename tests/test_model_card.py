"""lofihippseg.recipe.card's helpers, and release/MODEL_CARD.md itself."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import nibabel as nib
import numpy as np


def test_mirrored_copy_swaps_left_and_right_in_world_space(tmp_path):
    model_card = importlib.import_module("lofihippseg.recipe.card")
    data = np.zeros((6, 5, 4), np.uint8)
    data[1, 2, 2] = 1  # one voxel near the left (low voxel i)
    affine = np.array([[0, 0, 2.0, -3], [-1.5, 0, 0, 4], [0, 1, 0, 5], [0, 0, 0, 1]])
    # voxel axis 2 runs along world x (the first row), so it is the one flipped
    source = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), source)
    out = model_card.mirrored_copy(source, tmp_path / "mirrored.nii.gz")
    mirrored = nib.load(out)
    assert np.allclose(mirrored.affine, affine) and mirrored.shape == data.shape
    before = affine[:3, :3] @ np.argwhere(data)[0] + affine[:3, 3]
    after = affine[:3, :3] @ np.argwhere(np.asanyarray(mirrored.dataobj))[0] + affine[:3, 3]
    centre_x = affine[0, 3] + affine[0, 2] * (data.shape[2] - 1) / 2
    assert np.isclose(after[0] - centre_x, -(before[0] - centre_x))  # x mirrored about the centre
    assert np.allclose(after[1:], before[1:])  # y and z unchanged


def test_synthetic_cases_draw_the_card_or_the_validation_anatomy(tmp_path, monkeypatch):
    """The card's scans come from the held-back maps 14-16, validation twins
    (``--anatomy train``) from the training maps 01-13 only."""
    model_card = importlib.import_module("lofihippseg.recipe.card")
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in (1, 2, 14, 15, 16):
        (maps / f"training_seg_{i:02d}.nii.gz").write_bytes(b"")
    used = []
    monkeypatch.setattr(
        model_card, "SyntheticGenerator", lambda m, config: used.append(sorted(p.name for p in m))
    )
    model_card.synthetic_cases(maps, 0, 7, tmp_path, "random")
    model_card.synthetic_cases(maps, 0, 91, tmp_path, "random", "train")
    names = [f"training_seg_{i:02d}.nii.gz" for i in (1, 2, 14, 15, 16)]
    assert used == [names[2:], names[:2]]


CARD = Path(__file__).resolve().parents[1] / "release" / "MODEL_CARD.md"


def test_the_card_is_one_short_document_with_its_sections_and_licences():
    """At most 200 lines (issue 40); long histories live in docs/model_history.md."""
    text = CARD.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    headings = {line[3:] for line in text.splitlines() if line.startswith("## ")}
    assert {
        "When not to trust it (read this first)",
        "Intended use",
        "Figures",
        "Real heads (held-back IXI)",
        "Per-side quality estimate",
        "How it was built: the recipe",  # docs/training.md and recipe.toml point here
        "Data and licences",
    } <= headings
    for licence in ("CC BY-SA 4.0", "Apache-2.0", "CC BY-SA 3.0", "SBIA"):
        assert licence in text, licence


def test_the_cards_relative_links_resolve():
    """Every ``](../path)`` link of the card names a file of the repository."""
    text = CARD.read_text(encoding="utf-8")
    targets = re.findall(r"\]\((\.\./[^)#]+)", text)
    assert "../docs/model_history.md" in targets
    missing = [t for t in targets if not (CARD.parent / t).exists()]
    assert missing == []
