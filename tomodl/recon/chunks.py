# SPDX-License-Identifier: BSD-3-Clause
"""Chunk planning: the selected detector rows, rows per chunk from the memory budget, and the
chunks still to compute after an interruption."""
from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

from tomodl.recon.config import ReconConfig, Rows

def select_rows(info, cfg: ReconConfig) -> Rows:
    """Detector rows ``(start, stop)`` selected by ``cfg`` (Python slice rules, checked)."""
    start, stop, _ = slice(cfg.start_row, cfg.end_row).indices(info.n_rows)
    if stop <= start:
        raise ValueError(f"rows [{cfg.start_row}, {cfg.end_row}) select nothing: the scan has "
                         f"{info.n_rows} rows (0 .. {info.n_rows - 1})")
    return start, stop


def plan_memory(info, cfg: ReconConfig, spec=None):
    """Rows per chunk, the denoiser's share and the memory estimate of the run, computed once
    (:class:`tomodl.recon.budget.MemoryPlan`; ``spec``: the :class:`ModelSpec`, if any)."""
    from tomodl.recon.budget import cpu_threads, default_max_memory, fbp_plan_bytes, fbp_workspace
    from tomodl.recon.budget import plan_memory as plan

    start, stop = select_rows(info, cfg)
    total = cfg.max_memory or default_max_memory()
    threads = cpu_threads(cfg.ncore)
    fixed = (fbp_workspace(info.n_angles, info.n_det, info.n_det, threads)
             + fbp_plan_bytes(info.n_angles, info.n_det))   # the plan is kept for the whole run
    if cfg.refine:                                           # the refiner's projector, too
        from tomodl.recon.projector import projector_bytes

        fixed += projector_bytes(info.n_det, info.n_angles, threads=threads,
                                 cuda=str(cfg.device).startswith("cuda"))
    scale = cfg.corrections.factor ** 2       # --binning: raw counts read per binned row
    sized = info if scale == 1 else replace(info, n_det=info.n_det * scale)
    return plan(sized, stop - start, n_grid=info.n_det, queue_depth=cfg.queue_depth,
                budget=total, fixed=fixed, denoised=spec is not None,
                nsino_per_chunk=cfg.nsino_per_chunk,
                denoiser=None if spec is None else spec.memory, refined=bool(cfg.refine))


def plan_chunks(info, cfg: ReconConfig, rows: Optional[int] = None) -> List[Rows]:
    """Split the selected rows into chunks of ``rows`` (default :func:`plan_memory`)."""
    start, stop = select_rows(info, cfg)
    rows = rows or plan_memory(info, cfg).rows
    return [(r, min(r + rows, stop)) for r in range(start, stop, rows)]


def chunks_todo(missing, first: int, rows: int) -> Tuple[Rows, ...]:
    """Chunks of at most ``rows`` detector rows covering the ``missing`` output ranges.

    The writer records whole chunks, so after an interruption every missing range starts on a
    chunk boundary of the same plan: the chunks are the same as in an uninterrupted run.
    """
    return tuple((first + r, first + min(r + rows, b)) for a, b in missing
                 for r in range(a, b, rows))

