# SPDX-License-Identifier: BSD-3-Clause
"""Try mode (``reconstruction_type="try"``): the middle row at a range of trial centres.

One image per centre and ``sharpness.json`` are written into a folder that appears atomically.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Tuple

from tomodl.recon.chunks import select_rows
from tomodl.recon.config import ReconConfig
from tomodl.recon.stages import load_chunk, preprocess_chunk, resolve_center

logger = logging.getLogger(__name__)


def run_try(path, info, cfg: ReconConfig, out: Path) -> Tuple[float, int]:
    """Reconstruct the middle row at trial centres into ``out`` (written atomically)."""
    from tomodl.io.atomic import (PARTIAL, RECON_KINDS, check_replace, jsonable, remove_path,
                                  replace_dir, sidecar, write_json_atomic)
    from tomodl.recon.center import write_center
    from tomodl.recon.geometry import trial_range
    from tomodl.recon.provenance import protected_inputs

    inputs = protected_inputs(path, cfg)
    check_replace(out, overwrite=cfg.overwrite, kinds=RECON_KINDS, protected=inputs)
    center = resolve_center(path, info, cfg)
    start, stop = select_rows(info, cfg)
    mid = (start + stop) // 2
    scan = load_chunk(path, (mid, mid + 1), cfg.corrections)
    w, s = cfg.center_search_width, cfg.center_search_step
    partial = sidecar(out, PARTIAL)
    remove_path(partial)                  # check_replace found it is tomodl's (or absent)
    try:
        res = write_center(preprocess_chunk(scan, path, cfg.corrections), scan.theta, partial,
                           trial_range(center, w, s, info.n_det), ind=0,  # on the detector
                           filter_name=cfg.filter_name, device=cfg.device, ncore=cfg.ncore)
        write_json_atomic(partial / "sharpness.json", jsonable(
            {"row": mid, "center": center, "centers": res.centers, "sharpness": res.sharpness,
             "sharpest": res.best}))
        check_replace(out, overwrite=cfg.overwrite, kinds=RECON_KINDS, protected=inputs)
        replace_dir(partial, out)
    except BaseException:
        remove_path(partial)
        raise
    logger.info("try mode: %d centres around %.2f on row %d in %s; sharpest %.2f",
                res.centers.size, center, mid, out, res.best)
    return center, int(res.centers.size)
