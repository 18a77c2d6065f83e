# SPDX-License-Identifier: BSD-3-Clause
"""Chunked reconstruction of a scan file: read rows, pre-process, FBP, denoise, write.

:func:`reconstruct_file` plans chunks of detector rows from :func:`tomodl.io.scan_info` and a
memory budget (:mod:`tomodl.recon.chunks`, :mod:`tomodl.recon.budget`), finds the centre once
(or reuses the one recorded by an interrupted run), and streams the chunks through a threaded
conveyor (:mod:`tomodl.recon.conveyor`: reading chunk k+1 and writing chunk k-1 overlap the
reconstruction of chunk k) or through a Dask cluster (:mod:`tomodl.recon.distributed`) into an
atomic, resumable :func:`tomodl.io.open_writer`.  Peak memory depends on the chunk size, not on
the volume.  The stages are the plain functions of :mod:`tomodl.recon.stages`; the try mode is
:mod:`tomodl.recon.try_mode`.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from tomodl.errors import ChunkError, GeometryError, ScanFileError, TomodlError, WeightsError
from tomodl.recon import stages
from tomodl.recon.chunks import chunks_todo, plan_memory, select_rows
from tomodl.recon.config import Job, ReconConfig, ReconResult, Rows
from tomodl.recon.provenance import output_path, protected_inputs, provenance

logger = logging.getLogger(__name__)

#: Errors in the input itself (the scan's data or geometry, the weights) met by a chunk: every
#: rerun meets them again, so the partial output is removed rather than kept for a resume.
INPUT_ERRORS = (ScanFileError, GeometryError, WeightsError)


def reconstruct_file(path, cfg: ReconConfig, *, command: str = "") -> ReconResult:
    """Reconstruct a DXchange / NXtomo scan file chunk by chunk (or run the try mode).

    Parameters
    ----------
    path : str or Path
        Scan file (opened read-only; only the rows of each chunk are read).
    cfg : ReconConfig
        Settings.
    command : str
        Command line recorded in the output's provenance.

    Returns
    -------
    ReconResult
        Output path, centre used (pixels), slices, seconds, slices computed, chunk rows and
        busy seconds per stage.

    Raises
    ------
    ChunkError
        A chunk failed (its rows and the cause in the message); the chunks before it are
        kept in the partial output and the same call continues from there.
    ScanFileError, GeometryError, WeightsError
        The input itself is bad (e.g. NaN in the rows of a chunk, :data:`INPUT_ERRORS`): the
        message names the cause and the rows, and the partial output is removed (a rerun
        would fail the same way).  A missing GPU, an unreachable scheduler and bad settings
        are refused before the output is opened.

    Each warning is logged once per run (:func:`tomodl.recon.runlog.once_per_run`).
    """
    from tomodl.recon.runlog import once_per_run

    with once_per_run():                          # a data warning once, not once per chunk
        return _reconstruct(path, cfg, command)


def _reconstruct(path, cfg: ReconConfig, command: str) -> ReconResult:
    from tomodl.io import scan_info
    from tomodl.recon.geometry import check_geometry

    t0 = time.perf_counter()
    info, cfg = _corrected(scan_info(path), cfg)
    check_geometry(info.theta, None if cfg.center == "auto" else cfg.center, info.n_det,
                   source=repr(str(path)))        # before any work or output (issue 11)
    check_device(cfg.device)
    out = output_path(path, cfg)
    if cfg.reconstruction_type == "try":
        from tomodl.recon.try_mode import run_try

        _check_try(cfg)

        center, n = run_try(path, info, cfg, out)
        return ReconResult(out, center, n, time.perf_counter() - t0)
    res = _run_full(Path(path), info, cfg, out, command)
    return res._replace(seconds=time.perf_counter() - t0)


def _corrected(info, cfg: ReconConfig):
    """The scan and settings as the reconstruction sees them after binning and a projection
    subset (:func:`tomodl.recon.corrections.effective_info`): the centre and the rows given in
    raw detector pixels become binned pixels."""
    from tomodl.recon.corrections import binned_center, effective_info, effective_rows

    corr = cfg.corrections
    try:
        eff = effective_info(info, corr)
    except ValueError as err:
        raise GeometryError(f"{str(info.path)!r}: {err}",
                            fix="choose fewer projections to skip or a smaller binning") from err
    if eff is info:
        return info, cfg
    if corr.binning:
        start, stop = effective_rows(cfg.start_row, cfg.end_row, info.n_rows, corr)
        center = cfg.center if cfg.center == "auto" else binned_center(cfg.center, corr.binning)
        cfg = replace(cfg, start_row=start, end_row=stop, center=center)
    return eff, cfg


def _check_try(cfg: ReconConfig) -> None:
    """The try mode works on one row: no double_fov stitching, no phase retrieval."""
    if cfg.corrections.file_type == "double_fov":
        raise GeometryError("the try mode does not stitch 360-degree (double_fov) scans",
                            fix="run reconstruction_type='full' with center='auto': the axis "
                                "is found by matching the mirrored overlap",
                            cli_fix="run --reconstruction-type full without --rotation-axis: "
                                    "the axis is found by matching the mirrored overlap")
    if cfg.corrections.retrieve_phase_method != "none":
        logger.info("try mode: phase retrieval is not applied (its filter is symmetric and "
                    "does not move the axis)")


def check_device(device: str) -> None:
    """Refuse a GPU device that is not there, before any work or output (``"auto"`` and
    ``"cpu"`` always work)."""
    if device in ("auto", "cpu"):
        return
    try:
        from tomodl.backend import resolve_device
    except ImportError as err:
        raise TomodlError(f"device {device!r} needs torch ({err})", fix="use device='cpu'",
                          cli_fix="use --device cpu") from err
    try:
        resolve_device(device)
    except ValueError as err:
        raise TomodlError(str(err).split("; ")[0], fix="use device='cpu' or 'auto'",
                          cli_fix="use --device cpu or auto") from err


def _run_full(path: Path, info, cfg: ReconConfig, out: Path, command: str) -> ReconResult:
    from tomodl.io import open_writer
    from tomodl.io.atomic import RECON_KINDS, check_replace

    inputs = protected_inputs(path, cfg)
    check_replace(out, overwrite=cfg.overwrite, kinds=RECON_KINDS,   # fail before any work
                  protected=inputs)
    start, stop = select_rows(info, cfg)
    geo, c360 = _stitch_plan(path, info, cfg, out)   # info as FBP sees it (double_fov: stitched)
    spec, den, skipped = stages.prepare_denoiser(cfg, geo.n_det, geo.theta)
    mem = plan_memory(geo, cfg, spec)            # the one budget, network included
    if spec is not None and spec.memory is not None:
        spec = replace(spec, max_memory=mem.denoiser)
    step = None if spec is None else spec.step(den)
    shape = (stop - start, geo.n_det, geo.n_det)
    if c360 is not None:
        from tomodl.recon.stitch import stitched_geometry

        center = stitched_geometry(info.n_det, c360)[2]
    else:
        center = _recorded_center(path, info, cfg, out, shape, command, spec, skipped)
        if center is None:
            center = stages.resolve_center(path, info, cfg)
    chk, why = _check(path, geo, cfg, center, (start, stop), step, c360)
    if why is not None:                          # issue 13: keep the FBP for this scan
        spec, step, skipped = None, None, why
    prov = _provenance(path, geo, cfg, center, command, spec, skipped, c360)
    if chk is not None:
        prov["check"] = {**chk.provenance(), "fallback": why}
    collector = _preview_plan(cfg, out, shape)
    scratch = _projection_pass(path, info, cfg, out, (start, stop), mem)
    with _cluster(cfg) as client:                 # reached (or started) before the output opens
        writer = open_writer(cfg.save_format, out, shape, provenance=prov,
                             overwrite=cfg.overwrite, resume=cfg.resume, inputs=inputs)
        job, clock = _write_volume(Job(path, cfg, center, start, (), spec, step, scratch, c360),
                                   writer, mem, client, collector)
    _finish_extras(out, cfg, scratch, collector)
    if chk is not None:
        from tomodl.recon.check import write_check_maps

        write_check_maps(chk, out)
    n_todo = sum(r1 - r0 for r0, r1 in job.todo)
    logger.info("%s", clock.summary(clock.wall))
    return ReconResult(out, center if c360 is None else c360, shape[0], clock.wall, n_todo,
                       mem.rows, clock.busy, clock.wall, mem.peak)


def _check(path: Path, geo, cfg: ReconConfig, center: float, rows: Rows, step, c360):
    """``(CheckResult or None, fallback reason or None)`` of :mod:`tomodl.recon.check`."""
    if c360 is not None:
        return None, None
    from tomodl.recon.check import fallback_reason, run_check

    chk = run_check(path, geo, cfg, center, rows, step)
    return chk, fallback_reason(chk, cfg)


def _stitch_plan(path: Path, info, cfg: ReconConfig, out: Path):
    """``(info as reconstructed, axis on the original detector)``: for ``double_fov`` the
    stitched 180-degree geometry (:mod:`tomodl.recon.stitch`) and the axis (given, recorded by
    the interrupted run being resumed, or found on the middle row); else ``(info, None)``."""
    if cfg.corrections.file_type != "double_fov":
        return info, None
    from tomodl.recon.stitch import find_center_360, half_turn_pairs, stitched_geometry

    try:
        h = half_turn_pairs(info.theta)
    except ValueError as err:
        raise GeometryError(f"{str(path)!r}: {err}") from err
    c360 = None if cfg.center == "auto" else float(cfg.center)
    if c360 is None and cfg.resume is not False:
        from tomodl.io.writers import read_progress

        prov = (read_progress(out) or {}).get("provenance", {})
        if prov.get("corrections") == cfg.corrections.provenance():
            c360 = prov.get("center")
    if c360 is None:
        start, stop = select_rows(info, cfg)
        mid = (start + stop) // 2
        scan = stages.load_chunk(path, (mid, mid + 1), cfg.corrections)
        c360 = find_center_360(stages.preprocess_chunk(scan, path, cfg.corrections)[:, 0],
                               scan.theta)
    _, width, _ = stitched_geometry(info.n_det, c360)
    return replace(info, n_angles=h, theta=np.ascontiguousarray(info.theta[:h]),
                   n_det=width), float(c360)


def _provenance(path, geo, cfg: ReconConfig, center: float, command: str, spec, skipped,
                c360: Optional[float]) -> dict:
    """:func:`provenance`; for double_fov ``center`` is the axis on the original detector and
    ``stitched_center`` the one FBP used."""
    if c360 is None:
        return provenance(path, geo, cfg, center, command, spec, skipped)
    return {**provenance(path, geo, cfg, c360, command, spec, skipped),
            "stitched_center": center, "center_source": "given" if cfg.center != "auto"
            else "auto (360-degree overlap)"}


def _projection_pass(path: Path, info, cfg: ReconConfig, out: Path, rows: Rows, mem):
    """The scratch file of the projection-chunked pass, if ``cfg`` needs one (phase)."""
    from tomodl.recon.projection_pass import needs_projection_pass, run_projection_pass

    if not needs_projection_pass(cfg):
        return None
    if cfg.workers is not None or cfg.scheduler is not None:
        raise TomodlError("phase retrieval runs on one machine for now, not with Dask",
                          fix="drop workers/scheduler", cli_fix="drop --workers/--scheduler")
    return run_projection_pass(path, info, cfg, out, rows, mem.budget)


def _preview_plan(cfg: ReconConfig, out: Path, shape):
    """A :class:`~tomodl.recon.preview.PreviewCollector` when a preview is to be written."""
    from tomodl.io.atomic import OutputError, check_replace
    from tomodl.recon.preview import (AUTO_PREVIEW_BYTES, PreviewCollector, preview_bytes,
                                      preview_path)

    if cfg.preview is False or (cfg.preview is None and
                                preview_bytes(shape[0], shape[1]) > AUTO_PREVIEW_BYTES):
        return None
    try:
        check_replace(preview_path(out), overwrite=True, kinds=("image",))
    except OutputError as err:
        if cfg.preview:
            raise
        logger.warning("no preview: %s", err)
        return None
    return PreviewCollector(shape[0], shape[1])


def _finish_extras(out: Path, cfg: ReconConfig, scratch, collector) -> None:
    """After the volume is final: remove the scratch file, write the preview PNG."""
    from tomodl.io.atomic import remove_path

    if scratch is not None:
        remove_path(scratch)
    if collector is None:
        return
    from tomodl.recon.preview import preview_path, slice_reader

    collector.fill(slice_reader(out, cfg.save_format))
    path = collector.write(preview_path(out))
    logger.info("preview: %s", path)


def _cluster(cfg: ReconConfig):
    """The Dask client of ``cfg`` (a context manager), or a null context without Dask."""
    if cfg.workers is None and cfg.scheduler is None:
        return contextlib.nullcontext()
    from tomodl.recon.distributed import dask_client

    return dask_client(cfg.workers, cfg.scheduler)


def _write_volume(job: Job, writer, mem, client, collector=None):
    """Compute the chunks ``writer`` is missing into it and finalize; ``(job, StageClock)``.

    On failure the partial output is kept for a rerun, except after an error in the input
    itself (:data:`INPUT_ERRORS`), which every rerun would meet again: then it is removed.
    """
    try:
        job = replace(job, todo=chunks_todo(writer.missing, job.first, mem.rows))
        n_todo, total = sum(r1 - r0 for r0, r1 in job.todo), writer.shape[0]
        logger.info("%d rows in chunks of %d (estimated peak %.0f MiB of a %.0f MiB budget); "
                    "%d of %d slices already written, computing %d in %d chunks", total,
                    mem.rows, mem.peak / 2**20, mem.budget / 2**20, writer.n_done, total,
                    n_todo, len(job.todo))
        clock = _execute(job, writer, total, client, collector)
        writer.finalize()
    except BaseException as err:
        _fail(err, writer)
        raise
    return job, clock


def _fail(err: BaseException, writer) -> None:
    """Close (or, after an input error, remove) the partial output; raise the one-line error
    of a failed chunk (other errors are re-raised by the caller)."""
    from tomodl.recon.conveyor import ChunkFailure

    if isinstance(err, ChunkFailure) and isinstance(err.error, INPUT_ERRORS):
        n_done = writer.n_done
        writer.abort()
        raise _input_error(err, n_done) from err.error
    writer.close()                                # keep the partial output for a rerun
    if isinstance(err, ChunkFailure):
        raise _chunk_error(err, writer) from err.error


def _execute(job: Job, writer, total: int, client=None, collector=None):
    """Run ``job.todo`` through the conveyor or Dask (``client``) into ``writer`` (and the
    preview ``collector``); return the StageClock."""
    from tomodl.recon.conveyor import StageClock, run_conveyor

    clock = StageClock()
    with _progress(job.cfg, writer.n_done, total) as bar:
        def consume(rows: Rows, rec: np.ndarray) -> None:
            with clock.time("write"):
                writer.write(rows[0] - job.first, rec)
                if collector is not None:
                    collector.add(rows[0] - job.first, rec)
            bar.update(rows[1] - rows[0])

        if client is not None:
            from tomodl.recon.distributed import run_distributed

            run_distributed(job, consume, clock, client)
        else:
            plans = stages.RunCache()                 # built by the first chunk, then reused
            run_conveyor(job.todo, lambda rows: _produce(job, rows, clock),
                         lambda rows, item: stages.reconstruct_chunk(
                             item[0], item[1], job.center, job.cfg, job.step, clock=clock,
                             plans=plans),
                         consume, queue_depth=job.cfg.queue_depth)
    return clock


def _produce(job: Job, rows: Rows, clock) -> Tuple[np.ndarray, np.ndarray]:
    if job.scratch is not None:                   # phase-retrieved rows of the first pass
        return _produce_scratch(job, rows, clock)
    with clock.time("read"):
        scan = stages.load_chunk(job.path, rows, job.cfg.corrections)
    with clock.time("preprocess"):
        proj = stages.preprocess_chunk(scan, job.path, job.cfg.corrections)
        return _stitched(job, proj, scan.theta)


def _produce_scratch(job: Job, rows: Rows, clock) -> Tuple[np.ndarray, np.ndarray]:
    from tomodl.io import scan_info
    from tomodl.recon.corrections import effective_info, line_integrals
    from tomodl.recon.projection_pass import read_rows

    with clock.time("read"):
        trans = read_rows(job.scratch, (rows[0] - job.first, rows[1] - job.first))
    with clock.time("preprocess"):
        theta = effective_info(scan_info(job.path), job.cfg.corrections).theta
        proj = line_integrals(trans, job.cfg.corrections)
        return _stitched(job, proj, theta)


def _stitched(job: Job, proj: np.ndarray, theta: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """double_fov: the chunk stitched into a 180-degree scan (row-local: chunks are exact)."""
    if job.stitch_center is None:
        return proj, theta
    from tomodl.recon.stitch import stitch_360

    proj, theta, _ = stitch_360(proj, theta, job.stitch_center)
    return proj, theta


def _recorded_center(path, info, cfg: ReconConfig, out: Path, shape, command: str,
                     spec, skipped: Optional[str] = None) -> Optional[float]:
    """The auto-found centre of an interrupted run that this run will resume, if any."""
    if cfg.center != "auto" or cfg.resume is False:
        return None
    from tomodl.io.writers import read_progress, resume_conflicts

    record = read_progress(out)
    center = (record or {}).get("provenance", {}).get("center")
    if not isinstance(center, (int, float)) or isinstance(center, bool):
        return None
    prov = provenance(path, info, cfg, float(center), command, spec, skipped)
    if resume_conflicts(record, cfg.save_format, shape, prov):
        return None
    logger.info("resuming %s: reusing the rotation axis %.2f px found by the interrupted run",
                out, center)
    return float(center)


def _chunk_error(fail, writer) -> TomodlError:
    """One-line error for a failed chunk: what failed, what was kept and how to go on."""
    err, (a, b) = fail.error, fail.rows
    kept = (f"{writer.n_done} of {writer.shape[0]} slices are kept in "
            f"{str(writer.partial)!r}; fix the cause and rerun the same ")
    go_on = "to continue ({} starts again and clears it)"
    fix = kept + "call " + go_on.format("resume=False")
    cli_fix = kept + "command " + go_on.format("--no-resume")
    if isinstance(err, TomodlError):
        return type(err)(f"{err.problem} (rows [{a}, {b}))", fix=_join(err.fix, fix),
                         cli_fix=_join(err.cli_fix or err.fix, cli_fix))
    return ChunkError(f"Rows [{a}, {b}) failed in {fail.stage}: {type(err).__name__}: {err}",
                      fix=fix, cli_fix=cli_fix)


def _input_error(fail, n_done: int) -> TomodlError:
    """One-line error for a chunk whose input is bad: the cause, the rows, and that the partial
    output was removed (a rerun would read the same input and fail the same way)."""
    err, (a, b) = fail.error, fail.rows
    gone = (f"nothing was written: the {n_done} slices done before are removed with the "
            "partial output, since rerunning the same input fails the same way")
    rows = f"rows [{a}, {b})"
    return type(err)(f"{err.problem} (detector {rows})",
                     fix=_join(err.fix, f"{gone}; other rows can be reconstructed alone with "
                                        "start_row/end_row"),
                     cli_fix=_join(err.cli_fix or err.fix, f"{gone}; other rows can be "
                                   "reconstructed alone with --start-row/--end-row"))


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _progress(cfg: ReconConfig, initial: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="slice", desc="recon", leave=False,
                disable=None if cfg.progress else True, dynamic_ncols=True, smoothing=0.1)

