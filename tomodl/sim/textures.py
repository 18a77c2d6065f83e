# SPDX-License-Identifier: BSD-3-Clause
"""Held-out 2-D pixel phantoms whose structure is not spheres in a cylinder, and their scans.

These families exist to *test* generalization: nothing in :mod:`tomodl.training` uses them.

========================  ====================================================================
``random_phases``         2-5 phases from a thresholded smooth Gaussian random field (one may
                          be pores)
``grains``                Voronoi grains with 3-5 grey levels, some with thin grain boundaries
``dendrites``             branching (dendritic) dense shapes grown in a light matrix
``fibre_network``         a matrix crossed by many thin, gently curved, overlapping fibres
``fine_cracks``           a dense body with branching cracks 0.3-1.5 pixels wide
``low_contrast``          a matrix with discs of 1-6 % contrast on a faint smooth background
========================  ====================================================================

Every generator draws its image on a grid ``upsample`` times finer than tomodl's
``n x n`` reconstruction grid (:mod:`tomodl.recon.geometry`), in attenuation per *coarse*
pixel; :func:`downsample` (a block mean) gives the ground truth on the reconstruction grid.
Fine pixel ``(i, j)`` of ``(n * upsample)^2`` has centre ``x = (j - x0f) / upsample``,
``y = (n * upsample - 1 - i - x0f) / upsample`` with ``x0f = upsample * x0 + (upsample - 1) / 2``,
so each block of ``upsample^2`` fine pixels covers exactly one coarse pixel.  The object lies
inside the disc of radius ``0.85 n / 2`` around the rotation axis.

:func:`sparse_sinogram` projects the fine image (:mod:`tomodl.recon.projector`), bins the
detector back to ``n`` columns, and applies the flux, Poisson noise, blur and rings of
:func:`tomodl.sim.acquisition.acquire`, then flat-field correction and ``-log``: data that do
not come from the reconstruction grid's own discrete model (no inverse crime).
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from tomodl.errors import SimulationError
from tomodl.recon.geometry import default_center, grid_origin

logger = logging.getLogger(__name__)

#: Radius of the object's disc, fraction of ``n / 2``.
OBJECT_RADIUS = 0.85
#: Largest line integral of a phantom is drawn in this range (as in the training families).
ABSORBANCE = (1.0, 2.5)
#: Segment: ``(x0, y0, x1, y1, width)`` in coarse pixels.
Segment = Tuple[float, float, float, float, float]


class Grid:
    """Fine-pixel centre coordinates, in coarse pixels from the rotation axis.

    Attributes
    ----------
    n, up : int
        Coarse grid size and upsampling factor.
    x, y : ndarray, shape (n * up, n * up), float64
        Coordinates of every fine pixel centre (``y`` up).
    radius : float
        Radius of the object's disc, coarse pixels.
    """

    def __init__(self, n: int, up: int) -> None:
        self.n, self.up = int(n), int(up)
        x0f = self.up * grid_origin(self.n) + (self.up - 1) / 2.0
        idx = np.arange(self.n * self.up, dtype=np.float64)
        xs, ys = (idx - x0f) / self.up, (self.n * self.up - 1 - idx - x0f) / self.up
        self.x, self.y = np.meshgrid(xs, ys)
        self.radius = OBJECT_RADIUS * self.n / 2.0

    def disc(self, rng: np.random.Generator, lo: float = 0.75) -> np.ndarray:
        """A slightly elliptic, off-centre body of radius ``lo..1`` times :attr:`radius`."""
        r = self.radius * rng.uniform(lo, 1.0)
        a, b = r, r * rng.uniform(0.8, 1.0)
        phi = rng.uniform(0, np.pi)
        room = max(self.radius - r, 0.0)
        cx, cy = rng.uniform(-room, room, 2) / np.sqrt(2)
        u = (self.x - cx) * np.cos(phi) + (self.y - cy) * np.sin(phi)
        v = -(self.x - cx) * np.sin(phi) + (self.y - cy) * np.cos(phi)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    def random_point(self, rng: np.random.Generator, frac: float = 1.0) -> np.ndarray:
        """A point uniform in the disc of radius ``frac * radius``."""
        r = frac * self.radius * np.sqrt(rng.random())
        t = rng.uniform(0, 2 * np.pi)
        return np.array([r * np.cos(t), r * np.sin(t)])


def smooth_field(shape: Tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field of unit standard deviation and correlation length ``sigma`` px."""
    noise = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    spec = np.fft.rfft2(noise) * np.exp(-2.0 * (np.pi * sigma) ** 2 * (kx**2 + ky**2))
    f = np.fft.irfft2(spec, s=shape)
    std = f.std()
    return (f - f.mean()) / std if std > 0 else f


def _levels(k: int, rng: np.random.Generator, contrast: float = 1.3) -> np.ndarray:
    """``k`` relative attenuations in ``[0.25, 1]``, neighbours at least ``contrast`` apart."""
    for _ in range(200):
        v = np.sort(rng.uniform(0.25, 1.0, k))
        if k == 1 or np.all(v[1:] / v[:-1] >= contrast):
            return rng.permutation(v)
    return rng.permutation(0.25 * contrast ** np.arange(k) / contrast ** (k - 1) * 4)


def draw_segments(g: Grid, segments: List[Segment], value: float, image: np.ndarray,
                  mode: str = "set") -> None:
    """Paint thick segments (capsules) into ``image`` (fine grid) in place.

    ``mode="set"`` writes ``value``, ``"max"`` keeps the larger of image and value.
    """
    dx = 1.0 / g.up
    xs, ys = g.x[0], g.y[:, 0]
    for x0, y0, x1, y1, w in segments:
        h = w / 2.0
        c0 = np.searchsorted(xs, min(x0, x1) - h - dx)
        c1 = np.searchsorted(xs, max(x0, x1) + h + dx)
        r0 = np.searchsorted(-ys, -(max(y0, y1) + h + dx))
        r1 = np.searchsorted(-ys, -(min(y0, y1) - h - dx))
        if c1 <= c0 or r1 <= r0:
            continue
        px, py = g.x[r0:r1, c0:c1], g.y[r0:r1, c0:c1]
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * vx + (py - y0) * vy) / max(vx * vx + vy * vy, 1e-12), 0, 1)
        hit = (px - x0 - t * vx) ** 2 + (py - y0 - t * vy) ** 2 <= h * h
        view = image[r0:r1, c0:c1]
        view[hit] = value if mode == "set" else np.maximum(view[hit], value)


def walk(start, angle: float, length: float, width: float, rng: np.random.Generator, *,
         step: float = 1.5, wiggle: float = 0.15, taper: float = 1.0) -> List[Segment]:
    """A random-walk polyline of ``length`` coarse pixels as segments of decreasing width."""
    segs, p, n = [], np.asarray(start, float), max(int(length / step), 1)
    for i in range(n):
        angle += rng.normal(0.0, wiggle)
        q = p + step * np.array([np.cos(angle), np.sin(angle)])
        w = width * (1.0 - (1.0 - taper) * i / n)
        segs.append((p[0], p[1], q[0], q[1], w))
        p = q
    return segs


def _tree(start, angle, length, width, depth, rng, out: List[Segment]) -> None:
    """Branching walk: side branches at +-(25-60) degrees, shorter and thinner."""
    segs = walk(start, angle, length, width, rng, wiggle=0.08, taper=0.6)
    out.extend(segs)
    if depth == 0:
        return
    for _ in range(rng.integers(2, 5)):
        x0, y0, x1, y1, w = segs[rng.integers(len(segs) // 5, len(segs))]
        a = np.arctan2(y1 - y0, x1 - x0) + rng.choice([-1, 1]) * np.radians(rng.uniform(25, 60))
        _tree((x0, y0), a, length * rng.uniform(0.35, 0.6), max(w * 0.7, 0.5), depth - 1,
              rng, out)


# -- families ---------------------------------------------------------------------------------
def random_phases(g: Grid, rng: np.random.Generator) -> np.ndarray:
    """Thresholded smooth random field: 2-5 phases, one of them pores half of the time."""
    body = g.disc(rng)
    f = smooth_field(g.x.shape, rng.uniform(2.0, 8.0) * g.up, rng)
    k = int(rng.integers(2, 6))
    cuts = np.quantile(f[body], np.sort(rng.uniform(0.1, 0.9, k - 1)))
    levels = _levels(k, rng)
    if rng.random() < 0.5:
        levels[rng.integers(k)] = 0.0
    img = levels[np.searchsorted(cuts, f)]
    return np.where(body, img, 0.0)


def grains(g: Grid, rng: np.random.Generator) -> np.ndarray:
    """Voronoi grains with 3-5 grey levels; half of the phantoms have thin boundaries."""
    from scipy.spatial import cKDTree

    body = g.disc(rng)
    seeds = np.array([g.random_point(rng) for _ in range(int(rng.integers(40, 200)))])
    d, idx = cKDTree(seeds).query(np.stack([g.x[body], g.y[body]], -1), k=2)
    levels = _levels(int(rng.integers(3, 6)), rng, contrast=1.15)
    grain_level = levels[rng.integers(len(levels), size=len(seeds))]
    vals = grain_level[idx[:, 0]]
    if rng.random() < 0.5:                   # boundary: distance to the bisector < w / 2
        s0, s1 = seeds[idx[:, 0]], seeds[idx[:, 1]]
        gap = (d[:, 1] ** 2 - d[:, 0] ** 2) / (2 * np.linalg.norm(s1 - s0, axis=1) + 1e-12)
        vals = np.where(gap < rng.uniform(0.3, 1.0) / 2, vals * rng.uniform(0.3, 0.7), vals)
    img = np.zeros(g.x.shape)
    img[body] = vals
    return img


def dendrites(g: Grid, rng: np.random.Generator) -> np.ndarray:
    """Dense branching trees (3-4 generations) grown from the rim into a light matrix."""
    body = g.disc(rng, lo=0.9)
    img = np.where(body, rng.uniform(0.2, 0.4), 0.0)
    segs: List[Segment] = []
    for _ in range(int(rng.integers(2, 5))):
        t = rng.uniform(0, 2 * np.pi)
        start = 0.9 * g.radius * np.array([np.cos(t), np.sin(t)])
        angle = t + np.pi + rng.normal(0, 0.4)
        _tree(start, angle, g.radius * rng.uniform(0.7, 1.1), rng.uniform(2.0, 4.0),
              int(rng.integers(2, 4)), rng, segs)
    tmp = np.zeros_like(img)
    draw_segments(g, segs, 1.0, tmp)
    return np.where(body & (tmp > 0), 1.0, img)


def fibre_network(g: Grid, rng: np.random.Generator) -> np.ndarray:
    """30-120 thin (0.7-3 px), gently curved fibres crossing a matrix, in 1-3 directions."""
    body = g.disc(rng, lo=0.9)
    img = np.where(body, rng.uniform(0.2, 0.4), 0.0)
    dirs = rng.uniform(0, np.pi, int(rng.integers(1, 4)))
    tmp = np.zeros_like(img)
    for _ in range(int(rng.integers(30, 121))):
        a = rng.choice(dirs) + rng.normal(0, 0.25)
        c = g.random_point(rng)
        start = c - g.radius * np.array([np.cos(a), np.sin(a)])
        segs = walk(start, a, 2 * g.radius, rng.uniform(0.7, 3.0), rng, step=3.0, wiggle=0.03)
        draw_segments(g, segs, rng.uniform(0.7, 1.0), tmp, mode="max")
    return np.where(body & (tmp > 0), tmp, img)


def fine_cracks(g: Grid, rng: np.random.Generator) -> np.ndarray:
    """A dense two-level body cut by 3-10 branching cracks, 0.3-1.5 coarse pixels wide."""
    body = g.disc(rng)
    f = smooth_field(g.x.shape, rng.uniform(6.0, 15.0) * g.up, rng)
    img = np.where(body, np.where(f > rng.uniform(-0.5, 0.5), 1.0, 0.75), 0.0)
    segs: List[Segment] = []
    for _ in range(int(rng.integers(3, 11))):
        start = g.random_point(rng, 0.8)
        width = rng.uniform(0.3, 1.5)
        _tree(start, rng.uniform(0, 2 * np.pi), g.radius * rng.uniform(0.3, 0.8), width,
              int(rng.integers(0, 3)), rng, segs)
    segs = [(x0, y0, x1, y1, max(w, 0.3)) for x0, y0, x1, y1, w in segs]
    draw_segments(g, segs, 0.0, img)
    return np.where(body, img, 0.0)


def low_contrast(g: Grid, rng: np.random.Generator) -> np.ndarray:
    """A matrix with 15-40 discs of +-1-6 % contrast (radius 2-12 px) on a +-1 % background."""
    body = g.disc(rng)
    img = 1.0 + 0.01 * smooth_field(g.x.shape, 10.0 * g.up, rng)
    for _ in range(int(rng.integers(15, 41))):
        cx, cy = g.random_point(rng, 0.85)
        r = rng.uniform(2.0, 12.0)
        inside = (g.x - cx) ** 2 + (g.y - cy) ** 2 <= r * r
        img[inside] *= 1.0 + rng.choice([-1, 1]) * rng.uniform(0.01, 0.06)
    return np.where(body, img, 0.0)


#: The held-out families: name -> ``generator(grid, rng) -> relative attenuation (fine grid)``.
TEXTURES: Dict[str, Callable[[Grid, np.random.Generator], np.ndarray]] = {
    "random_phases": random_phases,
    "grains": grains,
    "dendrites": dendrites,
    "fibre_network": fibre_network,
    "fine_cracks": fine_cracks,
    "low_contrast": low_contrast,
}


def downsample(image, factor: int) -> np.ndarray:
    """Block mean of ``factor x factor`` pixels: the fine image on the coarse grid.

    Parameters
    ----------
    image : array_like, shape (..., H, W) with H, W multiples of ``factor``
    factor : int

    Returns
    -------
    ndarray, shape (..., H / factor, W / factor), float64
    """
    a = np.asarray(image, dtype=np.float64)
    f = int(factor)
    h, w = a.shape[-2:]
    if f < 1 or h % f or w % f:
        raise ValueError(f"image shape {a.shape[-2:]} is not a multiple of factor {factor}")
    return a.reshape(a.shape[:-2] + (h // f, f, w // f, f)).mean(axis=(-3, -1))


def make_texture(family: str, n: int, rng=None, *, upsample: int = 3,
                 absorbance: Tuple[float, float] = ABSORBANCE) -> np.ndarray:
    """One phantom of a held-out family on the fine grid.

    Parameters
    ----------
    family : str
        One of :data:`TEXTURES`.
    n : int
        Reconstruction grid size (``num_gridx`` = detector columns), pixels.
    rng : None, int or numpy.random.Generator
        All randomness.
    upsample : int
        Fine pixels per coarse pixel along each axis (1 gives the coarse grid itself).
    absorbance : (float, float)
        The largest line integral (along the rows and the columns) is drawn in this range.

    Returns
    -------
    ndarray, shape (n * upsample, n * upsample), float32
        Attenuation per coarse pixel, zero outside the disc of radius ``0.85 n / 2``; its
        ground truth on the ``n x n`` grid is ``downsample(image, upsample)``.

    Raises
    ------
    tomodl.errors.SimulationError
        Unknown family (the message lists them) or bad sizes.
    """
    if family not in TEXTURES:
        raise SimulationError(f"Unknown texture family {family!r}; choose one of "
                              f"{sorted(TEXTURES)}")
    if int(n) < 16 or int(upsample) < 1:
        raise SimulationError(f"need n >= 16 and upsample >= 1, got n={n}, upsample={upsample}")
    lo, hi = absorbance
    if not 0 < lo <= hi:
        raise SimulationError(f"absorbance must satisfy 0 < lo <= hi, got {absorbance}")
    rng = np.random.default_rng(rng)
    g = Grid(n, upsample)
    rel = TEXTURES[family](g, rng)
    coarse = downsample(rel, upsample)
    peak = max(coarse.sum(axis=0).max(), coarse.sum(axis=1).max())
    scale = rng.uniform(lo, hi) / peak if peak > 0 else 0.0
    logger.debug("texture %s: n=%d, upsample=%d, peak line integral %.3g", family, n,
                 upsample, peak * scale)
    return (rel * scale).astype(np.float32)


def _embedding(n: int, up: int) -> Tuple[int, int, int]:
    """Padded size ``M`` and offsets ``(row, col)`` that put the fine image on the projector's
    ``M x M`` grid (:func:`tomodl.recon.geometry.image_coordinates`) at its physical place."""
    nf = n * up
    x0f = up * int(grid_origin(n)) + (up - 1) // 2
    for m in range(nf, nf + 4 * up + 4):
        col = (m + 1) // 2 - x0f
        row = m - (m + 1) // 2 - nf + x0f
        if 0 <= col <= m - nf and 0 <= row <= m - nf:
            return m, row, col
    raise SimulationError(f"no embedding for n={n}, upsample={up}")  # pragma: no cover


def project_fine(fine, theta, n: int, upsample: int, *, center: Optional[float] = None,
                 device: str = "cpu") -> np.ndarray:
    """Exact-geometry line integrals of a fine image, on the coarse ``n``-column detector.

    The fine image is projected by :class:`tomodl.recon.projector.ParallelProjector` on a
    detector ``upsample`` times finer (its centre ``upsample * center + (upsample - 1) / 2``),
    and each coarse detector pixel is the mean of its ``upsample`` sub-pixels.

    Parameters
    ----------
    fine : array_like, shape (n * upsample, n * upsample)
        Attenuation per coarse pixel (:func:`make_texture`).
    theta : array_like, shape (n_angles,)
        Angles in radians.
    n : int
        Coarse grid size = detector columns.
    upsample : int
        Odd: the fine pixel centres must fall on the projector's grid (see :func:`_embedding`).
    center : float, optional
        Rotation axis on the coarse detector (default ``n / 2``).

    Returns
    -------
    ndarray, shape (n_angles, n), float64
        Line integrals, (attenuation per pixel) x pixels.
    """
    from tomodl.recon.projector import ParallelProjector

    up = int(upsample)
    if up < 1 or up % 2 == 0:
        raise SimulationError(f"upsample must be an odd integer (1, 3, 5): with an even one the "
                              f"fine pixels fall between the projector's; got {upsample}")
    f = np.asarray(fine, dtype=np.float32)
    if f.shape != (n * up, n * up):
        raise SimulationError(f"fine image must be {(n * up, n * up)}, got {f.shape}")
    m, r0, c0 = _embedding(n, up)
    pad = np.zeros((m, m), np.float32)
    pad[r0:r0 + n * up, c0:c0 + n * up] = f
    c = default_center(n) if center is None else float(center)
    op = ParallelProjector(m, theta, n * up, up * c + (up - 1) / 2.0, device=device)
    sino = np.asarray(op.forward(pad).cpu().numpy(), dtype=np.float64)
    return sino.reshape(sino.shape[0], n, up).mean(axis=2) / up


def sparse_sinogram(fine, theta, n: int, upsample: int, rng=None, *,
                    center: Optional[float] = None, flux: float = 2.0e4, blur: float = 0.0,
                    ring_strength: float = 0.0, device: str = "cpu") -> np.ndarray:
    """A noisy measured sinogram of a fine phantom (no inverse crime).

    :func:`project_fine`, then the counts of :func:`tomodl.sim.acquisition.acquire` (beam
    profile, flats, darks, Poisson and read noise, detector ``blur`` and rings, in coarse
    detector pixels; float32 counts, so no flux saturates a 16-bit detector), then
    :func:`tomodl.recon.preprocess.normalize` and ``minus_log``.

    Parameters
    ----------
    fine, theta, n, upsample, center : see :func:`project_fine`
    rng : None, int or numpy.random.Generator
        The noise.
    flux : float
        Mean flat-field counts per detector pixel.
    blur, ring_strength : float
        As in :class:`tomodl.sim.config.Acquisition`.

    Returns
    -------
    ndarray, shape (n_angles, n), float32
        Measured line integrals.
    """
    from tomodl.recon.preprocess import minus_log, normalize
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.config import Acquisition

    p = project_fine(fine, theta, n, upsample, center=center, device=device)
    acq = Acquisition(flux=flux, blur=blur, ring_strength=ring_strength, dtype="float32")
    proj, flat, dark = acquire(p[:, None, :], acq, rng)
    return minus_log(normalize(proj, flat, dark))[:, 0, :]
