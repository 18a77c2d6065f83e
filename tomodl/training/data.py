# SPDX-License-Identifier: BSD-3-Clause
"""Training data from pairs files: normalized slices, seeded crops and augmentation.

Every random choice of an epoch (the order of the slices, the crop offsets, the flips and the
90-degree rotations) is drawn from ``numpy.random.default_rng([seed, epoch])`` for the *global*
batch, before it is split across processes.  So an epoch is the same whether it runs in one
process or in several, and a resumed run sees exactly the data an uninterrupted run would see.

Inputs and targets are normalized exactly as at inference (:mod:`tomodl.normalization`): the
per-slice ``(lo, hi)`` come from the FBP input, and the target uses the same affine map.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from tomodl.errors import PairsFileError
from tomodl.normalization import Policy
from tomodl.sim.pairs import SPLITS  # noqa: F401  (re-exported: the pairs file's groups)

logger = logging.getLogger(__name__)


def open_pairs(path: str) -> h5py.File:
    """Open a pairs file read-only; a missing, non-HDF5 or corrupt file is one
    :class:`PairsFileError` line naming the file and the fix."""
    if not os.path.isfile(path):
        raise PairsFileError(f"{path}: no such pairs file; make one with `tomodl simulate pairs`")
    if not h5py.is_hdf5(path):
        raise PairsFileError(f"{path}: not an HDF5 pairs file (no HDF5 signature); make one "
                             "with `tomodl simulate pairs`")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise PairsFileError(f"{path}: cannot be opened, it is truncated or corrupt ({err}); "
                             "make it again with `tomodl simulate pairs`") from None


def read_metadata(path: str) -> Dict:
    """The JSON ``metadata`` root attribute of a pairs file (``{}`` when absent)."""
    with open_pairs(path) as f:
        raw = f.attrs.get("metadata")
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise PairsFileError(f"{path}: root attribute 'metadata' is not JSON ({err})") from None


def policy_for(paths: Sequence[str], explicit: Optional[Dict] = None) -> Policy:
    """The normalization policy: ``explicit``, else the first pairs file's, else the default."""
    if explicit:
        return Policy.from_dict(dict(explicit))
    for p in paths:
        d = read_metadata(p).get("normalization")
        if d:
            return Policy.from_dict(d)
    return Policy()


def split_shape(path: str, split: str) -> Tuple[int, int, int]:
    """``(n, H, W)`` of a split, checking that ``input`` and ``target`` exist and agree."""
    with open_pairs(path) as f:
        if split not in f:
            raise PairsFileError(f"{path}: no group /{split}; the pairs file has {sorted(f)}")
        g = f[split]
        for name in ("input", "target"):
            if name not in g or g[name].ndim != 3:
                raise PairsFileError(f"{path}: /{split}/{name} is missing or not (n, H, W)")
        if g["input"].shape != g["target"].shape:
            raise PairsFileError(f"{path}: /{split}/input {g['input'].shape} and "
                                 f"/{split}/target {g['target'].shape} differ in shape")
        return tuple(int(s) for s in g["input"].shape)


class SliceStore:
    """Normalized ``(input, target)`` slices of one split of one or more pairs files.

    Parameters
    ----------
    paths : sequence of str
        Pairs files; their splits are concatenated (all slices must share ``(H, W)``).
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    policy : Policy
        Per-slice normalization (statistics from the input slice).
    max_slices : int
        Keep only the first N slices in total (0 = all).
    in_memory : bool
        Load everything into RAM; otherwise read the requested crops from the files.
    """

    def __init__(self, paths: Sequence[str], split: str, policy: Policy, *,
                 max_slices: int = 0, in_memory: bool = True) -> None:
        self.paths = [str(p) for p in paths]
        self.split = split
        self.policy = policy
        self.index: List[Tuple[int, int]] = []   # (file number, slice number)
        shapes = set()
        for k, p in enumerate(self.paths):
            n, h, w = split_shape(p, split)
            shapes.add((h, w))
            self.index += [(k, i) for i in range(n)]
        if len(shapes) > 1:
            raise PairsFileError(f"/{split} slices differ in shape across {self.paths}: {shapes}")
        if max_slices:
            self.index = self.index[:max_slices]
        if not self.index:
            raise PairsFileError(f"/{split} of {self.paths} has no slices")
        self.shape = shapes.pop()
        self._files: Dict[int, h5py.File] = {}
        self._cache: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self.lo, self.hi = self._load(in_memory)

    def __len__(self) -> int:
        return len(self.index)

    def _group(self, k: int) -> h5py.Group:
        if k not in self._files:
            self._files[k] = open_pairs(self.paths[k])
        return self._files[k][self.split]

    def _load(self, in_memory: bool) -> Tuple[np.ndarray, np.ndarray]:
        """Per-slice ``(lo, hi)``; with ``in_memory`` also the normalized slices, in one pass."""
        lo = np.empty((len(self), 1, 1), np.float32)
        hi = np.empty_like(lo)
        if in_memory:
            x = np.empty((len(self),) + self.shape, np.float32)
            y = np.empty_like(x)
        for j, (k, i) in enumerate(self.index):
            g = self._group(k)
            inp = g["input"][i]
            lo[j], hi[j] = self.policy.stats(inp)
            if in_memory:
                x[j] = Policy.forward(inp, lo[j], hi[j])
                y[j] = Policy.forward(g["target"][i], lo[j], hi[j])
        if in_memory:
            self._cache = (x, y)
            self.close()
            logger.info("loaded /%s: %d slices of %s (%.0f MiB)", self.split, len(self),
                        self.shape, 2 * x.nbytes / 2**20)
        return lo, hi

    def crop(self, j: int, y0: int, x0: int, size: Tuple[int, int]
             ) -> Tuple[np.ndarray, np.ndarray]:
        """Normalized ``(input, target)`` window ``[y0:y0+h, x0:x0+w]`` of slice ``j``, float32."""
        h, w = size
        if self._cache is not None:
            x, y = self._cache
            return x[j, y0:y0 + h, x0:x0 + w], y[j, y0:y0 + h, x0:x0 + w]
        k, i = self.index[j]
        g = self._group(k)
        a = Policy.forward(g["input"][i, y0:y0 + h, x0:x0 + w], self.lo[j], self.hi[j])
        b = Policy.forward(g["target"][i, y0:y0 + h, x0:x0 + w], self.lo[j], self.hi[j])
        return a.astype(np.float32), b.astype(np.float32)

    def close(self) -> None:
        """Close the HDF5 files opened for reading (reopened on demand)."""
        for f in self._files.values():
            f.close()
        self._files = {}


@dataclass(frozen=True)
class EpochPlan:
    """The random choices of one epoch for the global batch, as integer arrays of length n.

    ``order`` are slice numbers; ``y0, x0`` crop offsets; ``flip`` 0/1 (left-right) and ``rot``
    the number of 90-degree rotations applied after the flip.
    """

    order: np.ndarray
    y0: np.ndarray
    x0: np.ndarray
    flip: np.ndarray
    rot: np.ndarray


def epoch_plan(n: int, shape: Tuple[int, int], crop: int, *, seed: int, epoch: int,
               augment: bool) -> EpochPlan:
    """Draw the order, crop offsets and augmentation of ``epoch`` from ``(seed, epoch)``."""
    rng = np.random.default_rng([seed, epoch])
    h, w = shape
    ch, cw = crop_shape(shape, crop)
    order = rng.permutation(n)
    y0 = rng.integers(0, h - ch + 1, n)
    x0 = rng.integers(0, w - cw + 1, n)
    flip = rng.integers(0, 2, n) if augment else np.zeros(n, np.int64)
    rot = rng.integers(0, 4, n) if augment else np.zeros(n, np.int64)
    if augment and ch != cw:
        rot = 2 * (rot % 2)            # non-square crops keep their shape: 0 or 180 degrees
    return EpochPlan(order, y0, x0, flip, rot)


def crop_shape(shape: Tuple[int, int], crop: int) -> Tuple[int, int]:
    """``(h, w)`` of the training crops: ``crop`` clipped to the slice, or the slice if 0."""
    if crop == 0:
        return shape
    return min(crop, shape[0]), min(crop, shape[1])


def n_steps(n: int, global_batch: int) -> int:
    """Optimizer steps per epoch: the last incomplete global batch is dropped."""
    return n // global_batch


def rank_batch(plan: EpochPlan, step: int, *, batch_size: int, rank: int, world: int
               ) -> np.ndarray:
    """Positions (into the plan's arrays) of ``rank``'s share of global batch ``step``."""
    start = (step * world + rank) * batch_size
    return np.arange(start, start + batch_size)


def make_batch(store: SliceStore, plan: EpochPlan, positions: np.ndarray, crop: int
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Stack the crops at ``positions`` into ``(B, 1, h, w)`` float32 inputs and targets."""
    size = crop_shape(store.shape, crop)
    xs, ys = [], []
    for p in positions:
        a, b = store.crop(int(plan.order[p]), int(plan.y0[p]), int(plan.x0[p]), size)
        if plan.flip[p]:
            a, b = a[:, ::-1], b[:, ::-1]
        a, b = np.rot90(a, plan.rot[p]), np.rot90(b, plan.rot[p])
        xs.append(a)
        ys.append(b)
    return (np.ascontiguousarray(np.stack(xs)[:, None], np.float32),
            np.ascontiguousarray(np.stack(ys)[:, None], np.float32))


def val_indices(n: int, *, rank: int, world: int) -> np.ndarray:
    """The validation slices of ``rank`` (strided, so every slice is used exactly once)."""
    return np.arange(rank, n, world)
