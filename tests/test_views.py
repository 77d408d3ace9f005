"""The frequency-masked second view and ``lofihippseg view``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from released_reference import released_view_reference

from lofihippseg.cli import main
from lofihippseg.preprocessing.prepare import crop_and_normalise
from lofihippseg.views.frequency import FREQUENCY_MODES, frequency_filter, frequency_view

SHAPES = [(7, 9, 11), (8, 10, 12), (9, 8, 6)]


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def _dc_ball(shape: tuple[int, int, int], cutoff: float) -> np.ndarray:
    """Ball around DC in wrapped frequency index units (independent of the package)."""
    freqs = np.meshgrid(*[np.rint(np.fft.fftfreq(n) * n) for n in shape], indexing="ij")
    return sum(f**2 for f in freqs) <= (cutoff * max(shape)) ** 2


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cutoff", [0.1, 0.3])
def test_legacy_matches_released_loop(shape, cutoff):
    vol = _volume(shape)
    expected = released_view_reference(vol, cutoff)
    np.testing.assert_allclose(
        frequency_view(vol.astype(np.float32), "legacy", cutoff), expected, atol=1e-5
    )
    np.testing.assert_allclose(frequency_view(vol, "legacy", cutoff), expected, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_highpass_matches_centred_loop(shape):
    vol = _volume(shape, 1)
    expected = released_view_reference(vol, 0.2, centred=True)
    np.testing.assert_allclose(frequency_view(vol, "highpass", 0.2), expected, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_highpass_removes_and_lowpass_keeps_low_frequencies(shape):
    vol = _volume(shape, 2) + 5.0  # a large DC term
    cutoff = 0.25
    ball = _dc_ball(shape, cutoff)
    assert 1 < ball.sum() < ball.size / 2
    spectrum = np.abs(np.fft.fftn(vol))
    high = np.abs(np.fft.fftn(frequency_filter(vol, "highpass", cutoff)))
    low = np.abs(np.fft.fftn(frequency_filter(vol, "lowpass", cutoff)))
    scale = spectrum.max()
    assert high[ball].max() < 1e-9 * scale  # DC and low frequencies gone
    np.testing.assert_allclose(high[~ball], spectrum[~ball], atol=1e-9 * scale)
    assert low[~ball].max() < 1e-9 * scale  # only the ball survives
    np.testing.assert_allclose(low[ball], spectrum[ball], atol=1e-9 * scale)
    # Complementary masks: the two filtered volumes add up to the input.
    summed = frequency_filter(vol, "highpass", cutoff) + frequency_filter(vol, "lowpass", cutoff)
    np.testing.assert_allclose(summed, vol, atol=1e-10)


def test_legacy_keeps_nearly_everything_of_a_smooth_image():
    """The released ball sits on the Nyquist corner: the view stays almost the image."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 28, 20)], indexing="ij")
    smooth = np.exp(-sum(g**2 for g in grid) * 2) + 0.02 * _volume((24, 28, 20))
    legacy = frequency_view(smooth, "legacy", 0.1)
    high = frequency_view(smooth, "highpass", 0.1)
    assert np.corrcoef(legacy.ravel(), smooth.ravel())[0, 1] > 0.999
    assert np.corrcoef(high.ravel(), smooth.ravel())[0, 1] < 0.9


@pytest.mark.parametrize("mode", FREQUENCY_MODES)
def test_batch_equals_per_volume_and_range(mode):
    batch = torch.rand(3, 1, 9, 10, 8, generator=torch.Generator().manual_seed(0))
    out = frequency_view(batch, mode, 0.15)
    assert isinstance(out, torch.Tensor) and out.shape == batch.shape and out.dtype == torch.float32
    for i in range(3):
        torch.testing.assert_close(out[i, 0], frequency_view(batch[i, 0], mode, 0.15))
        assert float(out[i].amin()) == 0.0 and float(out[i].amax()) == pytest.approx(1.0)


def test_numpy_in_numpy_out_and_dtypes():
    vol = _volume((6, 7, 8))
    out64 = frequency_view(vol)
    assert isinstance(out64, np.ndarray) and out64.dtype == np.float64 and out64.shape == vol.shape
    out32 = frequency_view(vol.astype(np.float16))
    assert isinstance(out32, np.ndarray) and out32.dtype == np.float32
    ints = frequency_view((vol * 100).astype(np.int16))
    assert ints.dtype == np.float32 and 0.0 <= ints.min() and ints.max() <= 1.0


def test_constant_volume_gives_zeros_and_bad_arguments_raise():
    assert not frequency_view(np.ones((4, 5, 6)), "highpass").any()
    with pytest.raises(ValueError, match="mode"):
        frequency_view(np.ones((4, 4, 4)), "bandpass")
    with pytest.raises(ValueError, match="cutoff"):
        frequency_view(np.ones((4, 4, 4)), "highpass", -0.1)
    with pytest.raises(ValueError, match="dimensions"):
        frequency_view(np.ones((4, 4)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", FREQUENCY_MODES)
def test_gpu_matches_cpu(mode):
    batch = torch.rand(2, 1, 17, 20, 15, generator=torch.Generator().manual_seed(0))
    out = frequency_view(batch.cuda(), mode)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), frequency_view(batch, mode), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- CLI
def _scan(nifti_writer):
    data = np.zeros((14, 12, 10), dtype=np.float32)
    data[3:11, 2:10, 2:8] = np.random.default_rng(0).random((8, 8, 6)) * 300 + 50
    affine = np.diag([-1.5, 1.0, 2.0, 1.0])  # LAS on disk: canonical order flips axis 0
    affine[:3, 3] = [20, -10, 5]
    return nifti_writer("scan.nii.gz", data, affine), data, affine


@pytest.mark.parametrize("mode", ["highpass", "legacy"])
def test_cli_view_writes_on_input_grid(nifti_writer, tmp_path, mode):
    path, data, affine = _scan(nifti_writer)
    out = tmp_path / "out" / "view.nii.gz"
    main(["view", str(path), "-o", str(out), "--mode", mode, "--cutoff", "0.2"])
    img = nib.load(str(out))
    assert img.shape == data.shape and np.allclose(img.affine, affine)
    assert img.get_data_dtype() == np.float32
    written = np.asarray(img.dataobj)
    # Independent expectation in canonical (RAS) order = data flipped along axis 0.
    canonical = data[::-1]
    crop, box = crop_and_normalise(canonical)
    expected = np.zeros_like(canonical)
    expected[box] = frequency_view(crop, mode, 0.2)
    np.testing.assert_allclose(written, expected[::-1], atol=1e-6)


def test_cli_view_refuses_to_overwrite_input(nifti_writer, capsys):
    path, _, _ = _scan(nifti_writer)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["view", str(path), "-o", str(path)])
    assert exc.value.code == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_cli_view_help_and_bad_input(tmp_path, capsys):
    main(["view", "--help"])
    text = capsys.readouterr().out
    for option in ("--output", "--mode", "--cutoff", "highpass", "legacy"):
        assert option in text
    with pytest.raises(SystemExit) as exc:
        main(["view", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "v.nii.gz")])
    assert exc.value.code == 2
    assert "missing.nii.gz" in capsys.readouterr().err
