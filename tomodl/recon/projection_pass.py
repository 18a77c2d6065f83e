# SPDX-License-Identifier: BSD-3-Clause
"""The projection-chunked first pass of a reconstruction (as Tomocupy's ``recon_steps``).

Phase retrieval filters whole projections, so it cannot run on chunks of detector rows.  When
it is asked for, :func:`run_projection_pass` reads blocks of whole projections (every detector
row), applies the raw-count corrections (dezinger with a halo of neighbouring projections, so
block edges match a whole-scan computation; binning), normalises and retrieves the phase, and
writes the selected rows of the filtered transmission to a scratch HDF5 file beside the output
(``<out>.phase.h5``).  The second pass (:mod:`tomodl.recon.volume`) then reconstructs row
chunks from it: stripe removal, ``-log``, FBP.

The scratch file is written as ``<scratch>.partial`` and renamed when complete; its attributes
record the settings that made it and the projections done, so a killed run continues the pass
where it stopped, and a finished pass is reused by the rerun.  It is removed when the volume is
finished.  Memory: one block of projections, sized from the run's budget.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Tuple

import numpy as np

from tomodl.recon.config import ReconConfig, Rows

logger = logging.getLogger(__name__)

#: Attribute holding the settings that made a scratch file (JSON) and the projections done.
SETTINGS_ATTR, DONE_ATTR = "tomodl_projection_pass", "projections_done"
DATASET = "transmission"


def needs_projection_pass(cfg: ReconConfig) -> bool:
    """Whether ``cfg`` asks for a step that needs whole projections (phase retrieval)."""
    return cfg.corrections.retrieve_phase_method != "none"


def scratch_path(out) -> Path:
    """``<out>.phase.h5`` next to the output."""
    out = Path(out)
    return out.with_name(out.name + ".phase.h5")


def _settings(info, cfg: ReconConfig, rows: Rows) -> str:
    from tomodl import __version__

    return json.dumps({"input": info.provenance(), "corrections": cfg.corrections.provenance(),
                       "rows": list(rows), "shape": [info.n_angles, rows[1] - rows[0],
                                                     info.n_det], "tomodl_version": __version__},
                      sort_keys=True)


def _owned(path: Path) -> str:
    """The settings stored in a scratch file, '' when it is not one of tomodl's."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get(SETTINGS_ATTR, ""))
    except OSError:
        return ""


def block_size(info, cfg: ReconConfig, raw_shape: Tuple[int, int], budget: int) -> int:
    """Projections per block: a raw projection, its float32 copies and the padded FFT of the
    phase filter (16 bytes per padded pixel) must fit ``budget`` bytes together."""
    from tomodl.recon.phase import phase_padding

    c = cfg.corrections
    py, px = phase_padding((info.n_rows, info.n_det), c.energy, c.propagation_distance,
                           c.pixel_size * c.factor, c.retrieve_phase_alpha)
    padded = (info.n_rows + 2 * py) * (info.n_det + 2 * px)
    per_proj = 16 * raw_shape[0] * raw_shape[1] + 24 * padded
    return int(max(1, min(info.n_angles, budget // per_proj)))


def run_projection_pass(path, info, cfg: ReconConfig, out, rows: Rows, budget: int) -> Path:
    """Write (or reuse) the scratch file of phase-retrieved transmission rows ``rows``.

    Parameters
    ----------
    path : Path
        Scan file.
    info : ScanInfo
        The scan as reconstructed (binned, projection subset: ``volume._corrected``).
    cfg : ReconConfig
        Settings (``cfg.corrections`` has the phase parameters).
    out : Path
        The output; the scratch file goes beside it (:func:`scratch_path`).
    rows : (start, stop)
        Selected rows (binned), stored.
    budget : int
        Bytes the pass may use.

    Returns
    -------
    Path
        The finished scratch file, dataset ``transmission`` ``(n_angles, rows, n_det)`` float32.
    """
    import h5py

    from tomodl.io.atomic import OutputError, check_free_space, fsync_dir, remove_path, sidecar

    final, settings = scratch_path(out), _settings(info, cfg, rows)
    partial = sidecar(final, ".partial")
    for p in (final, partial):
        if p.exists() and not _owned(p):
            raise OutputError(f"{str(p)!r} is in the way of tomodl's scratch file and was not "
                              "written by tomodl; move it away or choose another output path")
    if final.exists() and _owned(final) == settings:
        logger.info("reusing the finished projection pass in %s", final)
        return final
    remove_path(final)
    shape = (info.n_angles, rows[1] - rows[0], info.n_det)
    done = 0
    if partial.exists() and _owned(partial) == settings:
        with h5py.File(partial, "r") as f:
            done = int(f.attrs.get(DONE_ATTR, 0))
        logger.info("continuing the projection pass in %s at projection %d of %d", partial,
                    done, shape[0])
    else:
        remove_path(partial)
        check_free_space(final.parent, 4 * int(np.prod(shape)), final)
        with h5py.File(partial, "w") as f:
            f.create_dataset(DATASET, shape, np.float32, chunks=(1,) + shape[1:])
            f.attrs[SETTINGS_ATTR], f.attrs[DONE_ATTR] = settings, 0
    raw = _raw_info(path)
    n_block = block_size(info, cfg, (raw.n_rows, raw.n_det), budget)
    logger.info("projection pass (phase retrieval): %d projections in blocks of %d -> %s",
                shape[0], n_block, final)
    for a in range(done, shape[0], n_block):
        b = min(a + n_block, shape[0])
        block = _block(path, cfg, (a, b), rows)
        with h5py.File(partial, "r+") as f:
            f[DATASET][a:b] = block
            f.flush()
            f.attrs[DONE_ATTR] = b
    partial.replace(final)
    fsync_dir(final.parent)
    return final


def _block(path, cfg: ReconConfig, block: Rows, rows: Rows) -> np.ndarray:
    """Phase-retrieved transmission of projections ``block`` (of the projection subset),
    rows ``rows`` (binned)."""
    from tomodl.io import read_dx
    from tomodl.recon.corrections import correct_raw, proj_slice
    from tomodl.recon.phase import retrieve_phase
    from tomodl.recon.preprocess import normalize
    from tomodl.recon.stages import check_flats

    c = cfg.corrections
    start, stop, step = proj_slice(c)
    halo = c.dezinger // 2 if c.dezinger else 0
    idx = np.arange(*slice(start, stop, step).indices(_raw_info(path).n_angles))
    lo, hi = max(0, block[0] - halo), min(idx.size, block[1] + halo)
    scan = read_dx(path, proj=(int(idx[lo]), int(idx[hi - 1]) + 1, step))
    check_flats(scan, path)
    scan = correct_raw(scan, c)
    trans = normalize(scan.proj[block[0] - lo:block[1] - lo], scan.flat, scan.dark)
    trans = retrieve_phase(trans, energy=c.energy, propagation_distance=c.propagation_distance,
                           pixel_size=c.pixel_size * c.factor, alpha=c.retrieve_phase_alpha,
                           device=cfg.device, batch=block[1] - block[0])
    return np.ascontiguousarray(trans[:, rows[0]:rows[1]])


def _raw_info(path):
    from tomodl.io import scan_info

    return scan_info(path)


def read_rows(scratch, rows: Rows) -> np.ndarray:
    """Rows ``rows`` (indices into the stored rows) of every projection, float32."""
    import h5py

    with h5py.File(scratch, "r") as f:
        return f[DATASET][:, rows[0]:rows[1]]
