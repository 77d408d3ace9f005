"""The QC picture: orientation letters on every panel, a robust (percentile) grey window."""

from __future__ import annotations

import numpy as np
from cohort_helpers import head
from matplotlib.image import imread

from lofihippseg.reporting import qc
from lofihippseg.reporting.qc import orientation_letters, save_qc_png


def test_orientation_letters_per_plane():
    letters = {name: orientation_letters(*axes) for name, _, axes in qc.PLANES}
    assert letters == {
        "axial": {"left": "L", "right": "R", "bottom": "P", "top": "A"},
        "coronal": {"left": "L", "right": "R", "bottom": "I", "top": "S"},
        "sagittal": {"left": "P", "right": "A", "bottom": "I", "top": "S"},
    }


def test_every_panel_carries_its_letters(tmp_path, monkeypatch):
    import matplotlib.figure

    figures = []
    real = matplotlib.figure.Figure  # imported by save_qc_png when it runs

    def recording_figure(*args, **kwargs):
        fig = real(*args, **kwargs)
        figures.append(fig)
        return fig

    monkeypatch.setattr(matplotlib.figure, "Figure", recording_figure)
    labels = np.zeros((24, 24, 20), np.uint8)
    labels[5:9, 10:14, 8:12], labels[15:19, 10:14, 8:12] = 1, 2
    path = save_qc_png(head(), labels, (1.0, 1.0, 1.0), tmp_path / "qc.png", "case  left 1 mL")
    assert imread(path).shape[:2] == qc.QC_SIZE_PX
    panels = figures[0].axes
    assert len(panels) == 6
    expected = [{"L", "R", "P", "A"}, {"L", "R", "I", "S"}, {"P", "A", "I", "S"}] * 2
    for ax, letters in zip(panels, expected, strict=True):
        assert {t.get_text() for t in ax.texts} == letters
    assert figures[0]._suptitle.get_text() == "case  left 1 mL"  # volumes stay in the title


def test_window_ignores_a_few_extreme_voxels():
    image = head()
    low, high = qc._display_range(image)
    spiked = image.copy()
    spiked[0, 0, :3] = 1e6  # a few hot voxels (e.g. an artefact)
    assert np.allclose(qc._display_range(spiked), (low, high), rtol=0.01)
    assert np.ptp(image) / (high - low) > 1.0  # the window is inside the full range
    assert high < 300 and qc.WINDOW_PERCENTILES == (1.0, 99.5)
