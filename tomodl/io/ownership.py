# SPDX-License-Identifier: BSD-3-Clause
"""Recognise what tomodl wrote: the marks every output carries, read without trusting them.

``--overwrite`` (``overwrite=True``) may only replace an output that tomodl itself wrote; the
decision is :func:`tomodl.io.atomic.check_replace`, which asks :func:`identify` what an existing
path is.  The marks:

====================  ========================================================================
kind                  recognised by
====================  ========================================================================
``volume`` (HDF5)     root attribute ``tomodl_output="volume"`` or ``provenance`` (JSON with
                      ``tomodl_version``)
``volume`` (TIFF)     a folder holding ``provenance.json`` (with ``tomodl_version``) and only
                      ``recon_<n>.tiff`` slices
``volume`` (Zarr)     a store whose ``zarr.json`` / ``.zattrs`` attributes hold the provenance,
                      and only Zarr metadata and chunks
``try``               a folder holding ``sharpness.json`` and only ``center_<c>.tiff/.png``
``scan``              HDF5 root attribute ``tomodl_output="scan"`` (:func:`write_dx`) or the
                      ``/tomodl_sim`` metadata of a simulated scan
``pairs``             HDF5 root attribute ``tomodl_output="pairs"`` or ``metadata`` (JSON with
                      ``tomodl_version``)
``weights``           a folder holding a tomodl ``config.json`` and only ``model.safetensors``;
                      each of those two files inside such a folder
``image``             a TIFF whose Software tag starts with ``tomodl`` (or a volume slice with
                      the provenance in its description), a PNG whose ``Software`` text does
====================  ========================================================================

An empty file or folder holds nothing to lose and may always be replaced.  A folder is
tomodl's only if it holds nothing but what tomodl writes there (and tomodl's hidden temporary
files): a file of the user's inside an output folder makes it the user's.  Side files are read
only up to :data:`MAX_SIDE_FILE` bytes; anything unreadable is simply not recognised.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Tuple

#: Root attribute (HDF5) naming the kind of a tomodl output.
MARK_ATTR = "tomodl_output"
#: Kinds of output tomodl writes -> how messages name them.
KIND_NAMES = {"volume": "reconstructed volume", "try": "try-mode folder", "scan": "scan file",
              "pairs": "training-pairs file", "weights": "weights folder",
              "image": "image", "empty": "empty file or folder"}
#: Largest side file (JSON) read when recognising an output.
MAX_SIDE_FILE = 1 << 20

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_TEMP = re.compile(r"^\..+\.(tmp|tmp-\d+)$")               # tomodl's hidden temporaries
_MEMBERS = {
    "volume": re.compile(r"^(recon_\d+\.tiff|provenance\.json)$"),
    "zarr": re.compile(r"^(zarr\.json|\.zarray|\.zattrs|\.zgroup|c|\d+(\.\d+)*)$"),
    "try": re.compile(r"^(center_-?\d+\.\d+\.(tiff|png)|sharpness\.json)$"),
    "weights": re.compile(r"^(model\.safetensors|config\.json)$"),
}
_WEIGHTS_FILES = ("model.safetensors", "config.json")


def identify(path: Any) -> Tuple[Optional[str], str]:
    """What ``path`` is: ``(kind, "")`` for a tomodl output, else ``(None, why not)``.

    ``kind`` is a key of :data:`KIND_NAMES` ("empty" for an empty file or folder).  Symbolic
    links are never recognised (tomodl writes none).
    """
    p = Path(path)
    if p.is_symlink():
        return None, "it is a symbolic link"
    try:
        if p.is_dir():
            return _folder_kind(p)
        if p.is_file():
            return _file_kind(p)
    except (OSError, ValueError, RecursionError) as err:
        return None, f"it cannot be read ({type(err).__name__})"
    return None, "it is not a regular file or folder"


def read_small_json(path: Path) -> Optional[dict]:
    """A JSON object from a side file of at most :data:`MAX_SIDE_FILE` bytes, else None."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_SIDE_FILE:
            return None
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _by_tomodl(obj: Any) -> bool:
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError):
            return False
    return isinstance(obj, dict) and "tomodl_version" in obj


# -- folders ----------------------------------------------------------------------------------
def _foreign(folder: Path, pattern: "re.Pattern[str]", walk: bool = False) -> Optional[str]:
    """The first entry of ``folder`` that tomodl does not write there (None when all are)."""
    for entry in sorted(os.listdir(folder)):
        if _TEMP.match(entry):
            continue
        if not pattern.match(entry):
            return entry
        if walk and (folder / entry).is_dir():
            for root, dirs, files in os.walk(folder / entry):
                for name in dirs + files:
                    if not name.isdigit():
                        return str(Path(root, name).relative_to(folder))
    return None


def _folder_kind(p: Path) -> Tuple[Optional[str], str]:
    if not any(os.scandir(p)):
        return "empty", ""
    if _by_tomodl(read_small_json(p / "provenance.json")):
        kind, pattern, walk = "volume", _MEMBERS["volume"], False
    elif _zarr_provenance(p):
        kind, pattern, walk = "volume", _MEMBERS["zarr"], True
    elif {"sharpest", "centers"} <= set(read_small_json(p / "sharpness.json") or {}):
        kind, pattern, walk = "try", _MEMBERS["try"], False
    elif _weights_config(p):
        kind, pattern, walk = "weights", _MEMBERS["weights"], False
    else:
        return None, "no tomodl provenance in it"
    extra = _foreign(p, pattern, walk)
    if extra is not None:
        return None, f"it holds {extra!r}, which tomodl did not write"
    return kind, ""


def _zarr_provenance(p: Path) -> bool:
    meta = read_small_json(p / "zarr.json")
    attrs = (meta or {}).get("attributes") if meta else read_small_json(p / ".zattrs")
    return isinstance(attrs, dict) and _by_tomodl(attrs.get("provenance"))


def _weights_config(folder: Path) -> bool:
    cfg = read_small_json(folder / "config.json")
    return cfg is not None and {"arch", "model_args", "tomodl_version"} <= set(cfg)


# -- files ------------------------------------------------------------------------------------
def _file_kind(p: Path) -> Tuple[Optional[str], str]:
    if p.stat().st_size == 0:
        return "empty", ""
    if p.name in _WEIGHTS_FILES and _weights_config(p.parent):
        return "weights", ""
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head == _HDF5_MAGIC:
        kind = _hdf5_kind(p)
    elif head[:4] in _TIFF_MAGIC:
        kind = _tiff_kind(p)
    elif head == _PNG_MAGIC:
        kind = _png_kind(p)
    else:
        return None, "it is not a file format tomodl writes"
    return (kind, "") if kind else (None, "it carries no tomodl mark or provenance")


def _hdf5_kind(p: Path) -> Optional[str]:
    import h5py

    try:
        with h5py.File(p, "r") as f:
            mark = _small_attr(f, MARK_ATTR)
            if isinstance(mark, bytes):
                mark = mark.decode("utf-8", "replace")
            if mark in KIND_NAMES:
                return str(mark)
            if _by_tomodl(_small_attr(f, "provenance")):
                return "volume"
            if _by_tomodl(_small_attr(f, "metadata")):
                return "pairs"
            sim = f.get("tomodl_sim")
            if isinstance(sim, h5py.Group) and _by_tomodl(_small_attr(sim, "metadata")):
                return "scan"
    except (OSError, ValueError, TypeError, KeyError, RuntimeError):
        return None
    return None


def _small_attr(obj, name: str) -> Any:
    """Attribute ``name`` of an HDF5 object, unless absent or over :data:`MAX_SIDE_FILE`."""
    if name not in obj.attrs or obj.attrs.get_id(name).get_storage_size() > MAX_SIDE_FILE:
        return None
    return obj.attrs[name]


def _tiff_kind(p: Path) -> Optional[str]:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages.first
            software = page.tags.get("Software")
            if software is not None and str(software.value).startswith("tomodl"):
                return "image"
            return "image" if _by_tomodl(page.description) else None
    except (OSError, ValueError, tifffile.TiffFileError):
        return None


def _png_kind(p: Path) -> Optional[str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            return "image" if str(im.info.get("Software", "")).startswith("tomodl") else None
    except (OSError, ValueError, UnidentifiedImageError):
        return None


def unfinished(path: Any) -> bool:
    """True when ``path`` can be a working copy (``<out>.partial``) that tomodl left at any kill
    point: an HDF5 or empty file, or a folder holding only names that tomodl writes."""
    p = Path(path)
    if p.is_symlink():
        return False
    try:
        if p.is_file():
            with open(p, "rb") as fh:
                head = fh.read(8)
            return head in (b"", _HDF5_MAGIC)
        if p.is_dir():
            anything = re.compile("|".join(m.pattern for m in _MEMBERS.values()))
            return _foreign(p, anything, walk=True) is None
    except OSError:
        return False
    return False
