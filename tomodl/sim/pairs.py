# SPDX-License-Identifier: BSD-3-Clause
"""Sparse-view training pairs from simulated scans.

Input: the FBP of every ``sparse``-th angle of a simulated scan (with several factors, slice
``i`` of phantom ``k`` uses ``sparse[(i + k) % len(sparse)]``, so one file teaches a network
every angular sampling in it), computed by the reconstruction
pipeline's own stages (:func:`tomodl.io.dxchange.read_dx` -> normalize -> ``-log`` -> FBP, i.e.
:func:`tomodl.recon.stages.preprocess_chunk` and
:func:`~tomodl.recon.stages.reconstruct_chunk`), so the network sees at training exactly what
``tomodl recon`` feeds it at inference.
Target: the scan's ground-truth slice (same grid, attenuation per pixel).

The row-local steps of ``tomodl recon`` (issue 14) that change what the network sees, stripe
removal (``--remove-stripe-method``) and ``--dezinger``, are applied when asked for
(``corrections``, a :class:`tomodl.recon.corrections.Corrections`), by the same stage
(:func:`~tomodl.recon.stages.preprocess_chunk`) on the same sparse projections, and recorded in
the metadata; train on such pairs to apply the network after the same corrections.  Binning
and the projection subset are refused (binning would need a binned ground truth: simulate the
smaller scan instead; the angles of the input are chosen by ``sparse``).

The projection-level steps are not applied here, and what each would change for the network:
``--retrieve-phase-method paganin`` low-pass filters every
projection (the FBP input is smoother, its streaks weaker and wider: pairs for Paganin data
would apply :func:`tomodl.recon.phase.retrieve_phase` to the simulated transmission, with the
target blurred by the same filter, since Paganin cannot restore the detail it removes);
``--file-type double_fov`` changes the geometry (a wider grid, half the angles of the 360-degree
scan, a blended seam in the overlap): pairs would stitch a simulated offset-axis scan with
:func:`tomodl.recon.stitch.stitch_360`.  The preview changes nothing.

Pairs file (HDF5, see docs/architecture.md): groups ``/train``, ``/val``, ``/test`` with
``input``, ``target`` ``(n, H, W)`` float32, ``phantom`` and ``n_angles`` ``(n,)`` int64 (the
angles behind each input); root attribute
``metadata`` (JSON).  Scans are split by phantom (one scan = one phantom), never by slice.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

import tomodl
from tomodl.normalization import Policy
from tomodl.recon.corrections import NO_CORRECTIONS, ROW_LOCAL, Corrections
from tomodl.sim.config import SimulationError
from tomodl.sim.scan import read_ground_truth

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Default fractions of phantoms in each split.
FRACTIONS = (0.8, 0.1, 0.1)
PAIRS_FORMAT = "tomodl-pairs"
PAIRS_FORMAT_VERSION = 1
#: Why the other options of ``tomodl recon`` are refused for pairs (field -> reason).
_REFUSED = {
    "binning": "binning changes the grid and the ground truth would have to be binned too; "
               "simulate the smaller scan instead (tomodl simulate foam --size)",
    "start_proj": "the angles of the input are chosen by sparse (--sparse), not by a "
                  "projection subset",
    "retrieve_phase_method": "phase retrieval needs a different simulation (a target blurred "
                             "by the same filter; see tomodl.sim.pairs)",
    "file_type": "double_fov needs a simulated offset-axis 360-degree scan (see "
                 "tomodl.sim.pairs)"}
_REFUSED.update(end_proj=_REFUSED["start_proj"], proj_step=_REFUSED["start_proj"],
                energy=_REFUSED["retrieve_phase_method"],
                propagation_distance=_REFUSED["retrieve_phase_method"],
                pixel_size=_REFUSED["retrieve_phase_method"],
                retrieve_phase_alpha=_REFUSED["retrieve_phase_method"])


def split_counts(n: int, fractions: Sequence[float] = FRACTIONS) -> Tuple[int, int, int]:
    """Phantoms per split: proportional to ``fractions``, at least one train phantom (when its
    fraction > 0), one validation phantom from 2 phantoms on and one test phantom from 3 on (if
    their fractions > 0).  ``0,0,1`` makes a held-out test file."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or f.sum() <= 0:
        raise SimulationError(f"fractions must be 3 non-negative numbers, not all 0, got "
                              f"{fractions}")
    f = f / f.sum()
    if f[0] == 0:
        val = int(round(n * f[1]))
        return 0, val, n - val
    val = int(round(n * f[1])) if n >= 2 else 0
    test = int(round(n * f[2])) if n >= 3 else 0
    val = max(val, 1 if n >= 2 and f[1] > 0 else 0)
    test = max(test, 1 if n >= 3 and f[2] > 0 else 0)
    while val + test > n - 1:
        if test >= val and test > 0:
            test -= 1
        else:
            val -= 1
    return n - val - test, val, test


def split_by_phantom(n: int, seed: int, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """Split label (0 train, 1 val, 2 test) of each of ``n`` phantoms; deterministic in ``seed``."""
    counts = split_counts(n, fractions)
    labels = np.repeat(np.arange(3), counts)
    return labels[np.argsort(np.random.default_rng(seed).permutation(n))]


def check_corrections(corrections: Corrections) -> Corrections:
    """``corrections`` if pairs can apply it: only the row-local steps (:data:`ROW_LOCAL`)."""
    if not isinstance(corrections, Corrections):
        raise SimulationError("corrections must be a tomodl.recon.corrections.Corrections, got "
                              f"{type(corrections).__name__}")
    bad = [k for k in corrections.active() if k not in ROW_LOCAL]
    if bad:
        reasons = dict.fromkeys(_REFUSED.get(k, "not a row-local step") for k in bad)
        raise SimulationError(f"pairs apply only stripe removal and dezinger, not "
                              f"{', '.join(bad)}: {'; '.join(reasons)}")
    return corrections


def sparse_fbp(path: Any, sparse: int, *, center: float, filter_name: str = "shepp",
               device: str = "auto", ncore=None,
               corrections: Corrections = NO_CORRECTIONS) -> Tuple[np.ndarray, np.ndarray]:
    """FBP of every ``sparse``-th projection of a scan file, through the recon pipeline's stages.

    ``corrections`` (row-local steps only, :func:`check_corrections`) are applied to those
    projections as ``tomodl recon --proj-step sparse`` does.

    Returns
    -------
    rec : ndarray, shape (n_rows, n_det, n_det), float32
        Attenuation per pixel.
    theta : ndarray, shape (n_angles // sparse,), float32
        The angles used, radians.
    """
    from tomodl.io.dxchange import read_dx, scan_info
    from tomodl.recon.config import ReconConfig
    from tomodl.recon.stages import preprocess_chunk, reconstruct_chunk

    n_angles = scan_info(path).n_angles
    if sparse < 1 or sparse > n_angles:
        raise SimulationError(f"--sparse must be in [1, {n_angles}] for {str(path)!r}, got "
                              f"{sparse}")
    scan = read_dx(path, proj=(0, n_angles, sparse))
    cfg = ReconConfig(algorithm="fbp", center=float(center), filter_name=filter_name,
                      device=device, ncore=ncore)
    proj = preprocess_chunk(scan, path, check_corrections(corrections))
    rec = reconstruct_chunk(proj, scan.theta, float(center), cfg)
    return rec, scan.theta


def _source(path: Any, sparse: Sequence[int], phantom: int, filter_name: str, device: str, ncore,
            corrections: Corrections = NO_CORRECTIONS
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
    """Inputs (slice ``i`` from factor ``sparse[(i + phantom) % len]``), targets, angle counts."""
    gt, meta = read_ground_truth(path)
    center = meta["geometry"]["center"]
    which = (np.arange(gt.shape[0]) + phantom) % len(sparse)
    rec = np.empty(gt.shape, np.float32)
    n_used = np.zeros(gt.shape[0], np.int64)
    for j, factor in enumerate(sparse):
        if not np.any(which == j):
            continue
        r, theta = sparse_fbp(path, factor, center=center, filter_name=filter_name,
                              device=device, ncore=ncore, corrections=corrections)
        if r.shape != gt.shape:
            raise SimulationError(f"{str(path)!r}: FBP slices {r.shape} and ground truth "
                                  f"{gt.shape} differ; the scan was not written by "
                                  "'tomodl simulate foam'")
        rec[which == j] = r[which == j]
        n_used[which == j] = theta.size
    info = {"path": str(Path(path).resolve()), "family": meta.get("family"),
            "seed": meta.get("seed"), "center": center,
            "n_angles_used": sorted({int(n) for n in n_used})}
    return rec, gt, n_used, info


def _create(f, shape: Tuple[int, int]) -> None:
    for split in SPLITS:
        g = f.create_group(split)
        for name in ("input", "target"):
            g.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype="float32",
                             chunks=(1, *shape))
        for name in ("phantom", "n_angles"):
            g.create_dataset(name, shape=(0,), maxshape=(None,), dtype="int64")


def _append(g, rec: np.ndarray, gt: np.ndarray, n_angles: np.ndarray, phantom: int) -> None:
    n0, n = g["input"].shape[0], rec.shape[0]
    for name, arr in (("input", rec), ("target", gt), ("phantom", np.full(n, phantom)),
                      ("n_angles", n_angles)):
        g[name].resize(n0 + n, axis=0)
        g[name][n0:] = arr


def _metadata(sources: List[Dict[str, Any]], sparse: Sequence[int], filter_name: str, seed: int,
              fractions: Sequence[float], corrections: Corrections = NO_CORRECTIONS
              ) -> Dict[str, Any]:
    """The root ``metadata`` of a pairs file (see docs/architecture.md).

    ``sparse_factor`` is the single factor (``None`` for a mixed file); ``sparse_factors`` lists
    all of them and ``n_angles`` the angle counts of the inputs; ``corrections`` every option of
    :class:`~tomodl.recon.corrections.Corrections` (the defaults: none applied).
    """
    read = "read_dx(scan, proj=(0, n, sparse))"
    steps = (f"fbp(line_integrals(normalize(correct_raw({read})), corrections))"
             if corrections.active() else f"fbp(minus_log(normalize({read})))")
    n_angles = sorted({n for s in sources for n in s["n_angles_used"]})
    return {"format": PAIRS_FORMAT, "format_version": PAIRS_FORMAT_VERSION,
            "sparse_factor": int(sparse[0]) if len(sparse) == 1 else None,
            "sparse_factors": [int(k) for k in sparse], "n_angles": n_angles,
            "filter_name": filter_name,
            "centers": [s["center"] for s in sources],
            "normalization": Policy().to_dict(), "split_seed": int(seed),
            "fractions": [float(x) for x in fractions],
            "seeds": [s["seed"] for s in sources], "sources": sources,
            "units": "attenuation per pixel",
            "input": steps,
            "corrections": corrections.provenance(),
            "tomodl_version": tomodl.__version__}


def make_pairs(scans: Sequence[Any], out: Any, *, sparse: Union[int, Sequence[int]] = 20,
               filter_name: str = "shepp",
               seed: int = 0, fractions: Sequence[float] = FRACTIONS, overwrite: bool = False,
               device: str = "auto", ncore=None, progress: bool = False,
               corrections: Corrections = NO_CORRECTIONS) -> Path:
    """Write a training-pairs file from simulated scans (one phantom each).

    Parameters
    ----------
    scans : sequence of path
        Files written by :func:`tomodl.sim.scan.simulate_scan`, all with the same ``n_det``.
    out : path
        Pairs file to write (atomically); refused if it exists unless ``overwrite``.
    sparse : int or sequence of int
        Keep every ``sparse``-th angle for the input FBP (the paper: 20).  Several factors are
        interleaved over the slices (slice ``i`` of phantom ``k`` uses
        ``sparse[(i + k) % len(sparse)]``).
    filter_name : str
        FBP filter (:data:`tomodl.recon.filters.FILTERS`).
    seed : int
        Seed of the split by phantom.
    fractions : (float, float, float)
        Train / validation / test fractions of the phantoms.
    corrections : Corrections
        Row-local steps of ``tomodl recon`` applied to the input projections (stripe removal,
        dezinger; anything else is refused), recorded in the metadata.

    Returns
    -------
    Path
    """
    import h5py
    from tqdm.auto import tqdm

    from tomodl.io.atomic import atomic_file, check_replace
    from tomodl.io.ownership import MARK_ATTR

    if not scans:
        raise SimulationError("no scans given: pass one or more files from 'tomodl simulate foam'")
    factors = [int(sparse)] if np.isscalar(sparse) else [int(k) for k in sparse]
    if not factors or min(factors) < 1:
        raise SimulationError(f"sparse factors must be integers >= 1, got {sparse}")
    check_corrections(corrections)
    check_replace(out, overwrite=overwrite, kinds=("pairs",), protected=scans)
    labels = split_by_phantom(len(scans), seed, fractions)
    sources: List[Dict[str, Any]] = []
    with atomic_file(out, overwrite=overwrite, kinds=("pairs",), protected=scans) as tmp, \
            h5py.File(tmp, "w") as f:
        f.attrs[MARK_ATTR] = "pairs"
        for k, path in enumerate(tqdm(scans, desc="pairs", unit="scan", disable=not progress)):
            rec, gt, n_used, info = _source(path, factors, k, filter_name, device, ncore,
                                            corrections)
            if k == 0:
                _create(f, gt.shape[1:])
            elif gt.shape[1:] != f["train/target"].shape[1:]:
                raise SimulationError(f"{str(path)!r} has slices {gt.shape[1:]}, the first scan "
                                      f"{f['train/target'].shape[1:]}: use scans of one size")
            _append(f[SPLITS[labels[k]]], rec, gt, n_used, k)
            sources.append({**info, "phantom": k, "split": SPLITS[labels[k]]})
        f.attrs["metadata"] = json.dumps(_metadata(sources, factors, filter_name, seed, fractions,
                                                   corrections))
    logger.info("wrote %s: %s", out, {s: int((labels == i).sum()) for i, s in enumerate(SPLITS)})
    return Path(out)


def write_slice_pairs(out: Any, groups: Sequence[Dict[str, Any]], *,
                      sparse: Sequence[int], filter_name: str = "shepp", seed: int = 0,
                      overwrite: bool = False) -> Path:
    """Write a pairs file from pairs made in memory (2-D phantoms), in :func:`make_pairs`' format.

    Parameters
    ----------
    out : path
        Pairs file to write (atomically); refused if it exists unless ``overwrite``.
    groups : sequence of dict
        One per phantom (the unit of the split): ``split`` (one of :data:`SPLITS`), ``input``
        and ``target`` ``(n, H, W)`` float32 (FBP input, ground truth in attenuation per pixel),
        ``n_angles`` ``(n,)`` int (angles behind each input) and ``info`` (a dict with at least
        ``center``; recorded in the metadata's ``sources``).
    sparse : sequence of int
        The sparse factors the inputs were made with (metadata).
    filter_name : str
        The FBP filter used (metadata).
    seed : int
        Seed of the split (metadata).

    Returns
    -------
    Path
    """
    import h5py

    from tomodl.io.atomic import atomic_file, check_replace
    from tomodl.io.ownership import MARK_ATTR

    if not groups:
        raise SimulationError("no groups given: pass one dict per phantom")
    bad = sorted({str(g["split"]) for g in groups} - set(SPLITS))
    if bad:
        raise SimulationError(f"unknown split(s) {bad}; choose from {list(SPLITS)}")
    check_replace(out, overwrite=overwrite, kinds=("pairs",))
    shape = np.shape(groups[0]["target"])[1:]
    counts = np.array([sum(g["split"] == s for g in groups) for s in SPLITS], np.float64)
    sources: List[Dict[str, Any]] = []
    with atomic_file(out, overwrite=overwrite, kinds=("pairs",)) as tmp, \
            h5py.File(tmp, "w") as f:
        f.attrs[MARK_ATTR] = "pairs"
        _create(f, shape)
        for k, g in enumerate(groups):
            rec, gt = (np.asarray(g[n], np.float32) for n in ("input", "target"))
            if rec.shape != gt.shape or gt.shape[1:] != shape:
                raise SimulationError(f"group {k}: input {rec.shape} and target {gt.shape} must "
                                      f"be equal and (n, {shape[0]}, {shape[1]})")
            n_used = np.asarray(g["n_angles"], np.int64)
            _append(f[g["split"]], rec, gt, n_used, k)
            sources.append({**g["info"], "n_angles_used": sorted({int(n) for n in n_used}),
                            "phantom": k, "split": g["split"]})
        f.attrs["metadata"] = json.dumps(_metadata(sources, list(sparse), filter_name, seed,
                                                   counts / counts.sum()))
    logger.info("wrote %s: %s", out, dict(zip(SPLITS, counts.astype(int).tolist())))
    return Path(out)
