# SPDX-License-Identifier: BSD-3-Clause
"""Chunked, atomic, resumable volume writers (TIFF stack, HDF5, Zarr) with provenance.

A writer fills a ``(n_slices, ny, nx)`` float32 volume block by block::

    with open_writer("h5", "rec.h5", (n, N, N), provenance=prov, resume=True) as w:
        for start, block in chunks:          # skip ranges already in w.done
            w.write(start, block)
    # on a clean exit the volume appears as rec.h5; after an exception or SIGKILL it stays
    # in rec.h5.partial and a new writer with resume=True continues where it stopped

Nothing appears under the final name before every slice is written: data go to
``<final>.partial`` (a file for HDF5, a directory for TIFF and Zarr), the finished slice ranges
are recorded in ``<final>.progress.json`` (replaced atomically after the data are flushed), and
:meth:`VolumeWriter.finalize` renames the partial output to the final name.  That
format-independent machinery (:class:`VolumeWriter`, :func:`read_progress`,
:func:`resume_conflicts`) is in :mod:`tomodl.io.volume_writer`; this module holds the
per-format subclasses, :data:`SAVE_FORMATS` and the public entry points.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Tuple

import numpy as np

from tomodl.io.atomic import atomic_file, fsync_dir, temp_then_rename, write_json_atomic
from tomodl.io.ownership import MARK_ATTR
from tomodl.io.volume_writer import (RESUME_IGNORED_KEYS, VolumeWriter, read_progress,
                                     resume_conflicts)

__all__ = ["SAVE_FORMATS", "open_writer", "write_volume", "read_volume", "write_png", "write_tiff",
           "VolumeWriter",
           "H5Writer", "TiffWriter", "ZarrWriter", "read_progress", "resume_conflicts",
           "RESUME_IGNORED_KEYS"]


class H5Writer(VolumeWriter):
    """HDF5 ``/exchange/data`` float32 ``(z, y, x)``, chunks ``(1, ny, nx)``, ``axes="z:y:x"``.

    Storage is allocated when the dataset is created (no fill pass), so later slice writes never
    change HDF5 metadata and a killed process leaves a partial file that reopens cleanly.
    """

    fmt = "h5"
    dataset = "/exchange/data"

    def _create(self) -> None:
        import h5py

        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        self._file = h5py.File(self.partial, "w")
        self._dset = self._file.create_dataset(self.dataset, shape=self.shape, dtype="f4",
                                               chunks=(1,) + self.shape[1:], dcpl=dcpl)

    def _reopen(self) -> None:
        import h5py

        self._file = h5py.File(self.partial, "r+")
        self._dset = self._file[self.dataset]
        if self._dset.shape != self.shape:
            raise ValueError(f"{self.dataset} has shape {self._dset.shape}")

    def _write_block(self, start: int, block: np.ndarray) -> None:
        self._dset[start:start + len(block)] = block

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    def _close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None and f.id.valid:
            f.close()
        self._file = None

    def _write_provenance(self) -> None:
        attrs = self._file.attrs
        attrs[MARK_ATTR] = "volume"
        attrs["command"] = str(self.provenance.get("command", ""))
        attrs["axes"] = "z:y:x"
        attrs["provenance"] = self._prov_json()
        self._dset.attrs["axes"] = "z:y:x"
        self._dset.attrs["units"] = "attenuation per pixel"
        grp = self._file.require_group(f"/process/tomodl-{self.provenance['tomodl_version']}")
        for key, val in self.provenance.items():
            plain = isinstance(val, (str, int, float, bool))
            grp.attrs[key] = val if plain else json.dumps(val)


class TiffWriter(VolumeWriter):
    """A directory of ``recon_00000.tiff ...`` (one float32 slice each) and ``provenance.json``;
    each TIFF's ImageDescription holds the provenance JSON too."""

    fmt = "tiff"
    is_dir = True
    prefix = "recon_"

    def _name(self, i: int) -> str:
        return f"{self.prefix}{i:0{max(5, len(str(self.shape[0] - 1)))}d}.tiff"

    def _create(self) -> None:
        self.partial.mkdir()

    def _reopen(self) -> None:
        if not self.partial.is_dir():
            raise ValueError("not a directory")

    def _write_block(self, start: int, block: np.ndarray) -> None:
        import tifffile

        for i, img in enumerate(block, start):
            with temp_then_rename(self.partial / self._name(i)) as tmp:
                tifffile.imwrite(tmp, img, description=self._prov_json(), metadata=None)

    def _sync(self) -> None:
        fsync_dir(self.partial)

    def _close(self) -> None:
        pass

    def _write_provenance(self) -> None:
        write_json_atomic(self.partial / "provenance.json", self.provenance)


class ZarrWriter(VolumeWriter):
    """A Zarr array ``(z, y, x)`` float32 chunked ``(1, ny, nx)``; provenance in its attrs.

    Chunks are flushed by the zarr library when written (no fsync: safe against a killed
    process, not against a power cut between a write and the progress record)."""

    fmt = "zarr"
    is_dir = True

    def _create(self) -> None:
        import zarr

        self._arr = zarr.open_array(store=str(self.partial), mode="w", shape=self.shape,
                                    chunks=(1,) + self.shape[1:], dtype="float32")

    def _reopen(self) -> None:
        import zarr

        self._arr = zarr.open_array(store=str(self.partial), mode="r+")
        if tuple(self._arr.shape) != self.shape:
            raise ValueError(f"array has shape {self._arr.shape}")

    def _write_block(self, start: int, block: np.ndarray) -> None:
        self._arr[start:start + len(block)] = block

    def _sync(self) -> None:
        pass

    def _close(self) -> None:
        self._arr = None

    def _write_provenance(self) -> None:
        self._arr.attrs.update({"axes": "z:y:x", "command": self.provenance.get("command", ""),
                                "provenance": self.provenance})


#: Output formats: name -> writer class.
SAVE_FORMATS = {"tiff": TiffWriter, "h5": H5Writer, "zarr": ZarrWriter}


def open_writer(fmt: str, out_path: Any, shape: Tuple[int, int, int], *, provenance: Mapping,
                overwrite: bool = False, resume: Any = False,
                inputs: Iterable[Any] = ()) -> VolumeWriter:
    """Open a chunked, atomic, resumable writer for a ``(n_slices, ny, nx)`` float32 volume.

    Parameters
    ----------
    fmt : {"tiff", "h5", "zarr"}
        Output format (see :data:`SAVE_FORMATS`).
    out_path : str or Path
        Final output: an ``.h5`` file, or a directory for TIFF and Zarr.
    shape : tuple of 3 ints
        ``(n_slices, ny, nx)``.
    provenance : mapping
        JSON-able record (command line, algorithm, model and weights sha256, centre, filter,
        sparse factor, input file with size and mtime...) stored in the output.
    overwrite : bool
        Replace an existing final output (at :meth:`~VolumeWriter.finalize`) -- only one that
        tomodl wrote, a volume or a try-mode folder (:func:`tomodl.io.atomic.check_replace`);
        otherwise an existing output raises :class:`~tomodl.errors.OutputError` now, before
        any work.
    resume : bool or "auto"
        Continue a partial output left by an interrupted run with the same format, shape and
        provenance (keys in :data:`RESUME_IGNORED_KEYS` may differ); ``writer.done`` lists the
        slices already written.  ``True`` refuses a partial output started with other
        settings; ``"auto"`` discards it (with a warning) and starts again.  Without it a
        partial output is discarded.
    inputs : iterable of paths or (path, what)
        Inputs (the scan, the weights in use) that the output must never be nor hold
        (:func:`tomodl.io.atomic.check_replace`).
    """
    try:
        cls = SAVE_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"Unknown save format {fmt!r}; choose one of {sorted(SAVE_FORMATS)}"
                         ) from None
    return cls(out_path, shape, provenance=provenance, overwrite=overwrite, resume=resume,
               inputs=inputs)


def read_volume(path: Any, fmt: str) -> np.ndarray:
    """Read back a finished volume written by :func:`open_writer` (any of :data:`SAVE_FORMATS`).

    Parameters
    ----------
    path : path-like
        The output: an HDF5 file, a TIFF-stack directory (``recon_*.tiff``) or a Zarr store.
    fmt : str
        One of :data:`SAVE_FORMATS`.

    Returns
    -------
    ndarray, shape (n_slices, N, N), float32
    """
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"Unknown save format {fmt!r}; choose one of {sorted(SAVE_FORMATS)}")
    path = Path(path)
    if fmt == "h5":
        import h5py

        with h5py.File(path, "r") as f:
            return f["/exchange/data"][()]
    if fmt == "tiff":
        import tifffile

        return np.stack([tifffile.imread(p) for p in sorted(path.glob("recon_*.tiff"))])
    import zarr

    return zarr.open_array(store=str(path), mode="r")[...]


def write_volume(out_path: Any, volume, fmt: str = "h5", *, provenance: Mapping,
                 overwrite: bool = False, inputs: Iterable[Any] = ()) -> Path:
    """Write a whole in-memory ``(n_slices, ny, nx)`` volume atomically; return its path."""
    volume = np.asarray(volume, dtype=np.float32)
    writer = open_writer(fmt, out_path, volume.shape, provenance=provenance,
                         overwrite=overwrite, inputs=inputs)
    try:
        writer.write(0, volume)
        return writer.finalize()
    except BaseException:
        writer.abort()
        raise


def write_png(path: Any, image, *, vmin: Optional[float] = None, vmax: Optional[float] = None,
              percentiles: Tuple[float, float] = (1.0, 99.0), overwrite: bool = False) -> Path:
    """Save a 2-D image as an 8-bit grayscale PNG preview (atomically).

    ``vmin``/``vmax`` default to the given percentiles of the finite pixels (robust to a few
    hot pixels); NaN/Inf pixels are drawn black.  The PNG's ``Software`` text marks it as
    tomodl's, so ``overwrite`` may later replace it (and nothing else).
    """
    from PIL import Image, PngImagePlugin

    from tomodl.metrics import to_uint8

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"write_png needs a non-empty 2-D image, got shape {img.shape}")
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, percentiles) if finite.size else (0.0, 1.0)
    lo = float(lo if vmin is None else vmin)
    hi = float(hi if vmax is None else vmax)
    if not hi > lo:
        hi = lo + 1.0
    pixels = to_uint8(np.where(np.isfinite(img), img, lo), lo, hi)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", _software())
    with atomic_file(path, overwrite=overwrite, kinds=("image",)) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def write_tiff(path: Any, image, *, overwrite: bool = False) -> Path:
    """Save a 2-D image as a float32 TIFF (atomically), marked as tomodl's (Software tag)."""
    import tifffile

    with atomic_file(path, overwrite=overwrite, kinds=("image",)) as tmp:
        tifffile.imwrite(tmp, np.asarray(image, dtype=np.float32), software=_software())
    return Path(path)


def _software() -> str:
    from tomodl import __version__

    return f"tomodl {__version__}"
