# SPDX-License-Identifier: BSD-3-Clause
"""Shared low-level HDF5 reading: read-only opening with clear errors, range parsing, theta units
and hyperslab reads of selected frames/rows into float32.  Used by the DXchange and NeXus layouts.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import h5py
import numpy as np

from tomodl.errors import ScanFileError, SelectionError, TomodlError
from tomodl.io.atomic import one_line

logger = logging.getLogger(__name__)

#: Accepted values of a theta ``units`` attribute (case-insensitive) -> factor to radians.
THETA_UNITS = {
    "deg": np.pi / 180.0,
    "degree": np.pi / 180.0,
    "degrees": np.pi / 180.0,
    "rad": 1.0,
    "radian": 1.0,
    "radians": 1.0,
}
#: Angles whose max |theta| exceeds ``2*pi + THETA_TOLERANCE`` without units are read as degrees.
THETA_TOLERANCE = 1e-3
#: Angles whose max |theta| exceeds this in radians (two turns) are degrees mislabelled.
MAX_RADIANS = 4 * np.pi
#: What to do with NaN/Inf pixels in float data: raise ScanFileError, or log a warning.
NONFINITE_POLICIES = ("raise", "warn")
#: What h5py raises on damaged files (bad heaps, object headers, B-trees, filters, a datatype
#: numpy cannot represent).
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@dataclass(frozen=True)
class Frames:
    """Frames of one kind (projections, flats or darks): a dataset and indices along its axis 0."""

    dataset: str
    index: np.ndarray


@dataclass(frozen=True, eq=False)
class Layout:
    """Where a scan's pieces live inside an open HDF5 file; built without reading pixel data."""

    name: str
    proj: Frames
    flat: Optional[Frames]
    dark: Optional[Frames]
    theta: np.ndarray
    n_rows: int
    n_det: int
    dtype: str


def scan_error(path: Any, what: str, fix: str, cli_fix: Optional[str] = None) -> ScanFileError:
    """One-line :class:`ScanFileError` naming the file, the problem and the fix (``cli_fix``:
    the advice for a command-line user where ``fix`` names a Python argument)."""
    return ScanFileError(one_line(f"Scan file {str(path)!r}: {what}"), fix=one_line(fix),
                         cli_fix=None if cli_fix is None else one_line(cli_fix))


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", locking="best-effort")
    except (TypeError, ValueError):  # old h5py / HDF5 without best-effort locking
        return h5py.File(path, "r")


@contextlib.contextmanager
def open_readonly(path: Any) -> Iterator[h5py.File]:
    """Open ``path`` read-only; missing, non-HDF5, truncated or unreadable files raise
    :class:`ScanFileError` with one line naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise scan_error(path, "the file does not exist", "check the path")
    if path.is_dir():
        raise scan_error(path, "is a directory, not an HDF5 file", "pass the scan's .h5 file")
    if not os.access(path, os.R_OK):
        raise scan_error(path, "permission denied", "check the file permissions")
    if not h5py.is_hdf5(path):
        raise scan_error(path, "is not an HDF5 file (no HDF5 signature)",
                         "pass a DXchange or NeXus .h5 file")
    try:
        f = _open_h5(path)
    except HDF5_ERRORS as err:
        raise scan_error(path, f"cannot be opened, it is truncated or corrupt (HDF5: {err})",
                         "copy the file again from its source") from err
    with f, reading(path, None):
        yield f


@contextlib.contextmanager
def reading(path: Any, dataset: Optional[str]) -> Iterator[None]:
    """The one place where h5py failures (truncated chunks, bad filters, a damaged heap or object
    header) become a :class:`ScanFileError` naming the file and ``dataset`` (None: the file's
    metadata, the fallback of :func:`open_readonly` for anything read outside a narrower
    ``reading``)."""
    try:
        yield
    except TomodlError:
        raise                     # already names the file and the fix
    except HDF5_ERRORS as err:
        what = "its metadata" if dataset is None else f"dataset {dataset}"
        raise scan_error(path, f"cannot read {what} (HDF5: {_h5_message(err)}); the file is "
                         "truncated or corrupt", "copy the file again from its source") from err


def _h5_message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def read_attr(obj: Any, key: str, path: Any) -> Optional[str]:
    """Attribute ``key`` of an HDF5 object as ``str`` (:func:`decode_attr`), or None."""
    with reading(path, f"{obj.name} (attribute {key!r})"):
        return decode_attr(obj.attrs.get(key))


def get_dataset(f: h5py.File, name: str, path: Any) -> Optional[h5py.Dataset]:
    """Return dataset ``name`` or None when absent; a group under that name is an error."""
    with reading(path, name):
        obj = f.get(name)
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset):
        raise scan_error(path, f"{name} is a group, not a dataset", "check the file layout")
    return obj


def check_stack(dset: h5py.Dataset, path: Any, what: str) -> None:
    """Require a non-empty numeric 3-D ``(frames, rows, columns)`` dataset."""
    if dset.ndim != 3:
        raise scan_error(path, f"{what} {dset.name} has {dset.ndim} dimensions (shape "
                         f"{dset.shape}), expected 3 (angles, rows, columns)",
                         "write the stack as a 3-D array")
    if dset.dtype.kind not in "uif":
        raise scan_error(path, f"{what} {dset.name} has non-numeric dtype {dset.dtype}",
                         "store counts as integers or floats")
    if dset.size == 0:
        raise scan_error(path, f"{what} {dset.name} is empty (shape {dset.shape})",
                         "the acquisition wrote no frames; use a complete scan")


def check_dark_flat(dset: h5py.Dataset, data_shape: Tuple[int, ...], path: Any, what: str,
                    data_name: str) -> bool:
    """Validate a flat/dark stack against the projections; False when it has no frames."""
    if dset.ndim != 3:
        raise scan_error(path, f"{what} {dset.name} has {dset.ndim} dimensions (shape "
                         f"{dset.shape}), expected 3", "write flats/darks as (n, rows, columns)")
    if dset.shape[0] == 0:
        logger.warning("%s: %s %s has no frames; treating it as absent", path, what, dset.name)
        return False
    if tuple(dset.shape[1:]) != tuple(data_shape[1:]):
        raise scan_error(path, f"{what} {dset.name} has rows x columns {tuple(dset.shape[1:])} "
                         f"but {data_name} has {tuple(data_shape[1:])}",
                         f"the {what} must come from the same detector region as the projections")
    return True


def parse_range(arg: Any, n: int, name: str, path: Any) -> slice:
    """Turn ``None | (start, stop) | (start, stop, step) | slice`` into a non-empty slice of
    ``range(n)`` (Python slicing rules: negative indices count from the end, stop is clipped)."""
    if arg is None:
        return slice(0, n, 1)
    if isinstance(arg, slice):
        parts = (arg.start, arg.stop, arg.step)
    else:
        try:
            parts = tuple(arg)
        except TypeError:
            parts = ()
        if len(parts) not in (2, 3):
            raise SelectionError(f"{name}={arg!r} for {str(path)!r} must be (start, stop) or "
                                 f"(start, stop, step)")
        parts = parts + (None,) * (3 - len(parts))
    try:
        parts = tuple(None if p is None else int(p) for p in parts)
    except (TypeError, ValueError):
        raise SelectionError(f"{name}={arg!r} for {str(path)!r} must contain integers") from None
    if parts[2] is not None and parts[2] <= 0:
        raise SelectionError(f"{name}={arg!r} for {str(path)!r} has step {parts[2]}; the step "
                             "must be a positive integer")
    start, stop, step = slice(*parts).indices(n)
    if len(range(start, stop, step)) == 0:
        raise SelectionError(f"{name}={arg!r} selects nothing from {str(path)!r}, which has {n} "
                             f"{'projections' if name == 'proj' else 'detector rows'}; pass "
                             f"0 <= start < stop <= {n}")
    return slice(start, stop, step)


def decode_attr(value: Any) -> Optional[str]:
    """Attribute value as ``str`` (bytes, numpy strings and 1-element arrays too), or None."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.ravel()[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def theta_to_radians(values: np.ndarray, units: Optional[str], path: Any, name: str) -> np.ndarray:
    """Convert angles to float32 radians using ``units``; infer and warn when units are missing."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(values)):
        raise scan_error(path, f"{name} contains {int(np.sum(~np.isfinite(values)))} NaN/Inf "
                         "angles", "fix the rotation angles in the file")
    if units:
        key = units.lower()
        if key not in THETA_UNITS:
            raise scan_error(path, f"{name} has units {units!r}",
                             f"set its 'units' attribute to one of {sorted(THETA_UNITS)}")
        rad = values * THETA_UNITS[key]
        if rad.size and np.max(np.abs(rad)) > MAX_RADIANS:
            raise scan_error(path, f"{name} has units {units!r} but max |theta| = "
                             f"{np.max(np.abs(values)):.4g}, more than two turns: the values "
                             "look like degrees", "set its 'units' attribute to 'deg'")
        return rad.astype(np.float32)
    big = values.size and np.max(np.abs(values)) > 2 * np.pi + THETA_TOLERANCE
    logger.warning("%s: %s has no 'units' attribute; reading it as %s (max |theta| = %.4g); set "
                   "units='deg' or 'rad' to silence this", path, name,
                   "degrees" if big else "radians", np.max(np.abs(values)) if values.size else 0)
    return (np.deg2rad(values) if big else values).astype(np.float32)


def default_theta(n: int, path: Any) -> np.ndarray:
    """Equal steps over ``[0, pi)`` (float32 radians), with a warning that theta was missing."""
    logger.warning("%s: no rotation angles in the file; assuming %d equal steps over [0, pi)",
                   path, n)
    return np.linspace(0.0, np.pi, n, endpoint=False).astype(np.float32)


def _ap_runs(index: np.ndarray) -> List[Tuple[int, int, int, int]]:
    """Split increasing frame indices into arithmetic runs ``(pos, count, first, step)``."""
    runs, i, n = [], 0, index.size
    while i < n:
        step = int(index[i + 1] - index[i]) if i + 1 < n else 1
        j = i + 1
        while j < n and index[j] - index[j - 1] == step:
            j += 1
        runs.append((i, j - i, int(index[i]), step))
        i = j
    return runs


def read_frames(dset: h5py.Dataset, index: np.ndarray, rows: slice, path: Any) -> np.ndarray:
    """Read frames ``index`` (increasing) and detector ``rows`` of a 3-D dataset as float32.

    Only the requested hyperslabs are read: each arithmetic run of frame indices is one strided
    HDF5 selection, converted to float32 by HDF5 straight into the output array.
    """
    n_rows = len(range(*rows.indices(dset.shape[1])))
    out = np.empty((index.size, n_rows, dset.shape[2]), dtype=np.float32)
    with reading(path, dset.name):
        for pos, count, first, step in _ap_runs(np.asarray(index, dtype=np.int64)):
            src = np.s_[first:first + (count - 1) * step + 1:step, rows, :]
            dset.read_direct(out, source_sel=src, dest_sel=np.s_[pos:pos + count])
    return out


def check_finite(arr: np.ndarray, policy: str, path: Any, name: str) -> None:
    """Apply the NaN/Inf ``policy`` (see :data:`NONFINITE_POLICIES`) to float data just read."""
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad == 0:
        return
    what = f"{name} contains {bad} NaN/Inf values out of {arr.size}"
    if policy == "raise":
        raise scan_error(path, what, "repair the data, or pass nonfinite='warn' to read it anyway",
                         cli_fix="repair the data: one NaN spreads over a whole slice after "
                                 "filtering")
    logger.warning("%s: %s", path, what)
