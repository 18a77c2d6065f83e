# SPDX-License-Identifier: BSD-3-Clause
"""Chunked reconstruction of a scan file: read rows, pre-process, FBP, denoise, write.

:func:`reconstruct_file` plans chunks of detector rows from :func:`tomodl.io.scan_info`, reads
only each chunk (an HDF5 hyperslab), normalizes, takes ``-log``, reconstructs with the centre
given or found once on the middle row, optionally denoises, and writes the slices through an
atomic, resumable :func:`tomodl.io.open_writer`.  Memory is bounded by the chunk size.

Each stage is a plain function (:func:`plan_chunks`, :func:`load_chunk`,
:func:`preprocess_chunk`, :func:`resolve_center`, :func:`reconstruct_chunk`) so that a later
threaded or Dask conveyor can reuse them unchanged; the loop here is sequential.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from tomodl.errors import ScanFileError

logger = logging.getLogger(__name__)

#: Reconstruction types (Tomocupy's names): a whole volume, or one slice per trial centre.
RECONSTRUCTION_TYPES = ("full", "try")
#: Default working-memory budget of one chunk, bytes.
MEMORY_BUDGET = 2 * 2**30
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
        on the middle row of the selected rows (once, logged).
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
        Rows per chunk; default from ``memory_budget``.
    memory_budget : int
        Bytes one chunk may use when ``nsino_per_chunk`` is not given.
    save_format : str
        ``"tiff"``, ``"h5"`` or ``"zarr"`` (:data:`tomodl.io.SAVE_FORMATS`).
    out_path : Path, optional
        Output (default next to the scan: ``<stem>_rec/`` for TIFF, ``<stem>_rec.h5``,
        ``<stem>_rec.zarr``, ``<stem>_try/`` in try mode).
    overwrite, resume : bool
        Replace an existing output; continue an interrupted one.
    model, batch_size, dtype : optional
        Denoiser options (only with ``"fbp+<model>"``).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    ncore : int, optional
        CPU threads.
    progress : bool
        Show a progress bar on stderr.
    """

    algorithm: str = "fbp"
    center: Union[float, str] = "auto"
    center_method: str = "auto"
    reconstruction_type: str = "full"
    center_search_width: float = 10.0
    center_search_step: float = 0.5
    filter_name: str = "shepp"
    start_row: Optional[int] = None
    end_row: Optional[int] = None
    nsino_per_chunk: Optional[int] = None
    memory_budget: int = MEMORY_BUDGET
    save_format: str = "tiff"
    out_path: Optional[Path] = None
    overwrite: bool = False
    resume: bool = False
    model: Optional[str] = None
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
        if self.nsino_per_chunk is not None and self.nsino_per_chunk < 1:
            raise ValueError(f"nsino_per_chunk must be >= 1, got {self.nsino_per_chunk}")


class ReconResult(NamedTuple):
    """What :func:`reconstruct_file` did: output path, centre used, slices written, seconds."""

    path: Path
    center: float
    n_slices: int
    seconds: float


# -- stages -----------------------------------------------------------------------------------
def select_rows(info, cfg: ReconConfig) -> Rows:
    """Detector rows ``(start, stop)`` selected by ``cfg`` (Python slice rules, checked)."""
    start, stop, _ = slice(cfg.start_row, cfg.end_row).indices(info.n_rows)
    if stop <= start:
        raise ValueError(f"rows [{cfg.start_row}, {cfg.end_row}) select nothing: the scan has "
                         f"{info.n_rows} rows (0 .. {info.n_rows - 1})")
    return start, stop


def plan_chunks(info, cfg: ReconConfig) -> List[Rows]:
    """Split the selected rows into chunks of ``nsino_per_chunk`` (or the memory budget)."""
    start, stop = select_rows(info, cfg)
    rows = cfg.nsino_per_chunk
    if rows is None:
        # raw + normalized + line integrals (float32), the slices, and the fbp's own work
        per_row = 4 * (3 * (info.n_angles + info.n_flat + info.n_dark) * info.n_det
                       + 3 * info.n_det ** 2)
        rows = max(1, int(cfg.memory_budget // per_row))
    return [(r, min(r + rows, stop)) for r in range(start, stop, rows)]


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


def model_step(cfg: ReconConfig) -> Optional[Callable]:
    """The denoising step of ``cfg.algorithm`` (loaded once), or None for plain FBP."""
    from tomodl.recon.api import load_model_step, parse_algorithm

    kw = {k: getattr(cfg, k) for k in ("model", "batch_size", "dtype")}
    return load_model_step(parse_algorithm(cfg.algorithm), kw, cfg.filter_name)


def reconstruct_chunk(proj: np.ndarray, theta: np.ndarray, center: float, cfg: ReconConfig,
                      step: Optional[Callable] = None) -> np.ndarray:
    """FBP (and denoising) of projections ``(n_angles, rows, n_det)`` -> ``(rows, N, N)``."""
    from tomodl.recon.fbp import fbp

    rec = fbp(np.swapaxes(proj, 0, 1), theta, center, filter_name=cfg.filter_name,
              device=cfg.device, ncore=cfg.ncore)
    if step is not None:
        rec = step(rec, device=cfg.device, ncore=cfg.ncore)
    return np.asarray(rec, dtype=np.float32)


def output_path(path, cfg: ReconConfig) -> Path:
    """Where the output goes (``cfg.out_path`` or the default next to the scan)."""
    if cfg.out_path is not None:
        return Path(cfg.out_path)
    path = Path(path)
    key = "try" if cfg.reconstruction_type == "try" else cfg.save_format
    return path.with_name(path.stem + OUTPUT_SUFFIX[key])


def provenance(path, info, cfg: ReconConfig, center: float, command: str) -> dict:
    """The record stored with the output (the writer adds the tomodl version)."""
    rows = select_rows(info, cfg)
    return {"command": command, "input": info.provenance(), "algorithm": cfg.algorithm,
            "filter_name": cfg.filter_name, "center": center, "rows": list(rows),
            "model": cfg.model, "dtype": cfg.dtype, "units": "attenuation per pixel"}


# -- drivers ----------------------------------------------------------------------------------
def reconstruct_file(path, cfg: ReconConfig, *, command: str = "") -> ReconResult:
    """Reconstruct a DXchange / NXtomo scan file chunk by chunk (or run the try mode).

    Parameters
    ----------
    path : str or Path
        Scan file (read-only; only the rows of each chunk are read).
    cfg : ReconConfig
        Settings.
    command : str
        Command line recorded in the output's provenance.

    Returns
    -------
    ReconResult
        Output path, centre used (pixels), number of slices, elapsed seconds.
    """
    from tomodl.io import scan_info

    t0 = time.perf_counter()
    info = scan_info(path)
    out = output_path(path, cfg)
    if cfg.reconstruction_type == "try":
        center, n = _run_try(path, info, cfg, out)
    else:
        center, n = _run_full(path, info, cfg, out, command)
    return ReconResult(out, center, n, time.perf_counter() - t0)


def _open_output(path, info, cfg: ReconConfig, out: Path, center: float, command: str):
    from tomodl.io import open_writer

    start, stop = select_rows(info, cfg)
    return open_writer(cfg.save_format, out, (stop - start, info.n_det, info.n_det),
                       provenance=provenance(path, info, cfg, center, command),
                       overwrite=cfg.overwrite, resume=cfg.resume, inputs=[path])


def _run_full(path, info, cfg: ReconConfig, out: Path, command: str) -> Tuple[float, int]:
    from tomodl.io import check_output_path
    from tomodl.io.atomic import refuse_existing

    check_output_path(out, [path])
    refuse_existing(out, cfg.overwrite)          # fail before any work
    step = model_step(cfg)
    center = resolve_center(path, info, cfg)
    chunks = plan_chunks(info, cfg)
    first = chunks[0][0]
    writer = _open_output(path, info, cfg, out, center, command)
    try:
        todo = [c for c in chunks if not _is_done(writer.done, c[0] - first, c[1] - first)]
        with _progress(cfg, writer.n_done, chunks[-1][1] - first) as bar:
            for rows in todo:
                scan = load_chunk(path, rows)
                rec = reconstruct_chunk(preprocess_chunk(scan, path), scan.theta, center, cfg,
                                        step)
                writer.write(rows[0] - first, rec)
                bar.update(rows[1] - rows[0])
        writer.finalize()
    except BaseException:
        writer.close()                            # keep the partial output for --resume
        raise
    return center, chunks[-1][1] - first


def _is_done(done, a: int, b: int) -> bool:
    return any(x <= a and b <= y for x, y in done)


def _progress(cfg: ReconConfig, initial: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="slice", desc="recon", leave=False,
                disable=None if cfg.progress else True, dynamic_ncols=True)


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
