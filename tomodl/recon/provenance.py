# SPDX-License-Identifier: BSD-3-Clause
"""Where the output of a file reconstruction goes and the provenance record stored with it."""
from __future__ import annotations

import contextlib
import getpass
import socket
import time
from pathlib import Path
from typing import Optional

from tomodl.recon.chunks import select_rows
from tomodl.recon.config import OUTPUT_SUFFIX, ReconConfig

def output_path(path, cfg: ReconConfig) -> Path:
    """Where the output goes (``cfg.out_path`` or the default next to the scan)."""
    if cfg.out_path is not None:
        return Path(cfg.out_path)
    path = Path(path)
    key = "try" if cfg.reconstruction_type == "try" else cfg.save_format
    return path.with_name(path.stem + OUTPUT_SUFFIX[key])


def protected_inputs(path, cfg: ReconConfig) -> list:
    """What the output must never be nor hold (:func:`tomodl.io.atomic.check_replace`): the
    scan, and the weights folder given as ``cfg.model``."""
    items = [(Path(path), "input scan")]
    if cfg.model is not None and Path(cfg.model).expanduser().exists():
        items.append((Path(cfg.model).expanduser(), "weights folder in use"))
    return items


def provenance(path, info, cfg: ReconConfig, center: float, command: str, spec=None,
               skipped: Optional[str] = None) -> dict:
    """The record stored with the output (the writer adds ``tomodl_version``).

    ``command``, ``started``, ``hostname``, ``user`` may differ on resume; ``model`` is
    :meth:`~tomodl.recon.denoising.ModelSpec.provenance` (None for FBP); example in
    ``docs/volumes.md``.
    """
    rows = select_rows(info, cfg)
    source = "given" if cfg.center != "auto" else f"auto ({cfg.center_method})"
    return {"command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "hostname": socket.gethostname(), "user": _user(), "input": info.provenance(),
            "algorithm": cfg.algorithm, "filter_name": cfg.filter_name, "center": center,
            "center_source": source, "rows": list(rows), "n_angles": info.n_angles,
            "num_gridx": info.n_det, "model": None if spec is None else spec.provenance(),
            "sparse_factor": None if spec is None else spec.sparse_factor,
            "model_skipped": skipped, "units": "attenuation per pixel",
            "refine": _refine_record(cfg),
            "corrections": cfg.corrections.provenance()}


def _refine_record(cfg: ReconConfig):
    return cfg.refine_settings().provenance()


def _user() -> str:
    with contextlib.suppress(KeyError, OSError):
        return getpass.getuser()
    return ""
