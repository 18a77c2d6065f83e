# SPDX-License-Identifier: BSD-3-Clause
"""Simulated scans as DXchange files, with their ground truth.

A simulated scan is an ordinary DXchange file (``/exchange/data``, ``data_white``,
``data_dark``, ``theta`` in degrees, written by :func:`tomodl.io.dxchange.write_dx`), readable
by ``tomodl recon`` exactly like a measured one, plus the group ``/tomodl_sim``:

* ``ground_truth`` ``(n_rows, n_det, n_det)`` float32: the phantom's slices, attenuation per
  pixel, on the grid and in the orientation :func:`tomodl.recon` returns;
* ``ellipsoids`` ``(k, 10)``, ``cylinders`` ``(m, 8)``: the phantom itself
  (:mod:`tomodl.sim.phantom`);
* attribute ``metadata``: JSON with family, seed, phantom and acquisition parameters, geometry,
  centre and tomodl version.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

import tomodl
from tomodl.errors import ScanFileError
from tomodl.recon.geometry import default_center
from tomodl.sim.acquisition import acquire
from tomodl.sim.config import Acquisition, ScanGeometry
from tomodl.sim.families import make_phantom
from tomodl.sim.phantom import Phantom, ground_truth, project

logger = logging.getLogger(__name__)

SIM_GROUP = "/tomodl_sim"
GT_DATASET = SIM_GROUP + "/ground_truth"
#: Units of the ground truth.
GT_UNITS = "attenuation per pixel"


def scan_angles(geometry: ScanGeometry) -> np.ndarray:
    """Evenly spaced angles in radians, ``(n_angles,)`` float64, end point excluded."""
    return np.deg2rad(geometry.arc_degrees) * np.arange(geometry.n_angles) / geometry.n_angles


def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="", disable=not progress, leave=False)


def simulate_phantom_scan(path: Any, phantom: Phantom, *, geometry: Optional[ScanGeometry] = None,
                          acquisition: Optional[Acquisition] = None, rng=None,
                          overwrite: bool = False, progress: bool = False) -> Path:
    """Project ``phantom``, simulate the detector and write a DXchange file with ground truth.

    Parameters
    ----------
    path : str or Path
        Output ``.h5``; refused if it exists unless ``overwrite``.
    phantom : Phantom
    geometry : ScanGeometry, optional
        Default ``ScanGeometry()``.
    acquisition : Acquisition, optional
        Default ``Acquisition()``.
    rng : None, int or numpy.random.Generator
        Randomness of the acquisition (noise, detector maps).
    overwrite, progress : bool
        Replace an existing file; show progress bars on stderr.

    Returns
    -------
    Path
    """
    from tomodl.io.atomic import check_replace
    from tomodl.io.dxchange import write_dx

    check_replace(path, overwrite=overwrite, kinds=("scan",))
    g = geometry or ScanGeometry()
    acquisition = acquisition or Acquisition()
    center = default_center(g.n_det) if g.center is None else float(g.center)
    theta = scan_angles(g)
    with _bar(progress, g.n_rows, "project") as bar:
        lines = project(phantom, theta, g.n_det, g.n_rows, center=center,
                        supersample_z=g.supersample_z, progress=bar.update)
    with _bar(progress, g.n_angles, "detector") as bar:
        proj, flat, dark = acquire(lines, acquisition, rng, progress=bar.update)
    del lines
    gt = ground_truth(phantom, g.n_det, g.n_rows, supersample=g.gt_supersample,
                      supersample_z=g.supersample_z)
    meta = {**phantom.meta, "geometry": {**g.to_dict(), "center": center},
            "acquisition": acquisition.to_dict(), "units": GT_UNITS,
            "tomodl_version": tomodl.__version__}
    extra = {GT_DATASET: gt, SIM_GROUP + "/ellipsoids": phantom.ellipsoids,
             SIM_GROUP + "/cylinders": phantom.cylinders,
             SIM_GROUP: {"metadata": json.dumps(meta), "ground_truth_units": GT_UNITS,
                         "ground_truth_axes": "z:y:x"}}
    return write_dx(path, proj, flat, dark, theta, theta_units="deg", extra=extra,
                    overwrite=overwrite)


def simulate_scan(path: Any, family: str = "foam", *, seed: int = 0,
                  geometry: Optional[ScanGeometry] = None,
                  acquisition: Optional[Acquisition] = None, overwrite: bool = False,
                  progress: bool = False, **phantom_params: Any) -> Path:
    """Draw a phantom of ``family`` and write its scan (see :func:`simulate_phantom_scan`).

    The phantom and the acquisition use independent streams spawned from ``seed``, so the same
    seed reproduces the file exactly.  ``phantom_params`` override the family's
    :class:`~tomodl.sim.config.PhantomParams`.

    Examples
    --------
    >>> simulate_scan("foam.h5", "foam", seed=0,                       # doctest: +SKIP
    ...               geometry=ScanGeometry(n_det=256, n_rows=16, n_angles=900))
    """
    from tomodl.io.atomic import check_replace

    check_replace(path, overwrite=overwrite, kinds=("scan",))
    geometry = geometry or ScanGeometry()
    ph_seq, acq_seq = np.random.SeedSequence(int(seed)).spawn(2)
    phantom = make_phantom(family, geometry.n_det, geometry.n_rows,
                           rng=np.random.default_rng(ph_seq), center=geometry.center,
                           **phantom_params)
    phantom = Phantom(phantom.ellipsoids, phantom.cylinders, {**phantom.meta, "seed": int(seed)})
    return simulate_phantom_scan(path, phantom, geometry=geometry, acquisition=acquisition,
                                 rng=np.random.default_rng(acq_seq), overwrite=overwrite,
                                 progress=progress)


def read_ground_truth(path: Any, rows: Optional[Tuple[int, int]] = None
                      ) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Ground-truth slices and metadata of a simulated scan.

    Parameters
    ----------
    rows : (start, stop), optional
        Read only these slices.

    Returns
    -------
    gt : ndarray, shape (n_rows, N, N), float32
        Attenuation per pixel.
    meta : dict
        The simulation's metadata.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ScanFileError(f"cannot open {str(path)!r} as HDF5: {err}") from None
    with f:
        if GT_DATASET not in f:
            raise ScanFileError(f"{str(path)!r} has no {GT_DATASET}: it is not a scan written by "
                                "'tomodl simulate foam'")
        sel = slice(None) if rows is None else slice(*rows)
        gt = np.asarray(f[GT_DATASET][sel], dtype=np.float32)
        raw = f[SIM_GROUP].attrs.get("metadata", "{}")
    meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return gt, meta
