# SPDX-License-Identifier: BSD-3-Clause
"""A quick look at a reconstruction: one PNG with the three orthogonal middle slices.

The volume pipeline never holds the whole volume, so :class:`PreviewCollector` keeps, as the
chunks are written, the middle row and the middle column of every slice (two ``(n_slices, N)``
images) and the middle slice itself; :func:`write_preview` lays them side by side (axial |
XZ | YZ, one grey scale) in an 8-bit PNG marked as tomodl's (:func:`tomodl.io.writers.write_png`),
written atomically next to the output (:func:`preview_path`).  Slices a resumed run did not
compute are read back from the output, one at a time.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Largest preview kept by default (bytes of the strips and the middle slice): above it
#: ``preview=None`` (auto) skips the preview.
AUTO_PREVIEW_BYTES = 256 * 2**20
#: Longest side (px) of each view in the PNG; larger volumes are shown shrunk (block means).
MAX_SIDE = 768
#: Black columns between the three views.
GAP = 4
_SUFFIXES = (".h5", ".hdf5", ".zarr", ".tif", ".tiff")


def preview_path(out) -> Path:
    """``<out without suffix>_preview.png`` next to the output (file, folder or store)."""
    out = Path(out)
    stem = out.stem if out.suffix.lower() in _SUFFIXES else out.name
    return out.with_name(stem + "_preview.png")


def preview_bytes(n_slices: int, n: int) -> int:
    """Memory the collector keeps for a ``(n_slices, n, n)`` volume (float32)."""
    return 4 * (2 * n_slices * n + n * n)


def orthogonal_slices(volume) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The middle slices of ``volume`` ``(n_slices, ny, nx)``: axial ``(ny, nx)`` (slice
    ``n_slices // 2``), XZ ``(n_slices, nx)`` (row ``ny // 2``), YZ ``(n_slices, ny)``
    (column ``nx // 2``), float32."""
    v = np.asarray(volume)
    if v.ndim != 3 or 0 in v.shape:
        raise ValueError(f"volume must be a non-empty 3-D array (n_slices, ny, nx), got shape "
                         f"{v.shape}")
    return (v[v.shape[0] // 2].astype(np.float32), v[:, v.shape[1] // 2, :].astype(np.float32),
            v[:, :, v.shape[2] // 2].astype(np.float32))


def _shrink(view: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` blocks (NaN-aware; a remainder is dropped)."""
    if factor == 1:
        return view
    h, w = view.shape[0] // factor, view.shape[1] // factor
    blocks = view[:h * factor, :w * factor].reshape(h, factor, w, factor)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(blocks, axis=(1, 3)).astype(np.float32)


def preview_image(axial, xz, yz, max_side: int = MAX_SIDE) -> np.ndarray:
    """The three views side by side (NaN-padded to one height, NaN gaps, drawn black), each
    shrunk by one integer factor so that no side exceeds ``max_side`` pixels."""
    views = [np.asarray(a, dtype=np.float32) for a in (axial, xz, yz)]
    factor = max(1, -(-max(max(v.shape) for v in views) // max_side))
    views = [_shrink(v, factor) for v in views]
    height = max(v.shape[0] for v in views)
    cols = []
    for v in views:
        pad = np.full((height, v.shape[1]), np.nan, np.float32)
        top = (height - v.shape[0]) // 2
        pad[top:top + v.shape[0]] = v
        cols += [pad, np.full((height, GAP), np.nan, np.float32)]
    return np.concatenate(cols[:-1], axis=1)


def write_preview(path, volume=None, *, views=None, overwrite: bool = False) -> Path:
    """Write the orthogonal middle slices of ``volume`` (or given ``views``: axial, XZ, YZ)
    as one PNG at ``path`` (atomic; replaces only a tomodl PNG, with ``overwrite``)."""
    from tomodl.io.writers import write_png

    if (volume is None) == (views is None):
        raise ValueError("give either volume (n_slices, ny, nx) or views (axial, xz, yz)")
    img = preview_image(*(orthogonal_slices(volume) if views is None else views))
    return write_png(path, img, overwrite=overwrite)


class PreviewCollector:
    """Keeps the middle row, the middle column and the middle slice of a ``(n_slices, n, n)``
    volume written chunk by chunk (:meth:`add`), then writes the PNG (:meth:`write`)."""

    def __init__(self, n_slices: int, n: int):
        self.n_slices, self.n = n_slices, n
        self.xz = np.full((n_slices, n), np.nan, np.float32)
        self.yz = np.full((n_slices, n), np.nan, np.float32)
        self.axial: Optional[np.ndarray] = None
        self.seen = np.zeros(n_slices, bool)

    def add(self, start: int, rec: np.ndarray) -> None:
        """Record slices ``start .. start + len(rec)`` (output indices) of a written chunk."""
        k = rec.shape[0]
        self.xz[start:start + k] = rec[:, self.n // 2, :]
        self.yz[start:start + k] = rec[:, :, self.n // 2]
        self.seen[start:start + k] = True
        mid = self.n_slices // 2
        if start <= mid < start + k:
            self.axial = np.array(rec[mid - start], dtype=np.float32)

    def fill(self, read_slice: Callable[[int], np.ndarray]) -> None:
        """Read the slices not seen (e.g. written by an interrupted run) with ``read_slice``."""
        for i in np.flatnonzero(~self.seen):
            self.add(int(i), np.asarray(read_slice(int(i)))[None])

    def write(self, path, *, overwrite: bool = True) -> Path:
        return write_preview(path, views=(self.axial, self.xz, self.yz), overwrite=overwrite)


def slice_reader(out, fmt: str) -> Callable[[int], np.ndarray]:
    """A function reading slice ``i`` of a finished output written by
    :func:`tomodl.io.open_writer` (one slice in memory at a time)."""
    out = Path(out)
    if fmt == "h5":
        def read(i: int) -> np.ndarray:
            import h5py

            with h5py.File(out, "r") as f:
                return f["/exchange/data"][i]
        return read
    if fmt == "tiff":
        files = sorted(out.glob("recon_*.tiff"))

        def read(i: int) -> np.ndarray:
            import tifffile

            return tifffile.imread(files[i])
        return read

    def read(i: int) -> np.ndarray:
        import zarr

        return zarr.open_array(store=str(out), mode="r")[i]
    return read
