"""Synthetic low-field generator: reproducibility, labels, anatomy, contrast, acquisition, CLI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import shared_path, write_nifti

from lofihippseg.errors import InputError
from lofihippseg.synth.acquisition import Stack, acquire
from lofihippseg.synth.assets import packaged_label_maps
from lofihippseg.synth.config import SynthConfig
from lofihippseg.synth.generator import SyntheticGenerator, generate_case

FAST = SynthConfig.fast()
CSF = (4, 43, 24)
WM = (2, 41)
GM = (3, 42)


@pytest.fixture(scope="module")
def packaged() -> list[Path]:
    return packaged_label_maps()


@pytest.fixture(scope="module")
def gen(packaged) -> SyntheticGenerator:
    return SyntheticGenerator(packaged, FAST)


def _draw(gen: SyntheticGenerator, seed: int):
    return gen.sample(torch.Generator().manual_seed(seed))


def _hf_fraction(image: np.ndarray, axis: int, cutoff: float = 0.2) -> float:
    """Share of the (non-DC) spectral energy along ``axis`` above ``cutoff`` cycles/voxel."""
    spec = np.abs(np.fft.rfft(image - image.mean(axis=axis, keepdims=True), axis=axis)) ** 2
    freqs = np.fft.rfftfreq(image.shape[axis])
    energy = np.moveaxis(spec, axis, -1).reshape(-1, freqs.size).sum(axis=0)
    return float(energy[freqs > cutoff].sum() / energy[1:].sum())


def test_packaged_maps_load_with_licence(packaged):
    assert len(packaged) == 3
    folder = packaged[0].parent
    assert "Apache License" in (folder / "LICENSE.txt").read_text()
    assert "SynthSeg" in (folder / "NOTICE.md").read_text()
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 5e6
    gen = SyntheticGenerator(packaged, FAST)
    for i in range(len(packaged)):
        lmap = gen.label_map(i)
        assert {0, 17, 53} <= set(lmap.labels)
        assert all(1.0 < v < 6.0 for v in lmap.hippocampus_ml)
    assert nib.load(str(packaged[0])).get_data_dtype() == np.uint16


def test_same_seed_same_image_other_seed_other(packaged, gen):
    a = _draw(gen, 7)
    b = _draw(SyntheticGenerator(packaged, FAST), 7)  # fresh generator, same seed
    c = _draw(gen, 8)
    assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label)
    assert a.image.shape != c.image.shape or not torch.allclose(a.image, c.image)
    assert a.image.dtype == torch.float32 and a.label.dtype == torch.uint8
    assert a.image.shape == FAST.output_shape
    assert float(a.image.min()) == 0.0 and float(a.image.max()) == 1.0


@pytest.mark.parametrize("p_flip", [0.0, 1.0])
def test_labels_exact_and_left_is_left(packaged, p_flip):
    gen = SyntheticGenerator(packaged, SynthConfig.fast(p_flip=p_flip, p_three_stacks=0.0))
    for seed in range(3):
        s = _draw(gen, seed)
        assert s.params["flip"] is bool(p_flip)
        assert set(torch.unique(s.label).tolist()) == {0, 1, 2}
        lab = s.label.numpy()
        world_x = [
            (s.affine[:3, :3] @ np.argwhere(lab == v).mean(axis=0) + s.affine[:3, 3])[0]
            for v in (1, 2)
        ]
        assert world_x[0] < world_x[1] - 20  # left hippocampus on the subject's left
        assert s.affine[0, 0] > 0  # RAS: world x increases with axis 0
        # anatomy follows the mirroring: FreeSurfer 17 (left) lies under output label 1
        anatomy = s.anatomy.numpy()
        assert (anatomy[lab == 1] == 17).all() and (anatomy[lab == 2] == 53).all()


def test_hippocampal_volumes_in_range_on_all_shared_maps():
    folder = shared_path("data", "synthseg_label_maps")
    maps = sorted(folder.glob("*.nii.gz"))[::4]  # 4 of the 16 maps + the asymmetric 07
    maps.append(folder / "training_seg_07.nii.gz")
    cfg = (
        SynthConfig.fast(scaling=0.25, acquisition_off=True)
        if False
        else SynthConfig.fast(scaling=0.25, p_three_stacks=0.0)
    )
    gen = SyntheticGenerator(maps, cfg)
    g = torch.Generator().manual_seed(3)
    for _ in range(len(maps)):
        s = gen.sample(g)
        for value in (1, 2):
            ml = float((s.label == value).sum()) / 1000.0
            assert 1.0 <= ml <= 7.0, (s.source, value, ml)
            # the whole hippocampus lies inside the field of view (not cut at an edge)
            idx = np.argwhere(s.label.numpy() == value)
            assert idx.min() > 0 and (idx.max(axis=0) < np.array(s.label.shape) - 1).all()


def test_csf_brighter_than_white_matter_before_noise(packaged):
    adult = SynthConfig.fast(wm_gm_ratio=(0.7, 0.9)).without_artefacts()
    s = _draw(SyntheticGenerator(packaged, adult), 5)
    img, anat = s.image.numpy(), s.anatomy.numpy()
    csf, wm, gm = (img[np.isin(anat, labels)].mean() for labels in (CSF, WM, GM))
    assert csf > wm + 0.1 and gm > wm


def test_infant_contrast_puts_white_matter_above_grey():
    # near-1 mm acquisition so the thin cortex is not mixed with CSF by partial volume
    sharp = {"inplane_mm": (1.0, 1.0), "slice_mm": (1.0, 1.0), "pv_sigma": (0.0, 0.0)}
    for ratio, wm_above_gm in (((0.7, 0.8), False), ((1.2, 1.3), True)):
        cfg = SynthConfig.fast(wm_gm_ratio=ratio, p_three_stacks=0.0, **sharp).without_artefacts()
        s = _draw(SyntheticGenerator(packaged_label_maps()[:1], cfg), 4)
        img, anat = s.image.numpy(), s.anatomy.numpy()
        wm, gm = (img[np.isin(anat, labels)].mean() for labels in (WM, GM))
        assert bool(wm > gm) == wm_above_gm, (ratio, wm, gm)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_acquisition_blurs_the_slice_axis(axis):
    image = torch.rand((40, 40, 40), generator=torch.Generator().manual_seed(axis))
    stack = Stack(axis, 1.5, 5.0, 4.5, (0.0, 0.0, 0.0), 0.0)
    out = acquire(image, [stack], 0.3, None).numpy()
    hf = [_hf_fraction(out, a) for a in range(3)]
    others = [hf[a] for a in range(3) if a != axis]
    assert hf[axis] < 0.1 * min(others), hf


def test_generated_image_has_worse_resolution_along_slice_axis(packaged):
    cfg = SynthConfig.fast(p_three_stacks=0.0, slice_mm=(5.0, 6.0)).without_artefacts()
    gen = SyntheticGenerator(packaged, cfg)
    for seed in (0, 1):
        s = _draw(gen, seed)
        axis = s.params["slice_axes"][0]
        hf = [_hf_fraction(s.image.numpy(), a, cutoff=0.15) for a in range(3)]
        assert hf[axis] < 0.5 * min(hf[a] for a in range(3) if a != axis), (axis, hf)


def test_noise_level_matches_requested_std():
    image = torch.ones((32, 32, 32))
    stack = Stack(2, 1.5, 5.0, 5.0, (0.0, 0.0, 0.0), 0.05)
    out = acquire(image, [stack], 0.0, torch.Generator().manual_seed(0)).numpy()
    assert abs(out.std() - 0.05) < 0.01
    assert abs(out.mean() - 1.0) < 0.02


def test_label_map_without_hippocampus_is_rejected(tmp_path):
    data = np.zeros((20, 20, 20), dtype=np.int16)
    data[5:15, 5:15, 5:15] = 2
    path = write_nifti(tmp_path / "seg.nii.gz", data)
    with pytest.raises(InputError, match="hippocampus"):
        generate_case(path, seed=0, config=FAST)


def test_default_config_full_size_case(packaged):
    s = generate_case(packaged[1], seed=2)
    assert tuple(s.image.shape) == SynthConfig().output_shape
    assert s.params["slice_axes"] == [0, 1, 2]  # three orthogonal stacks, like _ciso
    assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0


def test_synth_cli_writes_lisa_layout(tmp_path, capsys):
    from lofihippseg.cli import main

    out = tmp_path / "synth"
    main(["synth", "--n", "3", "--out", str(out), "--seed", "1", "--size", "64", "72", "64",
          "--device", "cpu", "--val-fraction", "0.34", "--preview"])  # fmt: skip
    train = (out / "train.list").read_text().split()
    val = (out / "val.list").read_text().split()
    assert sorted(train + val) == ["LISA_0001", "LISA_0002", "LISA_0003"] and val
    assert (out / "preview.png").stat().st_size > 1000
    try:
        from lofihippseg.io.datasets import discover_cases
    except ImportError:  # pragma: no cover - the datasets module is written in parallel
        discover_cases = None
    if discover_cases is not None:
        cases = discover_cases(out)
        assert [c.case_id for c in cases] == ["LISA_0001", "LISA_0002", "LISA_0003"]
        assert all(c.label is not None and c.label.exists() for c in cases)
    img = nib.load(str(out / "imagesTr" / "LISA_0001_ciso.nii.gz"))
    lab = nib.load(str(out / "labelsTr" / "LISA_0001_hipp.nii.gz"))
    assert img.shape == (64, 72, 64) and np.allclose(img.affine, lab.affine)
    data = img.get_fdata()
    assert data.min() >= 0.0 and abs(data.max() - 1.0) < 1e-4 and data.std() > 0.05
    assert set(np.unique(np.asarray(lab.dataobj)).tolist()) <= {0, 1, 2}
    # validation cases come from held-out label maps only
    rows = [r.split(",") for r in (out / "sources.csv").read_text().split()[1:]]
    train_maps = {m for _, m, part in rows if part == "train"}
    val_maps = {m for _, m, part in rows if part == "val"}
    assert not train_maps & val_maps


def test_synth_cli_bad_folder_exits_2(tmp_path, capsys):
    from lofihippseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["synth", "--label-maps", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_every_shared_map_default_config():
    maps = sorted(shared_path("data", "synthseg_label_maps").glob("*.nii.gz"))
    g = torch.Generator().manual_seed(11)
    for path in maps:
        s = SyntheticGenerator([path]).sample(g)
        lab = s.label.numpy()
        assert set(np.unique(lab).tolist()) == {0, 1, 2}, path
        xs = [np.argwhere(lab == v)[:, 0].mean() for v in (1, 2)]
        assert xs[0] < xs[1], path
        for v in (1, 2):
            idx = np.argwhere(lab == v)
            assert 1.0 <= len(idx) / 1000 <= 7.0, (path, v)
            assert idx.min() > 0 and (idx.max(axis=0) < np.array(lab.shape) - 1).all(), path
