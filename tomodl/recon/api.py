# SPDX-License-Identifier: BSD-3-Clause
"""TomoPy-compatible entry points: :func:`recon` and :func:`tomopy_algorithm`.

``tomodl.recon(proj, theta, center)`` is a drop-in for
``tomopy.recon(proj, theta, center, algorithm="gridrec")``: same array layout, angles in
radians, centre in pixels, same default centre and output grid, with intensities in true
attenuation per pixel.  ``algorithm="fbp+resattunet"`` adds the trained streak-removal network,
applied slice by slice to each chunk of rows.

:func:`tomopy_algorithm` plugs tomodl's FBP into TomoPy itself:
``tomopy.recon(proj, theta, algorithm=tomodl.tomopy_algorithm, filter_name="shepp")``.

This module is the array-contract boundary: :func:`as_sinograms` checks shapes and angles.
"""
from __future__ import annotations

import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import numpy as np

from tomodl.backend import array_kind
from tomodl.errors import TomodlError
from tomodl.recon.geometry import check_angles, check_geometry, default_center

logger = logging.getLogger(__name__)

#: Bytes of reconstructed slices per FBP call when ``nchunk`` is not given.
CHUNK_BYTES = 256 * 2**20
#: Largest ``max |theta|`` accepted as radians (larger looks like degrees).
MAX_THETA = 4 * np.pi


class Algorithm(NamedTuple):
    """A parsed ``algorithm`` string: reconstruction method and optional denoising network."""

    recon: str
    model: Optional[str]


#: Reconstruction methods: ``algorithm`` string -> parsed value.
ALGORITHMS: Dict[str, Algorithm] = {
    "fbp": Algorithm("fbp", None),
    "fbp+resattunet": Algorithm("fbp", "resattunet"),
    "fbp+unet": Algorithm("fbp", "unet"),
}
#: TomoPy algorithm names that :func:`recon` accepts (drop-in scripts): name -> what runs.
TOMOPY_ALIASES: Dict[str, str] = {"gridrec": "fbp"}
#: TomoPy's other algorithms (iterative), which tomodl does not implement.
TOMOPY_ONLY = ("art", "bart", "grad", "mlem", "osem", "ospml_hybrid", "ospml_quad",
               "pml_hybrid", "pml_quad", "sirt", "tikh", "tv")
#: Keywords of the ``+model`` step: where each goes.
MODEL_KWARGS = ("model", "batch_size", "dtype", "sparse")


def parse_algorithm(algorithm: str) -> Algorithm:
    """Parse ``"fbp"`` / ``"fbp+<model>"`` (case-insensitive) into an :class:`Algorithm`.

    TomoPy's ``"gridrec"`` (:data:`TOMOPY_ALIASES`) is tomodl's FBP, logged at info level.
    """
    name = str(algorithm).strip().lower()
    if name in TOMOPY_ALIASES:
        logger.info("algorithm=%r: tomodl's FBP (TomoPy's conventions and filters, true "
                    "attenuation per pixel), without a network", algorithm)
        name = TOMOPY_ALIASES[name]
    if name in ALGORITHMS:
        return ALGORITHMS[name]
    choices = f"choose one of {sorted(ALGORITHMS)} ({list(TOMOPY_ALIASES)} = 'fbp')"
    if name in TOMOPY_ONLY:
        raise TomodlError(f"algorithm {algorithm!r} is one of TomoPy's iterative methods, "
                          "which tomodl does not implement",
                          fix=f"{choices}, or run it with tomopy.recon")
    raise TomodlError(f"Unknown algorithm {algorithm!r}",
                      fix=f"{choices}, or pass a callable (TomoPy's algorithm contract)")


# -- array contract ---------------------------------------------------------------------------
def as_sinograms(tomo, theta, sinogram_order: bool = False) -> Tuple[Any, np.ndarray]:
    """Check the array contract and return sinogram-ordered data and float32 angles.

    Parameters
    ----------
    tomo : array_like (numpy, torch or CuPy), shape (n_angles, n_rows, n_det)
        Projections; ``(n_rows, n_angles, n_det)`` with ``sinogram_order=True``.
    theta : array_like, shape (n_angles,)
        Angles in radians.

    Returns
    -------
    sinos : array of the caller's kind, shape (n_rows, n_angles, n_det)
        A view when possible; numpy input is converted to float32.
    theta : ndarray, shape (n_angles,), float32
    """
    kind = array_kind(tomo)
    if kind == "numpy":
        tomo = np.asarray(tomo, dtype=np.float32)
    if tomo.ndim != 3:
        layout = "(n_rows, n_angles, n_det)" if sinogram_order else "(n_angles, n_rows, n_det)"
        raise ValueError(f"tomo must be 3-D {layout}, got shape {tuple(tomo.shape)}; for one "
                         "sinogram use tomo[:, None, :] (or [None] with sinogram_order=True)")
    sinos = tomo if sinogram_order else tomo.swapaxes(0, 1)
    if kind == "cupy":
        import cupy

        theta = cupy.asnumpy(theta)
    elif array_kind(theta) == "torch":
        theta = theta.detach().cpu().numpy()
    th = np.asarray(theta, dtype=np.float32).ravel()
    if th.size != sinos.shape[1]:
        raise ValueError(f"theta has {th.size} angles but tomo has {sinos.shape[1]} "
                         f"{'angles (axis 1)' if sinogram_order else 'projections (axis 0)'}")
    if not np.all(np.isfinite(th)):
        raise ValueError("theta contains NaN or inf")
    if th.size and np.abs(th).max() > MAX_THETA:
        raise TomodlError(f"theta must be in radians, but max |theta| = {np.abs(th).max():.1f} "
                          "looks like degrees", fix="pass np.deg2rad(theta)",
                          cli_fix="set the units attribute of the scan's angles to 'deg'")
    if min(sinos.shape) < 1:
        raise ValueError(f"tomo has an empty axis: shape {tuple(tomo.shape)}")
    check_angles(th)
    return sinos, th


def row_centers(center, n_rows: int, n_det: int) -> np.ndarray:
    """Per-row rotation axis ``(n_rows,)`` float64 from ``None``, a scalar or a per-row array."""
    if center is None:
        return np.full(n_rows, default_center(n_det), dtype=np.float64)
    c = np.asarray(center, dtype=np.float64).ravel()
    if c.size == 1:
        c = np.full(n_rows, c[0])
    if c.size != n_rows:
        raise ValueError(f"center has {c.size} values; give one value or one per row ({n_rows})")
    if not np.all(np.isfinite(c)):
        raise ValueError("center contains NaN or inf")
    return c


def _grid(num_gridx, num_gridy, n_det: int) -> int:
    n = n_det if num_gridx is None else int(num_gridx)
    if n < 1:
        raise ValueError(f"num_gridx must be a positive number of pixels, got {num_gridx}")
    if num_gridy is not None and int(num_gridy) != n:
        raise ValueError(f"num_gridy={num_gridy} differs from num_gridx={n}; tomodl "
                         "reconstructs square grids only")
    return n


def _fbp_keywords() -> Tuple[str, ...]:
    """Optional keywords of :func:`tomodl.recon.fbp.fbp` that :func:`recon` passes through."""
    from tomodl.recon.fbp import fbp

    own = {"filter_name", "num_gridx", "device", "ncore"}
    return tuple(p.name for p in inspect.signature(fbp).parameters.values()
                 if p.kind == p.KEYWORD_ONLY and p.name not in own)


def _split_kwargs(alg: Algorithm, kwargs: Dict[str, Any]) -> Tuple[Dict, Dict]:
    fbp_keys = _fbp_keywords()
    allowed = fbp_keys + ("num_gridy",) + (MODEL_KWARGS if alg.model else ())
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        hint = "" if alg.model else f"; {list(MODEL_KWARGS)} need algorithm='fbp+<model>'"
        raise ValueError(f"Unknown keyword(s) {unknown} for algorithm "
                         f"{'+'.join(filter(None, alg))!r}; allowed: {sorted(allowed)}{hint}")
    fbp_kw = {k: v for k, v in kwargs.items() if k in fbp_keys}
    model_kw = {k: v for k, v in kwargs.items() if k in MODEL_KWARGS}
    return fbp_kw, model_kw


def _chunk_rows(nchunk: Optional[int], n_rows: int, n: int) -> int:
    if nchunk is None:
        return max(1, min(n_rows, CHUNK_BYTES // (4 * n * n)))
    if int(nchunk) < 1:
        raise ValueError(f"nchunk must be a positive number of rows, got {nchunk}")
    return int(nchunk)


# -- the +model step --------------------------------------------------------------------------
def load_model_step(alg: Algorithm, model_kw: Dict[str, Any], filter_name: str, theta=None, *,
                    device: str = "auto", n_grid: int = 512) -> Optional[Callable[[Any], Any]]:
    """Return ``step(slices) -> slices`` applying the denoiser of ``alg``, or None for plain FBP.

    ``model_kw`` holds ``model`` (None, a released name or a weights folder), ``batch_size``,
    ``dtype`` and ``sparse`` (the data are 1 in ``sparse`` angles: with ``model=None`` it picks
    the shipped weights for that factor).  Without ``model``, the shipped weights are chosen by
    the projections per half turn of ``theta``, and are skipped (None, with a warning) where
    they were measured to make such data worse than the FBP
    (:func:`tomodl.models.releases.fallback_reason`).  The same set-up as the command line
    (:func:`tomodl.recon.denoising.prepare_model`: screening, warnings, memory sizing for
    ``n_grid x n_grid`` slices on ``device``); the network gets the share of
    :func:`tomodl.recon.budget.default_max_memory` that the command line gives it by default.
    """
    if alg.model is None:
        return None
    from tomodl.recon.budget import default_max_memory
    from tomodl.recon.denoising import prepare_model

    n180 = None
    if theta is not None:
        from tomodl.models.releases import angles_per_half_turn

        n180 = angles_per_half_turn(theta)
    spec, den, _ = prepare_model(alg.model, model_kw.get("model"), dtype=model_kw.get("dtype"),
                                 batch_size=model_kw.get("batch_size"), device=device,
                                 filter_name=filter_name, n_grid=n_grid, n_angles=n180,
                                 sparse=model_kw.get("sparse"))
    if spec is None:
        return None
    return spec.with_budget(default_max_memory() // 2).step(den)


# -- public API -------------------------------------------------------------------------------
def recon(tomo, theta, center=None, sinogram_order: bool = False,
          algorithm: Union[str, Callable] = "fbp+resattunet", filter_name: str = "shepp",
          num_gridx: Optional[int] = None, device: str = "auto", ncore: Optional[int] = None,
          nchunk: Optional[int] = None, init_recon: None = None, **kwargs) -> Any:
    """Reconstruct a parallel-beam scan; a drop-in for ``tomopy.recon(..., algorithm="gridrec")``.

    Parameters
    ----------
    tomo : array_like (numpy, torch or CuPy), shape (n_angles, n_rows, n_det)
        Line integrals (``minus_log`` of normalized projections), or
        ``(n_rows, n_angles, n_det)`` with ``sinogram_order=True``.
    theta : array_like, shape (n_angles,)
        Projection angles in radians, any order and range (sparse, unsorted, 360 degrees).
    center : None, float or array_like of shape (n_rows,)
        Rotation axis in detector pixels; ``None`` is TomoPy's default ``n_det / 2``.
    sinogram_order : bool
        Layout of ``tomo`` (see above).
    algorithm : str or callable
        ``"fbp+resattunet"`` (default: FBP, then the shipped ResAttUnet removes the sparse-view
        streaks; outside the range of projections per half turn it was validated for, e.g. on
        a dense scan, the FBP is returned unchanged with a warning, see
        :mod:`tomodl.models.releases`), ``"fbp"`` (TomoPy's gridrec equivalent; ``"gridrec"``
        is accepted as its alias) or ``"fbp+unet"`` (:data:`ALGORITHMS`), or a callable with
        TomoPy's contract ``f(tomo, center, recon, theta, **kwargs)``.  TomoPy's iterative
        names (``"sirt"``, ``"art"``... :data:`TOMOPY_ONLY`) are refused.
    filter_name : str
        FBP filter (``tomodl.recon.filters.FILTERS``; TomoPy's definitions).
    num_gridx : int, optional
        Reconstruction grid ``N`` (default ``n_det``), pixel size one detector pixel.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Compute device.
    ncore : int, optional
        CPU threads.
    nchunk : int, optional
        Rows reconstructed per FBP call (bounds memory; default: ~256 MB of output).
    init_recon : None
        Accepted for TomoPy scripts and ignored: it is the starting guess of TomoPy's
        iterative algorithms, which FBP does not have (anything but None is refused).
    **kwargs
        ``filter_par``, ``num_gridy`` (must equal ``num_gridx``) and the other keyword options
        of :func:`tomodl.recon.fbp.fbp`; with ``"fbp+<model>"`` also ``model`` (None = the
        released weights, a released name or a weights folder), ``batch_size``, ``dtype``
        (``"auto"``, ``"float32"``, ``"float16"``, ``"bfloat16"``) and ``sparse`` (the data are
        1 in ``sparse`` angles of a full scan: the shipped weights trained for that factor),
        and ``refine`` (``N`` iterations refining the network's output against the measured
        projections, 0 = off; :mod:`tomodl.recon.refine`, ``docs/refine.md``) with
        ``refine_nonneg`` (default True: the refined images stay non-negative; False for data
        with real negative values, such as propagation fringes without phase retrieval) and
        ``refine_rounds`` (network passes, default 1; 2 adds a plug-and-play round).

    Returns
    -------
    array of the caller's kind, shape (n_rows, N, N), float32
        Attenuation per pixel (line integrals in pixel units reconstruct to 1/pixel values).

    Raises
    ------
    ValueError
        Bad shapes or angles, an unknown algorithm, filter or keyword.
    GeometryError
        Angles or centre that cannot give an image (fewer than 3 distinct directions, the
        axis off the detector; :func:`tomodl.recon.geometry.check_geometry`, which also warns
        about a limited angular range or an axis near the detector edge).
    """
    if init_recon is not None:
        raise TomodlError("init_recon is the starting guess of TomoPy's iterative algorithms; "
                          "tomodl's FBP has none", fix="drop init_recon (None is accepted)")
    sinos, th = as_sinograms(tomo, theta, sinogram_order)
    n_rows, _, n_det = sinos.shape
    centers = row_centers(center, n_rows, n_det)
    check_geometry(th, centers, n_det)
    n = _grid(num_gridx, kwargs.get("num_gridy"), n_det)
    rows = _chunk_rows(nchunk, n_rows, n)
    if callable(algorithm):
        return _recon_callable(algorithm, sinos, centers, th, n, rows, ncore,
                               dict(kwargs, filter_name=filter_name), device)
    alg = parse_algorithm(algorithm)
    refiner = _refiner(alg, th, kwargs.pop("refine", 0), nonneg=kwargs.pop("refine_nonneg", True),
                       rounds=kwargs.pop("refine_rounds", 1))
    fbp_kw, model_kw = _split_kwargs(alg, kwargs)
    step = load_model_step(alg, model_kw, filter_name, th, device=device, n_grid=n)
    return _recon_chunks(sinos, th, centers, n, rows, step,
                         dict(fbp_kw, filter_name=filter_name, device=device, ncore=ncore),
                         refiner)


def _plan(sinos, theta, n, fbp_kw):
    """The :func:`~tomodl.recon.fbp.fbp_plan` of this call, on the device fbp will use."""
    from tomodl.backend import to_tensor
    from tomodl.recon.fbp import fbp_plan

    dev = to_tensor(sinos[:1, :1], fbp_kw["device"])[0].device
    kw = {k: fbp_kw[k] for k in ("filter_name", "filter_par", "method", "ncore") if k in fbp_kw}
    return fbp_plan(sinos.shape[2], theta, n, device=dev, **kw)


def _bound(step, fbp_kw):
    """``step`` as ``f(images) -> images`` on the run's device (None stays None)."""
    if step is None:
        return None
    return lambda rec: step(rec, device=fbp_kw["device"], ncore=fbp_kw["ncore"])


def _refiner(alg: Algorithm, theta, refine, *, nonneg, rounds):
    """The :class:`~tomodl.recon.refiner.Refiner` of ``refine=N`` (None when 0)."""
    from tomodl.recon.refiner import Refiner, RefineSettings

    settings = RefineSettings(iterations=refine, nonneg=nonneg, rounds=rounds)
    if not settings.iterations:
        return None
    if alg.model is None:
        raise TomodlError(f"refine={refine} refines a network's output against the data; it "
                          "needs algorithm='fbp+<model>'", fix="drop refine or use "
                          "algorithm='fbp+resattunet'")
    return Refiner(settings, theta)


def _recon_chunks(sinos, theta, centers, n, rows, step, fbp_kw, refiner=None):
    from tomodl.recon.fbp import fbp

    kind = array_kind(sinos)
    if fbp_kw.get("plan") is None and sinos.shape[0]:   # one plan for every chunk
        fbp_kw = dict(fbp_kw, plan=_plan(sinos, theta, n, fbp_kw))
    parts = []
    out = np.empty((sinos.shape[0], n, n), np.float32) if kind == "numpy" else None
    for r0 in range(0, sinos.shape[0], rows):
        r1 = min(r0 + rows, sinos.shape[0])
        logger.debug("fbp rows %d:%d of %d", r0, r1, sinos.shape[0])
        rec = fbp(sinos[r0:r1], theta, centers[r0:r1], num_gridx=n, **fbp_kw)
        if step is not None:
            rec = step(rec, device=fbp_kw["device"], ncore=fbp_kw["ncore"])
        if refiner is not None:
            cs = centers[r0:r1]
            rec = refiner(rec, sinos[r0:r1], cs, device=fbp_kw["device"],
                          ncore=fbp_kw["ncore"], denoise=_bound(step, fbp_kw),
                          reconstruct=lambda r, cs=cs: fbp(r, theta, cs, num_gridx=n, **fbp_kw))
        if out is not None:
            out[r0:r1] = np.asarray(rec)
        else:
            parts.append(rec)
    if out is not None:
        return out
    if kind == "torch":
        import torch

        return torch.cat(parts)
    import cupy

    return cupy.concatenate(parts)


def _recon_callable(func, sinos, centers, theta, n, rows, ncore, kwargs, device):
    """Run a TomoPy-style callable on chunks of rows, as ``tomopy.recon`` does."""
    if device != "auto":
        raise ValueError("device= is not used with a callable algorithm; pass the callable's "
                         "own options as keywords instead")
    sinos = np.require(np.asarray(sinos, dtype=np.float32), requirements="AC")
    kwargs.setdefault("num_gridx", n)
    kwargs.setdefault("num_gridy", n)
    kwargs.setdefault("options", {})
    c32 = centers.astype(np.float32)
    out = np.zeros((sinos.shape[0], n, n), np.float32)
    slices = [slice(r0, min(r0 + rows, sinos.shape[0])) for r0 in range(0, sinos.shape[0], rows)]

    def run(s):
        func(sinos[s], c32[s], out[s], theta, **kwargs)

    if ncore is None or int(ncore) <= 1 or len(slices) == 1:
        for s in slices:
            run(s)
    else:
        with ThreadPoolExecutor(int(ncore)) as pool:
            for fut in [pool.submit(run, s) for s in slices]:
                fut.result()
    return out


def tomopy_algorithm(tomo, center, recon, theta, **kwargs) -> None:
    """tomodl's FBP behind TomoPy's callable-algorithm contract.

    Use as ``tomopy.recon(proj, theta, center, algorithm=tomodl.tomopy_algorithm,
    filter_name="shepp", ncore=4)``.  TomoPy calls it once per chunk of rows.

    Parameters
    ----------
    tomo : ndarray, shape (n_rows, n_angles, n_det), float32
        Sinogram-ordered chunk (TomoPy's ``init_tomo`` output).
    center : ndarray, shape (n_rows,), float32
        Rotation axis per row, pixels.
    recon : ndarray, shape (n_rows, num_gridx, num_gridy), float32
        Preallocated output, filled in place.
    theta : ndarray, shape (n_angles,), float32
        Angles in radians.
    **kwargs
        ``num_gridx``, ``num_gridy`` and ``options`` (set by TomoPy; ``options`` must be empty),
        ``filter_name``, ``filter_par``, ``device`` and the keyword options of
        :func:`tomodl.recon.fbp.fbp`.
    """
    try:
        _tomopy_algorithm(tomo, center, recon, theta, dict(kwargs))
    except Exception:
        # TomoPy runs callables in a thread pool and drops their exceptions: log them here
        logger.exception("tomodl.tomopy_algorithm failed")
        raise


def _tomopy_algorithm(tomo, center, recon, theta, kwargs) -> None:
    from tomodl.recon.fbp import fbp

    options = kwargs.pop("options", None)
    if options:
        raise ValueError(f"options={options!r} is not used by tomodl.tomopy_algorithm; pass "
                         "filter_name, filter_par or device as keywords")
    n = _grid(kwargs.pop("num_gridx", None), kwargs.pop("num_gridy", None), tomo.shape[2])
    if tuple(recon.shape) != (tomo.shape[0], n, n):
        raise ValueError(f"recon has shape {tuple(recon.shape)}, expected "
                         f"{(tomo.shape[0], n, n)}")
    allowed = ("filter_name", "device", "ncore") + _fbp_keywords()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown keyword(s) {unknown} for tomodl.tomopy_algorithm; allowed: "
                         f"{sorted(allowed)}")
    centers = row_centers(center, tomo.shape[0], tomo.shape[2])
    recon[...] = fbp(tomo, theta, centers, num_gridx=n, **kwargs)
