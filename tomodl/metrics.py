# SPDX-License-Identifier: BSD-3-Clause
"""Image-quality metrics with an explicit data range, and the paper's 8-bit protocol.

CT attenuation values are not in [0, 1], so no metric here guesses a range from the dtype:
``data_range`` is always passed.  The paper (its equation 1) maps images to 8 bits and uses a
data range of 255; :func:`to_uint8` does that mapping with a range taken from the reference.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def _pair(image, reference, mask: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image shape {a.shape} differs from reference shape {b.shape}")
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, bool), a.shape)
        return a[m], b[m]
    return a, b


def psnr(image, reference, *, data_range: float, mask: Optional[np.ndarray] = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range**2 / MSE)``.

    Parameters
    ----------
    image, reference : array_like, same shape
        Test and reference images (any real dtype).
    data_range : float
        Peak-to-peak range of the reference signal (255 for 8-bit images).
    mask : array_like of bool, optional
        Restrict the comparison to these pixels (e.g. the sample region).
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = _pair(image, reference, mask)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(image, reference, *, data_range: float, mask: Optional[np.ndarray] = None) -> float:
    """Structural similarity (Wang et al. 2004, Gaussian window sigma 1.5), as in scikit-image.

    With ``mask``, the SSIM map is averaged over the masked pixels only.
    """
    from skimage.metrics import structural_similarity

    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image shape {a.shape} differs from reference shape {b.shape}")
    _, smap = structural_similarity(
        a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, full=True,
    )
    if mask is None:
        return float(smap.mean())
    return float(smap[np.broadcast_to(np.asarray(mask, bool), smap.shape)].mean())


def to_uint8(image, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly to ``0..255`` (clipped, rounded), the paper's 8-bit images."""
    if not hi > lo:
        raise ValueError(f"need hi > lo, got lo={lo}, hi={hi}")
    x = (np.asarray(image, dtype=np.float64) - lo) / (hi - lo)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def circle_mask(shape: Tuple[int, int], ratio: float = 1.0) -> np.ndarray:
    """Boolean mask of the inscribed reconstruction circle (radius ``ratio * min(H, W) / 2``)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r = ratio * min(h, w) / 2.0
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r
