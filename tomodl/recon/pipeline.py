# SPDX-License-Identifier: BSD-3-Clause
"""Chunked reconstruction of a scan file: read rows, pre-process, FBP, denoise, write.

:func:`reconstruct_file` plans chunks of detector rows from :func:`tomodl.io.scan_info` and a
memory budget (:mod:`tomodl.recon.budget`), finds the centre once (or reuses the one recorded
by an interrupted run), and streams the chunks through a threaded conveyor
(:mod:`tomodl.recon.conveyor`: reading chunk k+1 and writing chunk k-1 overlap the
reconstruction of chunk k) or through a Dask cluster (:mod:`tomodl.recon.distributed`) into an
atomic, resumable :func:`tomodl.io.open_writer`.  Peak memory depends on the chunk size, not on
the volume.

Each stage is a plain function (:func:`load_chunk`, :func:`preprocess_chunk`,
:func:`resolve_center`, :func:`reconstruct_chunk`) shared by the conveyor, the Dask workers
and :mod:`tomodl.sim.pairs`.
"""
from __future__ import annotations

import contextlib
import getpass
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from tomodl.errors import ChunkError, ScanFileError, TomodlError

logger = logging.getLogger(__name__)

#: Reconstruction types (Tomocupy's names): a whole volume, or one slice per trial centre.
RECONSTRUCTION_TYPES = ("full", "try")
#: Values of ``ReconConfig.resume``: continue a matching partial output ("auto" also discards a
#: partial output started with other settings; True refuses it), or always start again.
RESUME_MODES = (True, False, "auto")
#: Suffix of the default output, per save format and for the try mode.
OUTPUT_SUFFIX = {"tiff": "_rec", "h5": "_rec.h5", "zarr": "_rec.zarr", "try": "_try"}
Rows = Tuple[int, int]


@dataclass(frozen=True)
class ReconConfig:
    """Everything :func:`reconstruct_file` needs; built once (e.g. by the CLI), never mutated.

    Attributes
    ----------
    algorithm : str
        ``"fbp"``, ``"fbp+resattunet"`` or ``"fbp+unet"`` (:data:`tomodl.recon.api.ALGORITHMS`).
    center : float or "auto"
        Rotation axis in detector pixels, or ``"auto"``: :func:`tomodl.recon.center.find_center`
        on the middle row of the selected rows (once, logged, recorded in the output).
    center_method : str
        Method for ``"auto"`` (:data:`tomodl.recon.center.CENTER_METHODS`).
    reconstruction_type : {"full", "try"}
        ``"try"`` reconstructs the middle row at ``center +- center_search_width`` (step
        ``center_search_step``) and writes one image per centre.
    filter_name : str
        FBP filter.
    start_row, end_row : int, optional
        Detector rows ``[start_row, end_row)`` to reconstruct (default all).
    nsino_per_chunk : int, optional
        Rows per chunk; default from ``max_memory`` (:func:`tomodl.recon.budget.plan_memory`).
    max_memory : int, optional
        Bytes the run may use for its data (per worker with Dask); default half the available
        RAM (:func:`tomodl.recon.budget.default_max_memory`).
    queue_depth : int
        Chunks waiting between the read, compute and write stages; 0 runs them in sequence.
    save_format : str
        ``"tiff"``, ``"h5"`` or ``"zarr"`` (:data:`tomodl.io.SAVE_FORMATS`).
    out_path : Path, optional
        Output (default next to the scan, :data:`OUTPUT_SUFFIX`).
    overwrite : bool
        Replace an existing final output.
    resume : {"auto", True, False}
        ``"auto"``: continue an interrupted output started with the same settings, else start
        again; ``True``: continue it, refusing other settings; ``False``: always start again.
    workers : int, optional
        Start a local Dask cluster of this many worker processes (loopback only).
    scheduler : str, optional
        Address of an existing Dask scheduler (e.g. ``tcp://10.0.0.5:8786``).
    model, batch_size, dtype : optional
        Denoiser options (only with ``"fbp+<model>"``).
    sparse : int, optional
        The scan is 1 in ``sparse`` angles of a full scan: without ``model``, use the shipped
        weights trained for that factor (default: chosen by the projections per half turn).
    device, ncore : str, int
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``; CPU threads (per worker with Dask).
    progress : bool
        Show a progress bar on stderr.
    """

    algorithm: str = "fbp+resattunet"
    center: Union[float, str] = "auto"
    center_method: str = "auto"
    reconstruction_type: str = "full"
    center_search_width: float = 10.0
    center_search_step: float = 0.5
    filter_name: str = "shepp"
    start_row: Optional[int] = None
    end_row: Optional[int] = None
    nsino_per_chunk: Optional[int] = None
    max_memory: Optional[int] = None
    queue_depth: int = 1
    save_format: str = "tiff"
    out_path: Optional[Path] = None
    overwrite: bool = False
    resume: Union[bool, str] = "auto"
    workers: Optional[int] = None
    scheduler: Optional[str] = None
    model: Optional[str] = None
    sparse: Optional[int] = None
    batch_size: Optional[int] = None
    dtype: Optional[str] = None
    device: str = "auto"
    ncore: Optional[int] = None
    progress: bool = True

    def __post_init__(self):
        from tomodl.recon.api import parse_algorithm

        alg = parse_algorithm(self.algorithm)
        given = [f"{k}={getattr(self, k)!r}" for k in ("model", "batch_size", "dtype")
                 if getattr(self, k) is not None]
        if alg.model is None and given:
            raise ValueError(f"{', '.join(given)}: only used by a denoising algorithm "
                             f"(fbp+<model>), not by {self.algorithm!r}; drop it or choose one "
                             "of the fbp+<model> algorithms")
        if self.reconstruction_type not in RECONSTRUCTION_TYPES:
            raise ValueError(f"Unknown reconstruction_type {self.reconstruction_type!r}; choose "
                             f"one of {list(RECONSTRUCTION_TYPES)}")
        if isinstance(self.center, str) and self.center != "auto":
            raise ValueError(f"center must be a number of pixels or 'auto', got {self.center!r}")
        if not (self.center_search_width > 0 and self.center_search_step > 0):
            raise ValueError("center_search_width and center_search_step must be positive")
        for name in ("nsino_per_chunk", "max_memory", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.queue_depth < 0:
            raise ValueError(f"queue_depth must be >= 0, got {self.queue_depth}")
        if self.resume not in RESUME_MODES or isinstance(self.resume, int) and \
                not isinstance(self.resume, bool):
            raise ValueError(f"resume must be one of {list(RESUME_MODES)}, got {self.resume!r}")
        if self.workers is not None and self.scheduler is not None:
            raise ValueError("give either workers (a local Dask cluster) or scheduler (an "
                             "existing one), not both")


class ReconResult(NamedTuple):
    """What :func:`reconstruct_file` did.

    ``path``: output; ``center``: axis used (pixels); ``n_slices``: slices in the output;
    ``seconds``: wall time; ``n_computed``: slices computed by this run (fewer after an
    interruption); ``chunk_rows``: rows per chunk; ``stages``: busy seconds per stage;
    ``pipeline_seconds``: wall time of the chunk loop alone (without planning, centre finding
    and the final rename); ``memory_estimate``: estimated peak bytes of the data in flight.
    """

    path: Path
    center: float
    n_slices: int
    seconds: float
    n_computed: int = 0
    chunk_rows: int = 0
    stages: Optional[Dict[str, float]] = None
    pipeline_seconds: float = 0.0
    memory_estimate: int = 0


@dataclass(frozen=True)
class Job:
    """A planned full reconstruction (everything the conveyor or the Dask driver needs)."""

    path: Path
    cfg: ReconConfig
    center: float
    first: int
    todo: Tuple[Rows, ...]
    spec: Any = None
    step: Optional[Callable] = field(default=None, compare=False)


# -- stages -----------------------------------------------------------------------------------
def select_rows(info, cfg: ReconConfig) -> Rows:
    """Detector rows ``(start, stop)`` selected by ``cfg`` (Python slice rules, checked)."""
    start, stop, _ = slice(cfg.start_row, cfg.end_row).indices(info.n_rows)
    if stop <= start:
        raise ValueError(f"rows [{cfg.start_row}, {cfg.end_row}) select nothing: the scan has "
                         f"{info.n_rows} rows (0 .. {info.n_rows - 1})")
    return start, stop


def plan_memory(info, cfg: ReconConfig, spec=None):
    """Rows per chunk and the memory estimate (:class:`tomodl.recon.budget.MemoryPlan`)."""
    from tomodl.recon import budget as b

    start, stop = select_rows(info, cfg)
    total = cfg.max_memory or b.default_max_memory()
    fixed = b.fbp_workspace(info.n_angles, info.n_det, info.n_det, b.cpu_threads(cfg.ncore))
    if spec is not None and spec.max_memory is not None:
        fixed += spec.max_memory
    return b.plan_memory(info, stop - start, n_grid=info.n_det, queue_depth=cfg.queue_depth,
                         budget=total, fixed=fixed, denoised=spec is not None,
                         nsino_per_chunk=cfg.nsino_per_chunk)


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


def load_chunk(path, rows: Rows):
    """Read projections, flats, darks and angles of detector rows ``rows`` only."""
    from tomodl.io import read_dx

    return read_dx(path, sino=rows)


def preprocess_chunk(scan, path: Any = "") -> np.ndarray:
    """Line integrals ``-log(normalize(proj, flat, dark))``, ``(n_angles, rows, n_det)`` float32."""
    from tomodl.recon.preprocess import minus_log, normalize

    if scan.flat is None:
        raise ScanFileError(f"{str(path)!r} has no flat fields (e.g. /exchange/data_white): "
                            "tomodl recon needs raw counts with flats; normalize the data first "
                            "or add the flats to the file")
    return minus_log(normalize(scan.proj, scan.flat, scan.dark))


def resolve_center(path, info, cfg: ReconConfig) -> float:
    """The rotation axis: ``cfg.center``, or found once on the middle selected row."""
    if cfg.center != "auto":
        return float(cfg.center)
    from tomodl.recon.center import find_center

    start, stop = select_rows(info, cfg)
    mid = (start + stop) // 2
    scan = load_chunk(path, (mid, mid + 1))
    center = find_center(preprocess_chunk(scan, path), scan.theta, ind=0,
                         method=cfg.center_method, filter_name=cfg.filter_name,
                         device=cfg.device, ncore=cfg.ncore)
    logger.info("rotation axis found on row %d: %.2f px (detector middle %.1f)", mid, center,
                (info.n_det - 1) / 2)
    return center


def model_step(cfg: ReconConfig, budget: int = 2**30, n_grid: int = 512, theta=None):
    """``(ModelSpec, step, skipped)`` of ``cfg.algorithm`` (weights loaded once).

    ``(None, None, None)`` for plain FBP; ``(None, None, reason)`` when the shipped weights
    chosen for ``theta`` must not be applied (:func:`tomodl.models.releases.fallback_reason`).
    """
    from tomodl.recon.api import parse_algorithm
    from tomodl.recon.denoising import prepare_model

    n180 = None
    if theta is not None:
        from tomodl.models.releases import angles_per_half_turn

        n180 = angles_per_half_turn(theta)
    spec, den, skipped = prepare_model(
        parse_algorithm(cfg.algorithm).model, cfg.model, dtype=cfg.dtype,
        batch_size=cfg.batch_size, device=cfg.device, filter_name=cfg.filter_name,
        n_grid=n_grid, budget=budget, n_angles=n180, sparse=cfg.sparse)
    return spec, (spec.step(den) if spec is not None else None), skipped


def reconstruct_chunk(proj: np.ndarray, theta: np.ndarray, center: float, cfg: ReconConfig,
                      step: Optional[Callable] = None, clock=None) -> np.ndarray:
    """FBP (and denoising) of projections ``(n_angles, rows, n_det)`` -> ``(rows, N, N)``.

    ``clock`` (a :class:`tomodl.recon.conveyor.StageClock`) receives the busy seconds.
    """
    from tomodl.recon.fbp import fbp

    with _timed(clock, "fbp"):
        rec = fbp(np.swapaxes(proj, 0, 1), theta, center, filter_name=cfg.filter_name,
                  device=cfg.device, ncore=cfg.ncore)
    if step is not None:
        with _timed(clock, "denoise"):
            rec = step(rec, device=cfg.device, ncore=cfg.ncore)
    return np.asarray(rec, dtype=np.float32)


def _timed(clock, stage: str):
    return clock.time(stage) if clock is not None else contextlib.nullcontext()


def output_path(path, cfg: ReconConfig) -> Path:
    """Where the output goes (``cfg.out_path`` or the default next to the scan)."""
    if cfg.out_path is not None:
        return Path(cfg.out_path)
    path = Path(path)
    key = "try" if cfg.reconstruction_type == "try" else cfg.save_format
    return path.with_name(path.stem + OUTPUT_SUFFIX[key])


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
            "model_skipped": skipped, "units": "attenuation per pixel"}


def _user() -> str:
    with contextlib.suppress(KeyError, OSError):
        return getpass.getuser()
    return ""


# -- drivers ----------------------------------------------------------------------------------
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
    """
    from tomodl.io import scan_info

    t0 = time.perf_counter()
    info = scan_info(path)
    out = output_path(path, cfg)
    if cfg.reconstruction_type == "try":
        center, n = _run_try(path, info, cfg, out)
        return ReconResult(out, center, n, time.perf_counter() - t0)
    res = _run_full(Path(path), info, cfg, out, command)
    return res._replace(seconds=time.perf_counter() - t0)


def _run_full(path: Path, info, cfg: ReconConfig, out: Path, command: str) -> ReconResult:
    from tomodl.io import check_output_path, open_writer
    from tomodl.io.atomic import refuse_existing
    from tomodl.recon.budget import default_max_memory
    from tomodl.recon.conveyor import ChunkFailure

    check_output_path(out, [path])
    refuse_existing(out, cfg.overwrite)          # fail before any work
    start, stop = select_rows(info, cfg)
    spec, step, skipped = model_step(cfg, cfg.max_memory or default_max_memory(), info.n_det,
                                     info.theta)
    mem = plan_memory(info, cfg, spec)
    shape = (stop - start, info.n_det, info.n_det)
    center = _recorded_center(path, info, cfg, out, shape, command, spec, skipped)
    if center is None:
        center = resolve_center(path, info, cfg)
    prov = provenance(path, info, cfg, center, command, spec, skipped)
    writer = open_writer(cfg.save_format, out, shape, provenance=prov, overwrite=cfg.overwrite,
                         resume=cfg.resume, inputs=[path])
    try:
        job = Job(path, cfg, center, start, chunks_todo(writer.missing, start, mem.rows), spec,
                  step)
        n_todo = sum(r1 - r0 for r0, r1 in job.todo)
        logger.info("%d rows in chunks of %d (estimated peak %.0f MiB of a %.0f MiB budget); "
                    "%d of %d slices already written, computing %d in %d chunks", stop - start,
                    mem.rows, mem.peak / 2**20, mem.budget / 2**20, writer.n_done, shape[0],
                    n_todo, len(job.todo))
        clock = _execute(job, writer, shape[0])
        wall = clock.wall
        writer.finalize()
    except BaseException as err:
        writer.close()                            # keep the partial output for a rerun
        if isinstance(err, ChunkFailure):
            raise _chunk_error(err, writer) from err.error
        raise
    logger.info("%s", clock.summary(wall))
    return ReconResult(out, center, shape[0], wall, n_todo, mem.rows, clock.busy, wall, mem.peak)


def _execute(job: Job, writer, total: int):
    """Run ``job.todo`` through the conveyor or Dask into ``writer``; return the StageClock."""
    from tomodl.recon.conveyor import StageClock, run_conveyor

    clock = StageClock()
    with _progress(job.cfg, writer.n_done, total) as bar:
        def consume(rows: Rows, rec: np.ndarray) -> None:
            with clock.time("write"):
                writer.write(rows[0] - job.first, rec)
            bar.update(rows[1] - rows[0])

        if job.cfg.workers is not None or job.cfg.scheduler is not None:
            from tomodl.recon.distributed import run_distributed

            run_distributed(job, consume, clock)
        else:
            run_conveyor(job.todo, lambda rows: _produce(job, rows, clock),
                         lambda rows, item: reconstruct_chunk(item[0], item[1], job.center,
                                                              job.cfg, job.step, clock=clock),
                         consume, queue_depth=job.cfg.queue_depth)
    return clock


def _produce(job: Job, rows: Rows, clock) -> Tuple[np.ndarray, np.ndarray]:
    with clock.time("read"):
        scan = load_chunk(job.path, rows)
    with clock.time("preprocess"):
        return preprocess_chunk(scan, job.path), scan.theta


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
    """One-line error for a failed chunk: what failed, and what was kept."""
    err, (a, b) = fail.error, fail.rows
    kept = (f"{writer.n_done} of {writer.shape[0]} slices are kept in "
            f"{str(writer.partial)!r}; fix the cause and rerun the same command to continue")
    if isinstance(err, TomodlError):
        return type(err)(f"{err} (rows [{a}, {b}); {kept})")
    return ChunkError(f"Rows [{a}, {b}) failed in {fail.stage}: {type(err).__name__}: {err}; "
                      f"{kept}")


def _progress(cfg: ReconConfig, initial: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="slice", desc="recon", leave=False,
                disable=None if cfg.progress else True, dynamic_ncols=True, smoothing=0.1)


def _run_try(path, info, cfg: ReconConfig, out: Path) -> Tuple[float, int]:
    """Reconstruct the middle row at trial centres into ``out`` (written atomically)."""
    import os

    from tomodl.io import check_output_path
    from tomodl.io.atomic import jsonable, refuse_existing, remove_path, write_json_atomic
    from tomodl.recon.center import write_center

    check_output_path(out, [path])
    refuse_existing(out, cfg.overwrite)
    center = resolve_center(path, info, cfg)
    start, stop = select_rows(info, cfg)
    mid = (start + stop) // 2
    scan = load_chunk(path, (mid, mid + 1))
    w, s = cfg.center_search_width, cfg.center_search_step
    partial = out.with_name(out.name + ".partial")
    remove_path(partial)
    try:
        res = write_center(preprocess_chunk(scan, path), scan.theta, partial,
                           (center - w, center + w + s / 2, s), ind=0,
                           filter_name=cfg.filter_name, device=cfg.device, ncore=cfg.ncore)
        write_json_atomic(partial / "sharpness.json", jsonable(
            {"row": mid, "center": center, "centers": res.centers, "sharpness": res.sharpness,
             "sharpest": res.best}))
        if cfg.overwrite:
            remove_path(out)
        os.replace(partial, out)
    except BaseException:
        remove_path(partial)
        raise
    logger.info("try mode: %d centres around %.2f on row %d in %s; sharpest %.2f",
                res.centers.size, center, mid, out, res.best)
    return center, int(res.centers.size)
