# SPDX-License-Identifier: BSD-3-Clause
"""The denoising step of a file reconstruction, described so that any process can load it.

:class:`ModelSpec` is a small picklable record (architecture, weights folder, weights SHA-256,
compute dtype, batch size, memory budget): :func:`prepare_model` builds it once (it also loads
and checks the weights, screens them with the release rules and warns about mismatches) for the
command line's volume pipeline and for :func:`tomodl.recon.api.recon` alike; Dask workers load
the same weights from it once each (:mod:`tomodl.recon.distributed`), and it goes into the
output's provenance.  The compute dtype
is resolved on the driver (``"auto"`` may mean bfloat16 on one CPU and float32 on another), so
every process computes the same numbers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from tomodl.errors import TomodlError, WeightsError
from tomodl.recon.budget import DenoiserMemory, denoiser_memory

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A denoiser as loaded by :func:`prepare_model`.

    Attributes
    ----------
    arch : str
        Registered network (``"resattunet"``, ``"unet"``).
    source : str
        Absolute path of the weights folder.
    sha256 : str or None
        SHA-256 of ``model.safetensors`` (checked again by every process that loads it; None
        for an in-memory module given to the Python API).
    dtype : str
        Compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``), resolved.
    batch_size : int or None
        Slices per forward pass (None: from ``max_memory``).
    max_memory : int or None
        Bytes the network may use on the CPU (None: the denoiser's default, e.g. on CUDA); set
        from ``memory`` by :meth:`with_budget`.
    sparse_factor : int or None
        Angular subsampling the weights were trained for.
    filter_name : str or None
        FBP filter of the training inputs.
    memory : DenoiserMemory or None
        Minimum and wanted bytes of the network on the CPU (None on CUDA).
    """

    arch: str
    source: str
    sha256: Optional[str]
    dtype: str
    batch_size: Optional[int] = None
    max_memory: Optional[int] = None
    sparse_factor: Optional[int] = None
    filter_name: Optional[str] = None
    memory: Optional[DenoiserMemory] = None

    def with_budget(self, free: int) -> "ModelSpec":
        """This spec with ``max_memory`` = the network's share of ``free`` bytes (at most what
        it wants, never below its minimum; :meth:`DenoiserMemory.share`)."""
        if self.memory is None:
            return self
        return replace(self, max_memory=self.memory.share(free))

    def load(self) -> Any:
        """Load the :class:`~tomodl.models.inference.Denoiser` (checks the SHA-256)."""
        from tomodl.models.inference import load_denoiser

        den = load_denoiser(self.arch, self.source)
        if den.config is None or den.config.sha256 != self.sha256:
            raise WeightsError(f"weights {self.source!r} changed during the run (SHA-256 "
                               f"{self.sha256[:12]}... expected); rerun with stable weights")
        return den

    def step(self, den: Any) -> Callable[..., Any]:
        """``step(slices, device=..., ncore=...)`` denoising ``(n, N, N)`` slices with ``den``."""
        from tomodl.models.inference import denoise

        def run(slices, device="auto", ncore=None):
            return denoise(slices, den, batch_size=self.batch_size or "auto", device=device,
                           dtype=self.dtype, max_memory=self.max_memory, ncore=ncore)

        return run

    def provenance(self) -> Dict[str, Any]:
        """The record stored in the output: name, weights and their hash, dtype, contract."""
        return {"name": self.arch, "weights": self.source, "sha256": self.sha256,
                "dtype": self.dtype, "trained_sparse_factor": self.sparse_factor,
                "trained_filter": self.filter_name}


def prepare_model(arch: Optional[str], model: Any, *, dtype: Optional[str],
                  batch_size: Optional[int], device: str, filter_name: str,
                  n_grid: int, n_angles: Optional[float] = None,
                  sparse: Optional[int] = None, corrections: Any = None
                  ) -> Tuple[Optional[ModelSpec], Any, Optional[str]]:
    """Load the denoiser of a run once and describe it; ``(None, None, None)`` without one.

    The one set-up of the network for the command line and the Python API: the same release
    screening (:func:`tomodl.models.releases.screen`), the same warnings (training filter and
    sparse factor) and the same memory sizing (:func:`tomodl.recon.budget.denoiser_memory`;
    the caller gives the network its share with :meth:`ModelSpec.with_budget`).

    Parameters
    ----------
    arch : str or None
        Network of the ``fbp+<arch>`` algorithm (None: plain FBP).
    model : None, str, path, Denoiser or torch.nn.Module
        Weights folder or released name (None: the released weights of ``arch``).
    dtype, batch_size, device
        Denoiser options (``dtype`` None means ``"auto"``).
    filter_name : str
        FBP filter of the run (a mismatch with the weights' training filter is logged).
    n_grid : int
        Slice size ``N`` (sizes the network's CPU memory).
    n_angles, sparse : optional
        Projections per half turn of the scan and its nominal subsampling; with ``model=None``
        they choose among the shipped weights (:func:`tomodl.models.releases.select_weights`).
    corrections : Corrections, optional
        Pre-processing of the run's raw scan; a difference in stripe removal or dezinger from
        what the weights' training pairs recorded is logged (None: not checked).

    Returns
    -------
    spec : ModelSpec or None
    denoiser : tomodl.models.inference.Denoiser or None
    skipped : str or None
        Why the shipped network is not applied to these data (``spec`` and ``denoiser`` are
        then None: plain FBP; :func:`tomodl.models.releases.fallback_reason`).
    """
    if arch is None:
        return None, None, None
    try:
        from tomodl.backend import resolve_device
        from tomodl.models.inference import load_denoiser, resolve_dtype
        from tomodl.models.releases import screen
    except ImportError as err:
        raise TomodlError(f"algorithm 'fbp+{arch}' needs tomodl's deep-learning part (torch): "
                          f"{err}; install torch or use the algorithm 'fbp'") from err

    den = load_denoiser(arch, model, n_angles=n_angles,
                        sparse=None if model is not None else sparse)
    skipped = None if model is not None else screen(den.config, n_angles)
    if skipped is not None:
        return None, None, skipped
    _warn_mismatch(arch, den, filter_name, sparse)
    if corrections is not None:
        _warn_corrections(arch, den, corrections)
    dev = resolve_device(device)
    cdtype = resolve_dtype(dtype or "auto", dev)
    memory = denoiser_memory(den.module, n_grid, cdtype) if dev.type == "cpu" else None
    source = den.source if den.config is None else str(Path(den.source).resolve())
    spec = ModelSpec(arch=arch, source=source,
                     sha256=None if den.config is None else den.config.sha256,
                     dtype=str(cdtype).replace("torch.", ""), batch_size=batch_size,
                     sparse_factor=den.sparse_factor, filter_name=den.filter_name, memory=memory)
    return spec, den, None


def _warn_mismatch(arch: str, den: Any, filter_name: str, sparse: Optional[int]) -> None:
    """Warn (once per run) where the data differ from what the weights were trained on."""
    trained = den.sparse_factor
    if sparse is not None and trained is not None and int(sparse) != int(trained):
        logger.warning("the %s weights were trained for sparse factor %s, the data have %s: "
                       "expect weaker streak removal", arch, trained, sparse)
    if den.filter_name is not None and den.filter_name != filter_name:
        logger.warning("the %s weights were trained on FBP with filter %r, not %r", arch,
                       den.filter_name, filter_name)


def trained_corrections(config: Any) -> Optional[Dict[str, Any]]:
    """The row-local corrections (:func:`tomodl.recon.corrections.row_local`) of the training
    pairs recorded in a weights config (``extra.pairs_metadata``; pairs files without the
    ``corrections`` record had none), or None when nothing usable is recorded."""
    from dataclasses import fields

    from tomodl.recon.corrections import Corrections, row_local

    extra = getattr(config, "extra", None)
    meta = extra.get("pairs_metadata") if isinstance(extra, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != "tomodl-pairs":
        return None
    recorded = meta.get("corrections", {})
    if not isinstance(recorded, dict):
        return None
    names = {f.name for f in fields(Corrections)}
    try:
        return row_local(Corrections(**{k: v for k, v in recorded.items() if k in names}))
    except (TypeError, ValueError):
        return None


def _warn_corrections(arch: str, den: Any, corrections: Any) -> None:
    """Warn where the run's stripe removal or dezinger differs from the training pairs'."""
    from tomodl.recon.corrections import row_local

    trained = trained_corrections(den.config)
    run = row_local(corrections)
    if trained is None or trained == run:
        return

    def say(steps):
        return ", ".join(f"{k}={v}" for k, v in steps.items()) or "no stripe removal or dezinger"

    # Weights trained without corrections saw rings and zingers and learned to damp them: a run
    # that removes them first feeds cleaner inputs, which is expected (the shipped weights), so
    # that case is logged, not warned.  Weights trained *with* corrections do need them.
    log = logger.info if not trained else logger.warning
    log("the %s weights were trained on pairs with %s; this run uses %s: the network sees "
        "inputs unlike its training (make pairs with the same options: tomodl simulate pairs "
        "--remove-stripe-method ... --dezinger ...)", arch, say(trained), say(run))
