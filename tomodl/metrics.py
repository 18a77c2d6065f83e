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


#: Invented structure (:func:`invented_features`): margin outside the truth's local range
#: (fraction of ``data_range``), radius of that neighbourhood (px), smallest counted feature
#: (px) and the smoothing of the output (Gaussian sigma, px).
INVENTED_MARGIN, INVENTED_RADIUS, INVENTED_MIN_PX, INVENTED_SIGMA = 0.1, 2, 4, 1.0


def invented_features(image, truth, *, data_range: float, mask: Optional[np.ndarray] = None,
                      margin: float = INVENTED_MARGIN, radius: int = INVENTED_RADIUS,
                      min_px: int = INVENTED_MIN_PX, sigma: float = INVENTED_SIGMA
                      ) -> Tuple[np.ndarray, int, int]:
    """Connected features of ``image`` that the ground truth has nowhere nearby.

    The image, smoothed by a Gaussian of ``sigma`` px (so that single noisy pixels do not
    count), is compared with the truth's *local range*, ``[min, max]`` over the
    ``(2 radius + 1)^2`` px around each pixel (so that edges displaced by up to ``radius`` px do
    not count).  Where it lies outside that range by more than ``margin * data_range``, the
    image shows a value the truth has nowhere nearby: a pore, grain, streak or crack that is not
    there.  Those pixels (inside ``mask``) form connected features (8-neighbours); features of
    at least ``min_px`` px are counted.  Blur and lost features are not invented structure
    (:func:`psnr` and :func:`ssim` see them).

    Parameters
    ----------
    image, truth : array_like, shape (H, W)
        Output and ground truth (any real dtype, same units).
    data_range : float
        Peak-to-peak range of the truth (the scale of ``margin``).
    mask : array_like of bool, shape (H, W), optional
        Only these pixels can be invented (e.g. :func:`circle_mask`); default: all.
    margin : float
        Tolerance outside the local range, fraction of ``data_range``.
    radius : int
        Half-width of the truth's neighbourhood, px.
    min_px : int
        Smallest counted feature, px.
    sigma : float
        Gaussian smoothing of ``image``, px (0: none).

    Returns
    -------
    labels : ndarray, shape (H, W), int
        Counted features labelled ``> 0`` (label values not consecutive), 0 elsewhere.
    count : int
        Number of counted features.
    area : int
        Their total area, px.
    """
    from scipy import ndimage

    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    t = np.asarray(truth, dtype=np.float64)
    s = np.asarray(image, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"image {s.shape} and truth {t.shape} must be the same 2-D shape")
    size = 2 * int(radius) + 1
    hi, lo = ndimage.maximum_filter(t, size), ndimage.minimum_filter(t, size)
    if sigma > 0:
        s = ndimage.gaussian_filter(s, sigma)
    m = margin * data_range
    out = (s > hi + m) | (s < lo - m)
    if mask is not None:
        out &= np.broadcast_to(np.asarray(mask, bool), out.shape)
    labels, n = ndimage.label(out, structure=np.ones((3, 3)))
    if n == 0:
        return labels, 0, 0
    area = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(area >= min_px) + 1
    return (np.where(np.isin(labels, keep), labels, 0), int(keep.size),
            int(area[keep - 1].sum()))
