# SPDX-License-Identifier: BSD-3-Clause
"""Frozen configurations of the simulator: phantom recipes and acquisition physics."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Tuple

from tomodl.errors import SimulationError


#: Distributions of feature radii (shape only; the scale follows from the porosity).
SIZE_DISTRIBUTIONS = ("uniform", "lognormal", "powerlaw")
#: Dtypes of the simulated detector counts.
COUNT_DTYPES = ("auto", "uint16", "float32")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise SimulationError(msg)


def _from_mapping(cls, values: Mapping[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise SimulationError(f"unknown {cls.__name__} parameters {sorted(unknown)}; "
                              f"choose from {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class _Mapped:
    """``from_dict``/``to_dict`` shared by the simulator's frozen configs."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """Build from a mapping; unknown keys raise :class:`SimulationError`."""
        return _from_mapping(cls, values)

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return asdict(self)


@dataclass(frozen=True)
class PhantomParams(_Mapped):
    """Parameters of a phantom recipe; a family (:data:`tomodl.sim.families.FAMILIES`) sets
    its own defaults on top of these.

    Lengths are in pixels, attenuation in 1/pixel, fractions in [0, 1].

    Attributes
    ----------
    n_spheres : int or None
        Spherical/ellipsoidal features (holes or filled inclusions) in the whole phantom;
        None: as many as give a mean radius of ``max(5 gap, 2, object radius / 12)``.
    porosity : float
        Target volume fraction of those features within the material (< 0.5).
    size_dist : {"uniform", "lognormal", "powerlaw"}
        Shape of the radius distribution, between 1 and ``size_spread`` before scaling.
    size_spread : float
        Ratio of the largest to the smallest radius (>= 1).
    aspect : float
        Largest axis ratio of the features (1: spheres); orientations are uniform.
    fill_fraction : float
        Fraction of features filled with material of random intensity (the paper's
        "randomly intense"); the others are holes.
    fill_range : (float, float)
        Fill attenuation relative to the surrounding material.
    n_layers : int
        Nested shells of different materials per object (1: homogeneous).
    cavity : bool
        The innermost shell is empty (e.g. a tooth's pulp chamber).
    n_cracks, crack_thickness : int, (float, float)
        Thin flat ellipsoids (cracks) per object and their full thickness range.
    n_fibres, fibre_width : int, (float, float)
        Needle ellipsoids (fibres) per object, denser than the matrix, and their width range.
    n_objects : int
        Separate objects in the field of view.
    radius_range : (float, float)
        Object radius as a fraction of the field-of-view radius (single object).
    object_aspect : float
        Largest axis ratio of an object's elliptic cross-section.
    off_centre : float
        Largest offset of a single object's centre, as a fraction of the field radius.
    mu_range : (float, float)
        Range of material attenuation per pixel (drawn log-uniformly).
    max_absorbance : float
        Cap on the largest line integral; all values are scaled down to respect it.
    gap : float
        Smallest distance between features (a foam's wall thickness), pixels.
    max_tries : int
        Candidate positions tried per feature before giving up.
    """

    n_spheres: Optional[int] = None
    porosity: float = 0.3
    size_dist: str = "uniform"
    size_spread: float = 4.0
    aspect: float = 1.0
    fill_fraction: float = 0.0
    fill_range: Tuple[float, float] = (0.1, 2.5)
    n_layers: int = 1
    cavity: bool = False
    n_cracks: int = 0
    crack_thickness: Tuple[float, float] = (0.4, 1.6)
    n_fibres: int = 0
    fibre_width: Tuple[float, float] = (1.0, 4.0)
    n_objects: int = 1
    radius_range: Tuple[float, float] = (0.6, 0.9)
    object_aspect: float = 1.0
    off_centre: float = 0.0
    mu_range: Tuple[float, float] = (1e-3, 5e-2)
    max_absorbance: float = 3.0
    gap: float = 1.0
    max_tries: int = 4096

    def __post_init__(self) -> None:
        _check(self.n_spheres is None or self.n_spheres >= 0,
               f"n_spheres must be >= 0, got {self.n_spheres}")
        _check(0.0 <= self.porosity < 0.5, f"porosity must be in [0, 0.5), got {self.porosity}")
        _check(self.n_spheres == 0 or self.porosity > 0,
               "porosity must be > 0 when there are spheres")
        _check(self.size_dist in SIZE_DISTRIBUTIONS,
               f"Unknown size_dist {self.size_dist!r}; choose one of {list(SIZE_DISTRIBUTIONS)}")
        _check(self.size_spread >= 1 and self.aspect >= 1 and self.object_aspect >= 1,
               "size_spread, aspect and object_aspect must be >= 1")
        _check(0.0 <= self.fill_fraction <= 1.0, "fill_fraction must be in [0, 1]")
        _check(self.n_layers >= 1 and self.n_objects >= 1, "n_layers and n_objects must be >= 1")
        _check(not self.cavity or self.n_layers >= 2, "cavity needs n_layers >= 2")
        _check(self.n_cracks >= 0 and self.n_fibres >= 0, "n_cracks, n_fibres must be >= 0")
        _check(0 < self.radius_range[0] <= self.radius_range[1] <= 1,
               f"radius_range must satisfy 0 < lo <= hi <= 1, got {self.radius_range}")
        _check(0 <= self.off_centre < 1, "off_centre must be in [0, 1)")
        _check(0 < self.mu_range[0] <= self.mu_range[1],
               f"mu_range must satisfy 0 < lo <= hi, got {self.mu_range}")
        for name in ("fill_range", "crack_thickness", "fibre_width"):
            lo, hi = getattr(self, name)
            _check(0 < lo <= hi, f"{name} must satisfy 0 < lo <= hi, got {(lo, hi)}")
        _check(self.max_absorbance > 0 and self.gap >= 0 and self.max_tries >= 1,
               "max_absorbance must be > 0, gap >= 0, max_tries >= 1")


@dataclass(frozen=True)
class Acquisition(_Mapped):
    """Detector and source physics of a simulated scan.

    Attributes
    ----------
    flux : float
        Mean counts per detector pixel in a flat field (before the beam profile).
    noise : bool
        Poisson counting noise and Gaussian read noise (False: exact expected counts).
    n_flat, n_dark : int
        Flat and dark frames.
    dark_level, read_noise : float
        Dark current (counts) and read-noise standard deviation (counts).
    flat_nonuniformity : float
        Relative amplitude of the smooth beam profile and of the detector's per-pixel gain.
    blur : float
        Gaussian detector blur (scintillator), standard deviation in pixels (0: none).
    ring_strength : float
        Standard deviation of per-pixel gain changes between flats and projections (rings).
    zinger_rate : float
        Fraction of projection pixels hit by a zinger (a bright outlier), 0 for none.
    zinger_strength : float
        Zinger brightness, in units of ``flux``.
    dtype : {"auto", "uint16", "float32"}
        Stored counts; ``auto`` is uint16 with noise and float32 without.
    """

    flux: float = 2.0e4
    noise: bool = True
    n_flat: int = 10
    n_dark: int = 10
    dark_level: float = 100.0
    read_noise: float = 2.0
    flat_nonuniformity: float = 0.1
    blur: float = 0.0
    ring_strength: float = 0.0
    zinger_rate: float = 0.0
    zinger_strength: float = 1.0
    dtype: str = "auto"

    def __post_init__(self) -> None:
        _check(self.flux > 0, f"flux must be positive (counts per pixel), got {self.flux}")
        _check(self.n_flat >= 1 and self.n_dark >= 1, "n_flat and n_dark must be >= 1")
        for name in ("dark_level", "read_noise", "flat_nonuniformity", "blur", "ring_strength",
                     "zinger_rate", "zinger_strength"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.flat_nonuniformity < 1, "flat_nonuniformity must be < 1")
        _check(self.zinger_rate <= 1, "zinger_rate must be <= 1")
        _check(self.dtype in COUNT_DTYPES,
               f"Unknown dtype {self.dtype!r}; choose one of {list(COUNT_DTYPES)}")

    @property
    def count_dtype(self) -> str:
        """The dtype actually stored."""
        if self.dtype == "auto":
            return "uint16" if self.noise else "float32"
        return self.dtype


@dataclass(frozen=True)
class ScanGeometry(_Mapped):
    """Parallel-beam scan geometry of a simulation.

    Attributes
    ----------
    n_det : int
        Detector columns; also the reconstruction grid size (``num_gridx``).
    n_rows : int
        Detector rows (slices).
    n_angles : int
        Projections, evenly spaced over ``arc_degrees`` (end point excluded).
    arc_degrees : float
        Angular range, 180 or 360 degrees.
    center : float, optional
        Rotation axis in detector pixels (default TomoPy's ``n_det / 2``).
    supersample_z : int
        Planes averaged across each detector row (projections and ground truth).
    gt_supersample : int
        Sub-rows per pixel row of the ground truth (coverage along ``x`` is exact).
    """

    n_det: int = 256
    n_rows: int = 64
    n_angles: int = 1200
    arc_degrees: float = 180.0
    center: Optional[float] = None
    supersample_z: int = 2
    gt_supersample: int = 8

    def __post_init__(self) -> None:
        _check(self.n_det >= 8, f"the detector needs at least 8 columns, got {self.n_det}")
        _check(self.n_rows >= 1, f"the detector needs at least 1 row, got {self.n_rows}")
        _check(self.n_angles >= 1, f"the scan needs at least 1 angle, got {self.n_angles}")
        _check(0 < self.arc_degrees <= 360, f"arc_degrees must be in (0, 360], got "
               f"{self.arc_degrees}")
        _check(self.center is None or 0 <= self.center <= self.n_det - 1,
               f"center must lie on the detector [0, {self.n_det - 1}], got {self.center}")
        _check(self.supersample_z >= 1 and self.gt_supersample >= 1,
               "supersample_z and gt_supersample must be >= 1")

