# SPDX-License-Identifier: BSD-3-Clause
"""Named, seeded phantom recipes (families) for training data.

The paper trains on random foams: a cylinder of one material from which non-overlapping
spheres of random sizes are removed, some of them filled with material of random intensity.
A network trained only on material-and-holes does not transfer to real samples with several
tissue levels, cracks and fibres, so the families below add those (all with exact analytic
projections, see :mod:`tomodl.sim.phantom`):

========================  ====================================================================
``foam``                  the paper's foam: centred cylinder, spherical holes
``foam_intense``          the same with half of the spheres filled with random intensities
``layered``               elliptic off-centre object, nested shells of different materials,
                          ellipsoidal inclusions of different densities and pores
``cracked``               tooth-like: shells (enamel/dentin), a cavity, thin cracks, few pores
``fibres``                a matrix reinforced by dense needle-shaped fibres, some pores
``mixed``                 several separate objects, each drawn from one of the above
========================  ====================================================================

Every family is a dict of :class:`~tomodl.sim.config.PhantomParams` defaults; user overrides
go on top.  Material attenuations are drawn per phantom, log-uniformly in ``mu_range``
(attenuation per pixel), then scaled down if the largest line integral would exceed
``max_absorbance``.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import tomodl
from tomodl.recon.geometry import default_center, grid_origin
from tomodl.sim.analytic import ellipse_sinogram
from tomodl.sim.config import PhantomParams, SimulationError
from tomodl.sim.phantom import Phantom, rotation_zyz
from tomodl.sim.placement import Packer, Region, require_fit, shadow_radius

logger = logging.getLogger(__name__)

FAMILIES: Dict[str, Dict[str, Any]] = {
    "foam": {},
    "foam_intense": {"fill_fraction": 0.5},
    "layered": {"n_layers": 3, "porosity": 0.15, "aspect": 2.5,
                "fill_fraction": 0.7, "object_aspect": 1.4, "off_centre": 0.15,
                "size_spread": 3.0},
    "cracked": {"n_layers": 3, "cavity": True, "n_cracks": 4,
                "porosity": 0.01, "object_aspect": 1.3, "off_centre": 0.1},
    "fibres": {"n_fibres": 80, "porosity": 0.03, "object_aspect": 1.2,
               "size_spread": 2.0},
    "mixed": {"n_objects": 3},
}
#: Families an object of a ``mixed`` phantom is drawn from.
MIXED_FROM = ("foam", "foam_intense", "layered", "cracked", "fibres")
#: Fibre attenuation relative to the surrounding matrix.
FIBRE_DENSITY = (1.5, 3.0)
#: Candidate positions tried per crack or fibre (they are skipped, with a warning, if none fits).
THIN_TRIES = 512
#: Smallest ratio between the attenuations of two neighbouring shells.
LEVEL_CONTRAST = 1.33


def family_params(family: str, **overrides: Any) -> PhantomParams:
    """The parameters of ``family`` with ``overrides`` on top.

    Raises
    ------
    ValueError
        Unknown family (the message lists :data:`FAMILIES`) or invalid parameters.
    """
    if family not in FAMILIES:
        raise SimulationError(f"Unknown phantom family {family!r}; choose one of "
                              f"{sorted(FAMILIES)}")
    return PhantomParams.from_dict({**FAMILIES[family], **overrides})


def field_radius(n_det: int, center: float) -> float:
    """Radius (pixels) of the disc seen by every projection and inside the ``n_det`` grid,
    minus a 1-pixel margin."""
    x0 = grid_origin(n_det)
    return min(center + 0.5, n_det - 0.5 - center, x0 + 0.5, n_det - 0.5 - x0) - 1.0


def _radii_shape(dist: str, spread: float, n: int, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(n)
    if dist == "uniform":
        return 1.0 + (spread - 1.0) * u
    if dist == "powerlaw":                      # p(r) ~ r**-3 on [1, spread]
        return (1.0 - u * (1.0 - spread**-2.0)) ** -0.5
    sigma = max(np.log(spread), 1e-9) / 4.0     # lognormal, clipped to the spread
    return np.clip(np.exp(rng.normal(0.0, sigma, n)), spread**-0.5, spread**0.5)


def _feature_axes(p: PhantomParams, n: int, volume: float, height: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Semi-axes ``(n, 3)``, largest first, that fill ``volume`` of the scanned slab."""
    rho = _radii_shape(p.size_dist, p.size_spread, n, rng)
    shape = rng.uniform(1.0 / p.aspect, 1.0, (n, 3))
    shape[:, 0] = 1.0
    shape /= np.cbrt(shape.prod(axis=1))[:, None]           # equal-volume shapes
    base = rho[:, None] * shape
    vol = 4.0 / 3.0 * np.pi * rho**3

    def filled(s: float) -> float:  # expected volume inside the slab of centres |z| < H/2 + h
        h = s * base.max(axis=1)
        return float(np.sum(vol * s**3 * height / (height + 2.0 * h)))

    lo, hi = 0.0, 1.0
    while filled(hi) < volume:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if filled(mid) < volume else (lo, mid)
    axes = hi * base
    return axes[np.argsort(-axes.max(axis=1))]


def _n_spheres(p: PhantomParams, area: float, height: float, size: float) -> int:
    """``p.n_spheres``, or the count giving a mean radius ``max(5 gap, 2, size / 12)``."""
    if p.n_spheres is not None:
        return p.n_spheres
    r = max(5.0 * p.gap, 2.0, size / 12.0)
    # a sphere with its centre in |z| < H/2 + r puts H / (H + 2r) of its volume in the slab
    n = p.porosity * area * (height + 2.0 * r) / (4.0 / 3.0 * np.pi * r**3)
    return int(np.clip(round(n), 1, 2000))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(0, 2 * np.pi), np.arccos(rng.uniform(-1, 1)),
                     rng.uniform(0, 2 * np.pi)])


def _levels(n: int, p: PhantomParams, rng: np.random.Generator) -> List[float]:
    """Attenuation of each shell, outer first; neighbours differ by ``LEVEL_CONTRAST``."""
    lo, hi = np.log(p.mu_range[0]), np.log(p.mu_range[1])
    levels = [float(np.exp(rng.uniform(lo, hi)))]
    while len(levels) < n:
        prev = levels[-1]
        up = prev * LEVEL_CONTRAST <= p.mu_range[1] and (rng.random() < 0.5 or
                                                          prev / LEVEL_CONTRAST < p.mu_range[0])
        bound = (np.log(prev * LEVEL_CONTRAST), max(hi, np.log(prev * LEVEL_CONTRAST))) if up \
            else (min(lo, np.log(prev / LEVEL_CONTRAST)), np.log(prev / LEVEL_CONTRAST))
        levels.append(float(np.exp(rng.uniform(*bound))))
    if p.cavity:
        levels[-1] = 0.0
    return levels


def _shells(outline: Tuple[float, ...], p: PhantomParams, rng: np.random.Generator):
    """Nested elliptic shells of one object: cylinders ``(L, 8)`` and regions (outer first)."""
    x0, y0, a, b, phi = outline
    levels = _levels(p.n_layers, p, rng)
    cyl, ells = [], [(x0, y0, a, b, phi)]
    for i in range(1, p.n_layers):
        cavity = p.cavity and i == p.n_layers - 1
        ratio = rng.uniform(0.25, 0.5) if cavity else rng.uniform(0.55, 0.85)
        px, py, pa, pb, _ = ells[-1]
        off = 0.4 * (1.0 - ratio) * min(pa, pb) * np.sqrt(rng.random())
        ang = rng.uniform(0, 2 * np.pi)
        ells.append((px + off * np.cos(ang), py + off * np.sin(ang), pa * ratio, pb * ratio, phi))
    prev = 0.0
    for ell, level in zip(ells, levels):
        cyl.append([*ell, -np.inf, np.inf, level - prev])
        prev = level
    regions = [(ells[i], ells[i + 1] if i + 1 < len(ells) else None, levels[i])
               for i in range(len(ells)) if levels[i] > 0]
    return np.array(cyl), regions


def _outlines(p: PhantomParams, r_field: float, rng: np.random.Generator):
    """Cross-sections ``(x, y, a, b, phi)`` of the objects, inside the field, not overlapping."""
    if p.n_objects == 1:
        r = rng.uniform(*p.radius_range) * r_field
        off = min(p.off_centre * r_field, r_field - r) * np.sqrt(rng.random())
        ang = rng.uniform(0, 2 * np.pi)
        return [(off * np.cos(ang), off * np.sin(ang), r, r / rng.uniform(1, p.object_aspect),
                 rng.uniform(0, np.pi))]
    scale = 1.0
    for _ in range(50):
        radii = np.sort(rng.uniform(0.5, 0.9, p.n_objects) * scale * r_field
                        / np.sqrt(p.n_objects))[::-1]
        centres: List[np.ndarray] = []
        for r in radii:
            for _ in range(500):
                c = _disc_point(r_field - r, rng)
                if all(np.hypot(*(c - q)) > r + rq + 2.0 for q, rq in zip(centres, radii)):
                    centres.append(c)
                    break
            else:
                break
        if len(centres) == p.n_objects:
            return [(c[0], c[1], r, r / rng.uniform(1, p.object_aspect), rng.uniform(0, np.pi))
                    for c, r in zip(centres, radii)]
        scale *= 0.9
    raise SimulationError(f"cannot fit {p.n_objects} objects in the field of view")


def _disc_point(radius: float, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi)
    return max(radius, 0.0) * np.sqrt(rng.random()) * np.array([np.cos(t), np.sin(t)])


def _z_half(axes: np.ndarray, rot: np.ndarray) -> float:
    """Half-height of an ellipsoid along ``z``."""
    return float(np.sqrt(np.sum((rot[2] * axes) ** 2)))


def _pick(regions: List[Region], rng: np.random.Generator) -> List[Region]:
    """Regions in a random order, the first drawn with probability proportional to area."""
    w = np.array([r.area() for r in regions])
    first = int(rng.choice(len(regions), p=w / w.sum()))
    return [regions[first]] + [r for i, r in enumerate(regions) if i != first]


def _put(packer: Packer, regions: List[Region], axes, euler, rng) -> Optional[Tuple]:
    """Place one thin feature in the first region (see :func:`_pick`) that takes it."""
    rot = rotation_zyz(*euler)
    reach = shadow_radius(np.asarray(axes), rot) + packer.gap
    for region in _pick(regions, rng):
        if reach >= min(region.outer[2:4]):
            continue
        c = packer.place(region, axes, rot, rng, z_margin=_z_half(np.asarray(axes), rot),
                         tries=THIN_TRIES)
        if c is not None:
            return c, region
    return None


def _thin_features(packer, regions, p: PhantomParams, size: float, rng) -> List[List[float]]:
    """Cracks (thin discs, roughly vertical) and fibres (dense needles) of one object."""
    rows = []
    kinds = ["crack"] * p.n_cracks + ["fibre"] * p.n_fibres
    for kind in kinds:
        length = rng.uniform(0.2, 0.45) * size
        for _ in range(4):                              # shrink until it fits
            if kind == "crack":
                axes = (length, length * rng.uniform(0.3, 1.0), rng.uniform(*p.crack_thickness) / 2)
                euler = (rng.uniform(0, 2 * np.pi), np.pi / 2 - rng.uniform(-0.5, 0.5),
                         rng.uniform(0, 2 * np.pi))
            else:
                w = rng.uniform(*p.fibre_width) / 2
                axes = (w, w, length)
                euler = _random_rotation(rng)
            got = _put(packer, regions, axes, euler, rng)
            if got is not None:
                c, v = got[0], got[1].value
                value = -v if kind == "crack" else v * (rng.uniform(*FIBRE_DENSITY) - 1.0)
                rows.append([*c, *axes, *euler, value])
                break
            length *= 0.7
        else:
            logger.warning("skipped a %s that did not fit", kind)
    return rows


def _spheres(packer, regions, n: int, p: PhantomParams, height: float, rng) -> List[List[float]]:
    """Holes and filled inclusions of one object, allocated to shells by area, largest first."""
    regions = [r for r in regions if r.room() > 2.0 + 2.0 * p.gap]   # skip very thin shells
    if n == 0 or not regions:
        return []
    areas = np.array([r.area() for r in regions])
    counts = rng.multinomial(n, areas / areas.sum())
    rows = []
    for region, n_r in zip(regions, counts):
        if n_r == 0:
            continue
        axes_all = _feature_axes(p, int(n_r), p.porosity * region.area() * height, height, rng)
        cap = 0.8 * region.room() - p.gap
        if (region.inner is not None or p.n_spheres is None) and axes_all[0].max() > cap:
            axes_all *= max(cap, 0.5) / axes_all[0].max()     # thin shells take smaller features
        require_fit(region, axes_all[0].max() + p.gap, "a sphere")
        for i, axes in enumerate(axes_all):
            euler = _random_rotation(rng) if p.aspect > 1 else np.zeros(3)
            rot = rotation_zyz(*euler)
            c = packer.place(region, axes, rot, rng, z_margin=_z_half(axes, rot))
            if c is None and p.n_spheres is None:       # automatic count: best effort
                logger.debug("placed %d of %d automatic spheres in a shell", i, n_r)
                break
            if c is None:
                raise SimulationError(
                    f"could not place sphere {i + 1} of {n_r} (radius {axes.max():.1f} px) after "
                    f"{p.max_tries} tries: the spheres do not fit; lower --porosity, use fewer "
                    "--spheres or a larger --size")
            fill = rng.random() < p.fill_fraction
            value = region.value * ((rng.uniform(*p.fill_range) if fill else 0.0) - 1.0)
            rows.append([*c, *axes, *euler, value])
    return rows


def _object(packer, outline, p: PhantomParams, height: float, n_spheres: int, rng):
    cyl, shells = _shells(outline, p, rng)
    regions = [Region(outer, inner, (-height / 2, height / 2), v) for outer, inner, v in shells]
    rows = _thin_features(packer, regions, p, min(outline[2:4]), rng)
    if n_spheres is None:
        n_spheres = _n_spheres(p, sum(r.area() for r in regions), height, min(outline[2:4]))
    rows += _spheres(packer, regions, n_spheres, p, height, rng)
    return cyl, rows


def _cap_absorbance(ph: Phantom, p: PhantomParams, n_det: int, n_rows: int,
                    center: float) -> Tuple[Phantom, float]:
    """Scale values so the largest line integral (3 rows, 16 angles) is <= ``max_absorbance``."""
    section = ph.sectioner()
    theta = np.linspace(0, np.pi, 16, endpoint=False)
    peak = max(float(ellipse_sinogram(section(z), theta, n_det, center).max())
               for z in (-(n_rows - 1) / 2, 0.0, (n_rows - 1) / 2))
    factor = min(1.0, p.max_absorbance / peak) if peak > 0 else 1.0
    return (ph.scaled(factor) if factor < 1 else ph), factor


def make_phantom(family: str, n_det: int, n_rows: int, *, rng=None,
                 center: Optional[float] = None, **overrides: Any) -> Phantom:
    """Draw a random phantom of a named family.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    n_det, n_rows : int
        Detector columns (the field of view) and rows (the scanned height), pixels.
    rng : None, int or numpy.random.Generator
        Randomness; the same integer seed gives the same phantom.
    center : float, optional
        Rotation axis in detector pixels (default :func:`tomodl.recon.geometry.default_center`).
    **overrides
        :class:`~tomodl.sim.config.PhantomParams` fields replacing the family's defaults.

    Returns
    -------
    Phantom
        With ``meta`` = family, seed, parameters, value scale factor, tomodl version.
    """
    p = family_params(family, **overrides)
    seed = rng if isinstance(rng, (int, np.integer)) else None
    rng = np.random.default_rng(rng)
    center = default_center(n_det) if center is None else float(center)
    r_field = field_radius(n_det, center)
    if r_field < 2:
        raise SimulationError(f"n_det={n_det} with center={center} leaves no field of view")
    outlines = _outlines(p, r_field, rng)
    areas = np.array([np.pi * o[2] * o[3] for o in outlines])
    packer = Packer(p.gap, p.max_tries)
    cyl, ell, subs = [], [], []
    for k, outline in enumerate(outlines):
        sub = family if family != "mixed" else str(rng.choice(MIXED_FROM))
        q = p if family != "mixed" else _mixed_params(sub, p, areas[k] / (np.pi * r_field**2))
        n_sph = q.n_spheres if family != "mixed" or p.n_spheres is None \
            else int(round(p.n_spheres * areas[k] / areas.sum()))
        c, rows = _object(packer, outline, q, float(n_rows), n_sph, rng)
        cyl.append(c)
        ell += rows
        subs.append(sub)
    ph = Phantom(np.array(ell).reshape(-1, 10), np.concatenate(cyl), {})
    ph, factor = _cap_absorbance(ph, p, n_det, n_rows, center)
    meta = {"family": family, "seed": None if seed is None else int(seed),
            "params": p.to_dict(), "objects": subs, "value_scale": factor,
            "n_det": n_det, "n_rows": n_rows, "center": center,
            "tomodl_version": tomodl.__version__}
    return Phantom(ph.ellipsoids, ph.cylinders, meta)


def _mixed_params(sub: str, p: PhantomParams, area_fraction: float) -> PhantomParams:
    """Parameters of one object of a ``mixed`` phantom: ``sub``'s recipe (cracks and fibres
    scaled to the object's area); ``mu_range``, ``gap``, ``max_tries`` and ``size_dist`` come
    from the ``mixed`` parameters ``p`` (and ``n_spheres``, split by area, in the caller)."""
    base = family_params(sub)
    scale = area_fraction / 0.75**2
    return replace(base, n_cracks=int(np.ceil(base.n_cracks * scale)),
                   n_fibres=int(np.ceil(base.n_fibres * scale)), mu_range=p.mu_range,
                   gap=p.gap, max_tries=p.max_tries, size_dist=p.size_dist)
