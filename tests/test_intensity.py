"""Min-max normalisation: the definition, in float32, without changing its input."""

from __future__ import annotations

import numpy as np
import pytest

from lofihippseg.preprocessing.intensity import minmax_normalise


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
@pytest.mark.parametrize("clip", [None, (0.5, 99.5)])
def test_matches_the_definition_in_float32_and_leaves_the_input_alone(dtype, clip):
    rng = np.random.default_rng(0)
    data = (rng.gamma(2.0, 60.0, (30, 40, 20))).astype(dtype)
    data[::3] = 0  # background: percentiles are of the non-zero voxels
    before = data.copy()
    got = minmax_normalise(data, clip)
    ref = data.astype(np.float64)
    if clip is not None:
        low, high = np.percentile(ref[ref != 0], clip)
        ref = np.clip(ref, low, high)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert got.dtype == np.float32 and got.shape == data.shape
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0
    np.testing.assert_array_equal(data, before)


def test_a_constant_image_becomes_zeros():
    assert not minmax_normalise(np.full((4, 4, 4), 7.0), (0.5, 99.5)).any()
