"""A direct (slow) reference of the released second-view computation, for tests and benchmarks.

The authors' source is not available to us; this is the documented computation written as the
released code did it: NumPy FFT, amplitude/phase split, a boolean ball built with a Python triple
loop around index (D//2, H//2, W//2) of the UN-shifted spectrum, radius ``cutoff * max(D, H, W)``
(float), amplitude zeroed inside, inverse FFT, real part, min-max normalisation.
Not part of the package.
"""

from __future__ import annotations

import numpy as np


def released_view_reference(
    volume: np.ndarray, cutoff: float = 0.1, centred: bool = False
) -> np.ndarray:
    """The released triple-loop second view of one 3D volume (float64).

    Args:
        volume: 3D array.
        cutoff: ball radius as a fraction of max(D, H, W).
        centred: apply the same loop to the ``fftshift``-ed spectrum instead (the ball then sits
            on DC: the intended high-pass view), shifting back before the inverse FFT.
    """
    img = np.asarray(volume, dtype=np.float64)
    fft = np.fft.fftn(img)
    if centred:
        fft = np.fft.fftshift(fft)
    amp, pha = np.abs(fft), np.angle(fft)
    d, h, w = img.shape
    r = cutoff * max(d, h, w)
    mask = np.zeros(img.shape, dtype=bool)
    for i in range(d):
        for j in range(h):
            for k in range(w):
                if (i - d // 2) ** 2 + (j - h // 2) ** 2 + (k - w // 2) ** 2 <= r**2:
                    mask[i, j, k] = True
    amp[mask] = 0
    spectrum = amp * np.exp(1j * pha)
    if centred:
        spectrum = np.fft.ifftshift(spectrum)
    out = np.fft.ifftn(spectrum).real
    low, high = out.min(), out.max()
    return (out - low) / (high - low) if high > low else np.zeros_like(out)
