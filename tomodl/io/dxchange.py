# SPDX-License-Identifier: BSD-3-Clause
"""Read DXchange and NeXus NXtomo scans; write DXchange files.

This is the only place in tomodl where units and dtypes are converted: angles become float32
radians and detector counts (uint16, int, float64, big-endian...) become float32.  Files are
always opened read-only, and only the requested hyperslab is read.

DXchange layout (APS): ``/exchange/data`` projections ``(n_angles, n_rows, n_det)``,
``/exchange/data_white`` flats, ``/exchange/data_dark`` darks, ``/exchange/theta`` angles with a
``units`` attribute.  NeXus NXtomo is described in :mod:`tomodl.io.nexus`.  The layout is
detected automatically.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Optional, Tuple

import h5py
import numpy as np

from tomodl.io._hdf import (NONFINITE_POLICIES, Frames, Layout, check_dark_flat, check_finite,
                            check_stack, default_theta, get_dataset, open_readonly, parse_range,
                            read_attr, read_frames, reading, scan_error, theta_to_radians)
from tomodl.io.atomic import atomic_file, jsonable
from tomodl.io.nexus import find_data, nexus_layout
from tomodl.io.ownership import MARK_ATTR

logger = logging.getLogger(__name__)

DX_DATA = "/exchange/data"
DX_FLAT = "/exchange/data_white"
DX_DARK = "/exchange/data_dark"
DX_THETA = "/exchange/theta"
#: ``theta_units`` accepted by :func:`write_dx` -> (factor from radians, ``units`` attribute).
WRITE_THETA_UNITS = {"deg": (180.0 / np.pi, "degrees"), "rad": (1.0, "radians")}
#: Target size of one ``/exchange/data`` chunk written by :func:`write_dx` (bytes).
CHUNK_BYTES = 4 * 2**20
#: Root attributes that say what the projections hold, and the values that mean "line
#: integrals, already ``-log``'d" (as TomoBank-derived and tomopyui files mark them).
VALUES_ATTRS = ("normalisation", "normalization")
LINE_INTEGRAL_MARKS = ("minus_log", "-log", "line_integrals", "line-integrals")


class Scan(NamedTuple):
    """A scan in memory; unpacks like dxchange's ``proj, flat, dark, theta = ...``.

    Attributes
    ----------
    proj : ndarray, float32, shape (n_angles, n_rows, n_det)
        Projections in detector counts.
    flat, dark : ndarray, float32, shape (n_flat, n_rows, n_det), or None
        Flat (white) and dark fields, same rows as ``proj``; None when the file has none.
    theta : ndarray, float32, shape (n_angles,)
        Rotation angles in radians.
    """

    proj: np.ndarray
    flat: Optional[np.ndarray]
    dark: Optional[np.ndarray]
    theta: np.ndarray


@dataclass(frozen=True, eq=False)
class ScanInfo:
    """What a scan file holds, read without touching pixel data (for planning chunks).

    ``theta`` is float32 radians, ``dtype`` the on-disk dtype of the frames, ``file_size`` in
    bytes and ``mtime`` in seconds since the epoch.  ``line_integrals``: the file has no flats
    and a root attribute marks its projections as ``-log``'d line integrals
    (:func:`marked_line_integrals`).
    """

    path: Path
    layout: str
    n_angles: int
    n_rows: int
    n_det: int
    dtype: str
    has_flat: bool
    has_dark: bool
    n_flat: int
    n_dark: int
    theta: np.ndarray = field(repr=False)
    file_size: int
    mtime: float
    line_integrals: bool = False

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(n_angles, n_rows, n_det)`` of the projections."""
        return (self.n_angles, self.n_rows, self.n_det)

    def provenance(self) -> dict:
        """``{"file", "size", "mtime", "layout"}`` for an output's provenance record."""
        return {"file": str(self.path.resolve()), "size": self.file_size,
                "mtime": self.mtime, "layout": self.layout}


def _optional(f: h5py.File, name: str, data: h5py.Dataset, path: Any, what: str
              ) -> Optional[Frames]:
    dset = get_dataset(f, name, path)
    if dset is None or not check_dark_flat(dset, data.shape, path, what, data.name):
        return None
    return Frames(name, np.arange(dset.shape[0]))


def _dx_theta(f: h5py.File, n: int, path: Any) -> np.ndarray:
    dset = get_dataset(f, DX_THETA, path)
    if dset is None:
        return default_theta(n, path)
    with reading(path, DX_THETA):
        values = np.asarray(dset[()]).ravel()
    if values.size != n:
        raise scan_error(path, f"{DX_THETA} has {values.size} angles but {DX_DATA} has {n} "
                         "projections", "write one angle per projection")
    return theta_to_radians(values, read_attr(dset, "units", path), path, DX_THETA)


def dxchange_layout(f: h5py.File, path: Any) -> Layout:
    """Describe the DXchange scan in ``f`` (validates shapes and angles, reads no pixels)."""
    data = get_dataset(f, DX_DATA, path)
    if data is None:      # listed but not readable: a damaged group (seen on corrupt files)
        raise scan_error(path, f"cannot open {DX_DATA}; the file is truncated or corrupt",
                         "copy the file again from its source")
    check_stack(data, path, "projections")
    n = int(data.shape[0])
    return Layout(name="dxchange", proj=Frames(DX_DATA, np.arange(n)),
                  flat=_optional(f, DX_FLAT, data, path, "flats"),
                  dark=_optional(f, DX_DARK, data, path, "darks"),
                  theta=_dx_theta(f, n, path), n_rows=int(data.shape[1]),
                  n_det=int(data.shape[2]), dtype=str(data.dtype))


@contextlib.contextmanager
def open_scan(path: Any) -> Iterator[Tuple[h5py.File, Layout]]:
    """Open a scan read-only and detect its layout (DXchange first, then NeXus NXtomo)."""
    with open_readonly(path) as f:
        with reading(path, DX_DATA):
            is_dx = DX_DATA in f
        if is_dx:
            yield f, dxchange_layout(f, path)
            return
        nx_data = find_data(f)
        if nx_data is None:
            raise scan_error(path, f"has no {DX_DATA} (DXchange) and no /entry/data/data "
                             "(NeXus NXtomo) dataset", "pass a tomography scan file")
        yield f, nexus_layout(f, nx_data, path)


def _marked(f: h5py.File, path: Any) -> bool:
    for key in VALUES_ATTRS:
        value = read_attr(f, key, path)
        if value is not None and value.lower() in LINE_INTEGRAL_MARKS:
            return True
    return False


def marked_line_integrals(path: Any) -> bool:
    """Whether the file's root attribute ``normalisation`` (or ``normalization``) marks its
    projections as line integrals (``"minus_log"``, ``"-log"``, ``"line_integrals"``): data
    already flat-field corrected and ``-log``'d, read as they are."""
    with open_readonly(path) as f:
        return _marked(f, path)


def scan_info(path: Any) -> ScanInfo:
    """Describe a scan file without reading pixel data.

    Parameters
    ----------
    path : str or Path
        DXchange or NeXus NXtomo HDF5 file.

    Returns
    -------
    ScanInfo
        Shapes, on-disk dtype, flats/darks present, theta (float32 radians), layout name,
        file size and modification time.
    """
    path = Path(path)
    with open_scan(path) as (f, lay):
        stat = path.stat()
        return ScanInfo(path=path, layout=lay.name, n_angles=int(lay.proj.index.size),
                        n_rows=lay.n_rows, n_det=lay.n_det, dtype=lay.dtype,
                        has_flat=lay.flat is not None, has_dark=lay.dark is not None,
                        n_flat=0 if lay.flat is None else int(lay.flat.index.size),
                        n_dark=0 if lay.dark is None else int(lay.dark.index.size),
                        theta=lay.theta, file_size=int(stat.st_size), mtime=stat.st_mtime,
                        line_integrals=lay.flat is None and _marked(f, path))


def _read(f: h5py.File, frames: Optional[Frames], index: Optional[np.ndarray], rows: slice,
          nonfinite: str, path: Any, what: str) -> Optional[np.ndarray]:
    if frames is None:
        return None
    with reading(path, frames.dataset):
        dset = f[frames.dataset]
    arr = read_frames(dset, frames.index if index is None else index, rows, path)
    if dset.dtype.kind == "f":
        check_finite(arr, nonfinite, path, f"{what} {frames.dataset}")
    return arr


def read_dx(path: Any, proj: Any = None, sino: Any = None, *, nonfinite: str = "raise") -> Scan:
    """Read projections, flats, darks and angles from a DXchange or NeXus NXtomo file.

    Parameters
    ----------
    path : str or Path
        Scan file, opened read-only.  The layout is detected automatically.
    proj : (start, stop) or (start, stop, step) or slice, optional
        Projections (angles) to read; Python slicing rules, ``stop`` clipped.  Default all.
    sino : (start, stop) or (start, stop, step) or slice, optional
        Detector rows (sinograms) to read, for projections, flats and darks.  Default all.
    nonfinite : {"raise", "warn"}
        NaN/Inf in float data: raise :class:`~tomodl.errors.ScanFileError` naming the count
        (default; one NaN spreads over a whole slice after filtering), or log a warning.

    Returns
    -------
    Scan
        ``(proj, flat, dark, theta)``: float32 ``(n, rows, det)`` arrays (flat/dark None when
        absent) and theta float32 radians ``(n_angles,)``.

    Raises
    ------
    ScanFileError
        Missing, non-HDF5, truncated or malformed file (one line naming the file and dataset).
    SelectionError
        ``proj``/``sino`` select nothing or are malformed.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"Unknown nonfinite={nonfinite!r}; choose one of {NONFINITE_POLICIES}")
    with open_scan(path) as (f, lay):
        psel = parse_range(proj, lay.proj.index.size, "proj", path)
        rsel = parse_range(sino, lay.n_rows, "sino", path)
        projs = _read(f, lay.proj, lay.proj.index[psel], rsel, nonfinite, path, "projections")
        flat = _read(f, lay.flat, None, rsel, nonfinite, path, "flats")
        dark = _read(f, lay.dark, None, rsel, nonfinite, path, "darks")
    return Scan(projs, flat, dark, np.ascontiguousarray(lay.theta[psel]))


def sinogram_chunks(shape: Tuple[int, int, int], itemsize: int,
                    target: int = CHUNK_BYTES) -> Tuple[int, int, int]:
    """HDF5 chunk shape for a projection stack, favouring sinogram (row-range) reads.

    A chunk holds every angle and full detector width for 1..8 rows (about ``target`` bytes),
    so a read of ``sino=(a, b)`` touches only chunks of those rows.  When one row of all angles
    exceeds ``target``, the angle axis is split instead.
    """
    n_ang, n_rows, n_det = (max(1, int(s)) for s in shape)
    row_bytes = n_ang * n_det * itemsize
    if row_bytes > target:
        return (max(1, min(n_ang, target // (n_det * itemsize))), 1, n_det)
    return (n_ang, int(min(n_rows, 8, max(1, target // row_bytes))), n_det)


def _check_write_args(proj, flat, dark, theta, theta_units):
    if theta_units not in WRITE_THETA_UNITS:
        raise ValueError(f"Unknown theta_units {theta_units!r}; choose one of "
                         f"{sorted(WRITE_THETA_UNITS)}")
    proj = np.asarray(proj)
    if proj.ndim != 3 or proj.size == 0:
        raise ValueError(f"proj must be a non-empty (n_angles, n_rows, n_det) array, got shape "
                         f"{proj.shape}")
    theta = np.asarray(theta, dtype=np.float64).ravel()
    if theta.size != proj.shape[0]:
        raise ValueError(f"theta has {theta.size} angles but proj has {proj.shape[0]} projections")
    for name, arr in (("flat", flat), ("dark", dark)):
        if arr is not None and (np.ndim(arr) != 3 or np.shape(arr)[1:] != proj.shape[1:]):
            raise ValueError(f"{name} must be (n, {proj.shape[1]}, {proj.shape[2]}) to match "
                             f"proj, got shape {np.shape(arr)}")
    return proj, theta


def _write_extra(f: h5py.File, extra: Mapping[str, Any]) -> None:
    """``extra``: path -> array (a dataset) or path -> mapping (attributes of a group; dicts and
    lists are stored as JSON strings)."""
    for name, value in extra.items():
        if not str(name).startswith("/"):
            raise ValueError(f"extra keys must be absolute HDF5 paths like '/tomodl_sim/x', got "
                             f"{name!r}")
        if isinstance(value, Mapping):
            grp = f.require_group(name)
            for key, val in value.items():
                val = jsonable(val)
                grp.attrs[key] = json.dumps(val) if isinstance(val, (dict, list)) else val
        else:
            f.create_dataset(name, data=np.asarray(value))


def write_dx(path: Any, proj, flat, dark, theta, *, theta_units: str = "deg",
             extra: Optional[Mapping[str, Any]] = None, overwrite: bool = False) -> Path:
    """Write a DXchange file atomically (complete under its final name, or not at all).

    Parameters
    ----------
    path : str or Path
        Output ``.h5`` file.  An existing file is replaced only with ``overwrite=True``.
    proj : ndarray, shape (n_angles, n_rows, n_det)
        Projections, stored with their own dtype (e.g. uint16 counts or float32).
    flat, dark : ndarray, shape (n, n_rows, n_det), or None
        Flat and dark fields (None: not written).
    theta : ndarray, shape (n_angles,)
        Angles **in radians** (tomodl's in-memory unit); stored in ``theta_units``.
    theta_units : {"deg", "rad"}
        Units on disk (``/exchange/theta`` ``units`` attribute ``degrees``/``radians``).
    extra : mapping, optional
        ``{"/group/dataset": array}`` adds datasets, ``{"/group": {"key": value}}`` sets
        attributes (dicts and lists as JSON strings), e.g. ground truth of a simulation.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The written file.  ``/exchange/data`` is chunked for sinogram reads
        (:func:`sinogram_chunks`).
    """
    proj, theta = _check_write_args(proj, flat, dark, theta, theta_units)
    factor, units = WRITE_THETA_UNITS[theta_units]
    with atomic_file(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[MARK_ATTR] = "scan"             # what --overwrite may replace (io.ownership)
        f.create_dataset("implements", data="exchange")
        data = f.create_dataset(DX_DATA, data=proj,
                                chunks=sinogram_chunks(proj.shape, proj.dtype.itemsize))
        data.attrs["axes"] = "theta:y:x"
        for name, arr in ((DX_FLAT, flat), (DX_DARK, dark)):
            if arr is not None:
                f.create_dataset(name, data=np.asarray(arr)).attrs["axes"] = "theta:y:x"
        f.create_dataset(DX_THETA, data=theta * factor).attrs["units"] = units
        _write_extra(f, extra or {})
    logger.info("wrote %s (%s projections %s)", path, proj.shape, proj.dtype)
    return Path(path)

