# SPDX-License-Identifier: BSD-3-Clause
"""NeXus NXtomo layout: one frame stack with an ``image_key`` (0 projection, 1 flat, 2 dark).

Searched, in this order, inside each top-level entry (``NXentry``; ``/entry`` first):

- frames: ``data/data``, then ``instrument/detector/data``;
- image key: ``instrument/detector/image_key``, then ``data/image_key``
  (missing: every frame is a projection, with a warning);
- rotation angle: ``sample/rotation_angle``, then ``data/rotation_angle``, with a ``units``
  attribute (NeXus writes ``degree``); one value per frame or one per projection.

Only the layout is read here (keys and angles, never pixels); :mod:`tomodl.io.dxchange` reads
the pixels with the same hyperslab code as DXchange files.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import h5py
import numpy as np

from tomodl.io._hdf import (Frames, Layout, check_stack, default_theta, get_dataset,
                            read_attr, reading, scan_error, theta_to_radians)

logger = logging.getLogger(__name__)

DATA_PATHS = ("data/data", "instrument/detector/data")
KEY_PATHS = ("instrument/detector/image_key", "data/image_key")
ANGLE_PATHS = ("sample/rotation_angle", "data/rotation_angle")
#: NXtomo ``image_key`` values.
IMAGE_KEYS = {"projection": 0, "flat": 1, "dark": 2}


def _entries(f: h5py.File) -> list:
    """Top-level groups, ``entry`` first, then other NXentry groups, then the rest."""
    names = [n for n in f if isinstance(f.get(n, getlink=False), h5py.Group)]

    def rank(name: str) -> int:
        if name == "entry":
            return 0
        return 1 if read_attr(f[name], "NX_class", f.filename) == "NXentry" else 2

    return sorted(names, key=rank)


def find_data(f: h5py.File) -> Optional[str]:
    """Absolute path of the NXtomo frame stack, or None when the file is not NXtomo-like."""
    for entry in _entries(f):
        for rel in DATA_PATHS:
            name = f"/{entry}/{rel}"
            with reading(f.filename, name):
                if isinstance(f.get(name), h5py.Dataset):
                    return name
    return None


def _first(f: h5py.File, entry: str, paths: tuple, path: Any) -> Optional[h5py.Dataset]:
    for rel in paths:
        dset = get_dataset(f, f"/{entry}/{rel}", path)
        if dset is not None:
            return dset
    return None


def _image_key(f: h5py.File, entry: str, n_frames: int, data_name: str, path: Any) -> np.ndarray:
    dset = _first(f, entry, KEY_PATHS, path)
    if dset is None:
        logger.warning("%s: no image_key next to %s; treating all %d frames as projections",
                       path, data_name, n_frames)
        return np.zeros(n_frames, dtype=np.int64)
    with reading(path, dset.name):
        key = np.asarray(dset[()]).ravel().astype(np.int64)
    if key.size != n_frames:
        raise scan_error(path, f"{dset.name} has {key.size} values but {data_name} has "
                         f"{n_frames} frames", "write one image_key per frame")
    return key


def _theta(f: h5py.File, entry: str, key: np.ndarray, path: Any) -> np.ndarray:
    n_proj = int(np.sum(key == IMAGE_KEYS["projection"]))
    dset = _first(f, entry, ANGLE_PATHS, path)
    if dset is None:
        return default_theta(n_proj, path)
    with reading(path, dset.name):
        values = np.asarray(dset[()], dtype=np.float64).ravel()
    if values.size == key.size:
        values = values[key == IMAGE_KEYS["projection"]]
    elif values.size != n_proj:
        raise scan_error(path, f"{dset.name} has {values.size} angles but the file has "
                         f"{key.size} frames of which {n_proj} are projections",
                         "write one rotation angle per frame or per projection")
    return theta_to_radians(values, read_attr(dset, "units", path), path, dset.name)


def nexus_layout(f: h5py.File, data_name: str, path: Any) -> Layout:
    """Describe the NXtomo scan whose frame stack is ``data_name`` (see :func:`find_data`)."""
    entry = data_name.strip("/").split("/")[0]
    data = get_dataset(f, data_name, path)
    check_stack(data, path, "frame stack")
    key = _image_key(f, entry, data.shape[0], data_name, path)
    frames = {k: np.flatnonzero(key == v) for k, v in IMAGE_KEYS.items()}
    if frames["projection"].size == 0:
        raise scan_error(path, f"{data_name} has no projections (image_key 0) among its "
                         f"{key.size} frames", "use a file that contains the projections")
    theta = _theta(f, entry, key, path)

    def part(kind: str) -> Optional[Frames]:
        return Frames(data_name, frames[kind]) if frames[kind].size else None

    return Layout(name="nexus", proj=Frames(data_name, frames["projection"]), flat=part("flat"),
                  dark=part("dark"), theta=theta, n_rows=int(data.shape[1]),
                  n_det=int(data.shape[2]), dtype=str(data.dtype))
