# SPDX-License-Identifier: BSD-3-Clause
"""Settings and results of a file reconstruction (:func:`tomodl.recon.volume.reconstruct_file`).

:class:`ReconConfig` is built once (e.g. by the CLI) and checked in ``__post_init__``, so bad
settings fail before any file is opened; :class:`ReconResult` is what a run returns and
:class:`Job` what the conveyor or the Dask driver needs to run the planned chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

from tomodl.recon.corrections import NO_CORRECTIONS, Corrections

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
    refine : int
        Iterations refining the network's output against the measured projections
        (:mod:`tomodl.recon.refine`; 0 = off; only with ``"fbp+<model>"``).
    refine_nonneg : bool
        Keep the refined images non-negative (absorption data; default True).  False for data
        with real negative values (propagation fringes without phase retrieval).
    refine_rounds : int
        Network passes of the refinement (default 1; 2 = one plug-and-play round more:
        :class:`tomodl.recon.refiner.RefineSettings`).
    sparse : int, optional
        The scan is 1 in ``sparse`` angles of a full scan: without ``model``, use the shipped
        weights trained for that factor (default: chosen by the projections per half turn).
    device, ncore : str, int
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``; CPU threads (per worker with Dask).
    progress : bool
        Show a progress bar on stderr.
    corrections : Corrections
        Pre-processing (stripe removal, dezinger, binning, projection subset;
        :class:`tomodl.recon.corrections.Corrections`); the default changes nothing.  With
        binning, ``center`` and ``start_row``/``end_row`` stay in raw detector pixels.
    preview : bool, optional
        Write ``<out>_preview.png``, the three orthogonal middle slices
        (:mod:`tomodl.recon.preview`); ``None`` (default): for full runs when cheap
        (:data:`tomodl.recon.preview.AUTO_PREVIEW_BYTES`), skipped with a warning if a file
        tomodl did not write is in the way.
    check : bool, optional
        Check FBP and the network against set-aside measured angles before the volume
        (:mod:`tomodl.recon.check`): scores in the provenance, maps in ``<out>_check/``, and
        with the default algorithm and shipped weights the FBP is kept where the network is
        less consistent.  ``None`` (default): on with a network, checking at most one row in
        :data:`tomodl.recon.check.AUTO_ROWS_PER_CHECKED` (off below 2 rows).
    check_rows : int or tuple of int
        Rows checked: a count spread evenly over the selected rows (default 8), or the rows.
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
    refine: int = 0
    refine_nonneg: bool = True
    refine_rounds: int = 1
    device: str = "auto"
    ncore: Optional[int] = None
    progress: bool = True
    corrections: Corrections = NO_CORRECTIONS
    preview: Optional[bool] = None
    check: Optional[bool] = None
    check_rows: Union[int, Tuple[int, ...]] = 8

    def __post_init__(self):
        from tomodl.recon.api import parse_algorithm
        from tomodl.recon.check import parse_rows

        parse_rows(self.check_rows)                 # checks the value

        alg = parse_algorithm(self.algorithm)
        given = [f"{k}={getattr(self, k)!r}" for k in ("model", "batch_size", "dtype")
                 if getattr(self, k) is not None]
        if self.refine:
            given.append(f"refine={self.refine!r}")
        self.refine_settings()                      # checks the values
        if alg.model is None and given:
            raise ValueError(f"{', '.join(given)}: only used by a denoising algorithm "
                             f"(fbp+<model>), not by {self.algorithm!r}; drop it or choose one "
                             "of the fbp+<model> algorithms")
        if self.reconstruction_type not in RECONSTRUCTION_TYPES:
            raise ValueError(f"Unknown reconstruction_type {self.reconstruction_type!r}; choose "
                             f"one of {list(RECONSTRUCTION_TYPES)}")
        if isinstance(self.center, str) and self.center != "auto":
            raise ValueError(f"center must be a number of pixels or 'auto', got {self.center!r}")
        self._check_try_range()
        for name in ("nsino_per_chunk", "max_memory", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.queue_depth < 0:
            raise ValueError(f"queue_depth must be >= 0, got {self.queue_depth}")
        if self.resume not in RESUME_MODES or isinstance(self.resume, int) and \
                not isinstance(self.resume, bool):
            raise ValueError(f"resume must be one of {list(RESUME_MODES)}, got {self.resume!r}")
        if not isinstance(self.corrections, Corrections):
            raise ValueError("corrections must be a tomodl.recon.corrections.Corrections, got "
                             f"{type(self.corrections).__name__}")
        if self.workers is not None and self.scheduler is not None:
            raise ValueError("give either workers (a local Dask cluster) or scheduler (an "
                             "existing one), not both")

    def refine_settings(self):
        """The :class:`tomodl.recon.refiner.RefineSettings` of ``refine``, ``refine_nonneg`` and
        ``refine_rounds`` (which checks them)."""
        from tomodl.recon.refiner import RefineSettings

        return RefineSettings(iterations=self.refine, nonneg=self.refine_nonneg,
                              rounds=self.refine_rounds)

    def _check_try_range(self) -> None:
        from tomodl.recon.center import MAX_TRIAL_CENTERS

        w, s = self.center_search_width, self.center_search_step
        if not (math.isfinite(w) and math.isfinite(s) and w > 0 and s > 0):
            raise ValueError(f"center_search_width ({w}) and center_search_step ({s}) must be "
                             "finite, positive numbers of pixels")
        count = math.floor(2 * w / s) + 1
        if count > MAX_TRIAL_CENTERS:
            raise ValueError(f"center_search_width {w:g} px and center_search_step {s:g} px "
                             f"give {count} trial centres; at most {MAX_TRIAL_CENTERS} are "
                             "reconstructed: use a larger step or a smaller width")


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
    #: Transmission rows from the projection pass (:mod:`tomodl.recon.projection_pass`), if any.
    scratch: Optional[Path] = None
    #: double_fov: the axis on the original detector; the chunks are stitched about it.
    stitch_center: Optional[float] = None

