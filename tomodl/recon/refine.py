# SPDX-License-Identifier: BSD-3-Clause
"""Data-consistent refinement of the network output, and total-variation reconstruction.

Both solve, slice by slice (batched), with the projector ``A`` of
:mod:`tomodl.recon.projector`::

    x* = argmin_x  1/2 ||A x - y||^2  +  mu/2 ||x - x_prior||^2  +  lam TV(x)  [+ x >= 0]

by the diagonally preconditioned primal-dual method of Pock & Chambolle (2011), which needs no
step-size tuning and no operator norm: ``K = [A; grad]`` with dual steps ``1 / (row sums of
|K|)`` and primal steps ``1 / (column sums of |K|)``.  ``TV`` is the isotropic total variation
(forward differences).

* :func:`refine`: ``x_prior`` = the network's output, started there; the data term removes
  what the measured projections contradict, the proximity term keeps what they cannot see
  (the null space of a sparse scan), the TV term damps the streaks a data step would add.
* :func:`tv_reconstruct`: ``mu = 0``, started at the FBP: the classic iterative baseline.

Weights are **relative**, so that one default fits every scan: with ``n_angles`` projections
and ``R`` the intensity range of the starting image (its 0.5-99.5 percentile spread inside
the reconstruction circle), the solver uses ``lam = weight * n_angles * R`` and
``mu = prior * n_angles`` (``A^T A`` has ``n_angles`` on its diagonal, in pixel units), so
the result does not change when the data are scaled, the grid is resampled or the number of
projections changes (see ``docs/refine.md``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomodl.errors import TomodlError

logger = logging.getLogger(__name__)

#: Default relative TV weight of :func:`tv_reconstruct` and iterations (issue 16's baseline).
TV_WEIGHT = 0.02
TV_ITERATIONS = 300
#: Defaults of :func:`refine`: iterations (a fifth of :data:`TV_ITERATIONS`) and the relative
#: proximity weight.  The relative TV weight defaults to ``REFINE_WEIGHT_SCALE * sqrt(U)``
#: with ``U = pi N / (2 n_angles)`` the angular undersampling (:func:`default_weight`):
#: fewer angles, stronger streaks, more TV (measured on the simulated families, docs/refine.md).
REFINE_ITERATIONS = 60
REFINE_PRIOR = 3.0
REFINE_WEIGHT = None
REFINE_WEIGHT_SCALE = 0.05
#: Absorption data: the refined image is constrained to be non-negative by default (measured:
#: the largest single gain of the refinement at 19 and 10 projections, docs/refine.md);
#: ``nonneg=False`` (``--refine-allow-negative``) for data with real negative values, such as
#: propagation fringes without phase retrieval or offsets from a poor flat field.
REFINE_NONNEG = True
#: Network passes of a refinement: 1 = the network once, then the solver; ``R > 1`` repeats
#: ``x <- refine(net(x + FBP(y - A x)))`` (a plug-and-play round: the network sees an FBP-like
#: image whose streaks come from what the refined image still misses; docs/refine.md).
REFINE_ROUNDS = 1
#: ``(prior, weight)`` pairs that :func:`select_weights` chooses among, with held-out angles
#: (one in ``HOLDOUT_EVERY``) and iterations per candidate.
CANDIDATES = ((0.3, 0.03), (1.0, 0.1), (3.0, 0.03), (3.0, 0.1), (10.0, 0.03), (10.0, 0.1))
HOLDOUT_EVERY = 4
SELECT_ITERATIONS = 20
#: Dual / primal step balance of the preconditioned primal-dual method (any value converges;
#: 10 reaches in ~30 iterations what 1 reaches in ~100 from a good start, see docs/refine.md).
BALANCE = 10.0
#: Percentiles of the starting image that define its intensity range ``R``.
RANGE_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Weights:
    """Absolute weights of one solve, per slice: ``lam`` and ``mu`` tensors ``(B, 1, 1)``."""

    lam: Any
    mu: Any


def _grad(x):
    """Forward differences ``(B, 2, n, n)`` (zero across the last row / column)."""
    import torch

    g = torch.zeros((x.shape[0], 2) + x.shape[1:], dtype=x.dtype, device=x.device)
    g[:, 0, :-1] = x[:, 1:] - x[:, :-1]
    g[:, 1, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return g


def _magnitude(g):
    """Pointwise ``|g|`` ``(B, 1, n, n)`` of a gradient field ``(B, 2, n, n)``."""
    return (g[:, :1] ** 2 + g[:, 1:] ** 2).sqrt()


def _grad_adjoint(g):
    """``grad^T g`` (= minus the divergence), ``(B, n, n)``."""
    import torch

    gy, gx = g[:, 0], g[:, 1]
    out = torch.zeros_like(gy)
    out[:, :-1] -= gy[:, :-1]
    out[:, 1:] += gy[:, :-1]
    out[:, :, :-1] -= gx[:, :, :-1]
    out[:, :, 1:] += gx[:, :, :-1]
    return out


def circle(n: int, device=None):
    """Boolean ``(n, n)`` mask of the reconstruction circle (radius ``n / 2 - 1`` px)."""
    import torch

    from tomodl.recon.geometry import image_coordinates

    x, y = image_coordinates(n)
    inside = x[None, :] ** 2 + y[:, None] ** 2 <= (n / 2.0 - 1.0) ** 2
    return torch.as_tensor(inside, device=device)


def intensity_range(x):
    """Robust range ``R`` per slice of ``x (B, n, n)``: a ``(B,)`` tensor (> 0)."""
    import torch

    inside = x[:, circle(x.shape[-1], x.device)]
    q = torch.tensor([p / 100 for p in RANGE_PERCENTILES], dtype=x.dtype, device=x.device)
    lo, hi = torch.quantile(inside.float(), q.float(), dim=1).to(x.dtype)
    r = hi - lo
    scale = inside.abs().amax(dim=1)
    return torch.where(r > 1e-6 * scale, r, torch.clamp(scale, min=1e-12))


def default_weight(n: int, n_angles: int) -> float:
    """Default relative TV weight of :func:`refine` for ``N = n`` px and ``n_angles``:
    ``REFINE_WEIGHT_SCALE * sqrt(pi n / (2 n_angles))`` (0.106 / 0.167 / 0.236 at 256 px and
    90 / 36 / 18 angles)."""
    return REFINE_WEIGHT_SCALE * float(np.sqrt(np.pi * n / (2.0 * max(int(n_angles), 1))))


def absolute_weights(x_start, n_angles: int, weight, prior) -> Weights:
    """Relative ``weight`` (TV) and ``prior`` (proximity) -> :class:`Weights` for ``x_start``.

    ``weight`` and ``prior`` are floats or one value per slice.
    """
    import torch

    b = x_start.shape[0]
    kw = {"dtype": x_start.dtype, "device": x_start.device}
    w = torch.as_tensor(np.broadcast_to(np.asarray(weight, np.float64), (b,)).copy(), **kw)
    p = torch.as_tensor(np.broadcast_to(np.asarray(prior, np.float64), (b,)).copy(), **kw)
    lam = w * n_angles * intensity_range(x_start)
    return Weights(lam=lam[:, None, None], mu=(p * n_angles)[:, None, None])


def solve(proj, y, x0, weights: Weights, iterations: int, *, x_prior=None, nonneg=False,
          objective=None):
    """Preconditioned primal-dual iterations (see module docstring) on tensors.

    Parameters
    ----------
    proj : tomodl.recon.projector.ParallelProjector
    y : torch.Tensor, shape (B, n_angles, n_det)
        Measured line integrals.
    x0 : torch.Tensor, shape (B, n, n)
        Starting image (also the prior when ``x_prior`` is None).
    weights : Weights
        Absolute ``lam`` and ``mu`` per slice.
    iterations : int
    x_prior : torch.Tensor, optional
    nonneg : bool
        Constrain ``x >= 0``.
    objective : list, optional
        When given, the objective after every iteration is appended (costs one projection).

    Returns
    -------
    torch.Tensor, shape (B, n, n)
    """
    import torch

    x_prior = x0 if x_prior is None else x_prior
    lam, mu = weights.lam, weights.mu
    ones = torch.ones_like(x0[:1])
    row_sums = proj.forward(ones)
    sigma = BALANCE * torch.where(row_sums > 1e-6, 1.0 / row_sums.clamp(min=1e-6),
                                  torch.zeros_like(row_sums))
    # column sums of |A| and |grad|
    tau = 1.0 / (BALANCE * (proj.adjoint(torch.ones_like(row_sums)) + 4.0))
    x = x0.clone()
    if nonneg:
        x.clamp_(min=0)
    p = torch.zeros_like(y)
    q = torch.zeros((x.shape[0], 2) + x.shape[1:], dtype=x.dtype, device=x.device)
    x_bar = x
    for _ in range(int(iterations)):
        p = (p + sigma * (proj.forward(x_bar) - y)) / (1.0 + sigma)
        q = q + (0.5 * BALANCE) * _grad(x_bar)
        q = q / torch.clamp(_magnitude(q) / lam[:, None].clamp(min=1e-30), min=1.0)
        v = x - tau * (proj.adjoint(p) + _grad_adjoint(q))
        x_new = (v + tau * mu * x_prior) / (1.0 + tau * mu)
        if nonneg:
            x_new.clamp_(min=0)
        x_bar = 2.0 * x_new - x
        x = x_new
        if objective is not None:
            objective.append(objective_value(proj, y, x, weights, x_prior))
    return x


def solve_rows(proj, y, x0, weights: Weights, iterations: int, *, x_prior=None,
               nonneg=False, ncore=None):
    """:func:`solve` with the rows split between ``ncore`` CPU threads, one torch thread each.

    Many small torch operations on a busy machine stall at every multi-threaded operation's
    barrier; independent row groups in Python threads (torch releases the GIL) do not (the
    scheme of :func:`tomodl.recon.fbp.fbp`).  On a GPU the rows run as one batch.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from tomodl.backend import torch_threads

    rows = y.shape[0]
    if y.device.type != "cpu":
        return solve(proj, y, x0, weights, iterations, x_prior=x_prior, nonneg=nonneg)
    workers = int(ncore) if ncore else torch.get_num_threads()
    workers = max(1, min(workers, os.cpu_count() or 1, rows))
    if proj.per_row:
        workers = 1  # one centre per row: the projector needs the whole stack
    bounds = np.linspace(0, rows, workers + 1).round().astype(int)
    x_prior = x0 if x_prior is None else x_prior

    def task(k: int):
        sl = slice(bounds[k], bounds[k + 1])
        part = Weights(lam=weights.lam[sl], mu=weights.mu[sl])
        return solve(proj, y[sl], x0[sl], part, iterations, x_prior=x_prior[sl], nonneg=nonneg)

    with torch_threads(1):
        if workers == 1:
            return task(0)
        proj.forward(x0[:1])  # build the projector's matrices once, before the threads
        with ThreadPoolExecutor(workers) as pool:
            return torch.cat(list(pool.map(task, range(workers))))


def objective_value(proj, y, x, weights: Weights, x_prior):
    """The objective ``(B,)`` of :func:`solve` at ``x`` (float64 numpy)."""
    data = 0.5 * ((proj.forward(x) - y) ** 2).sum(dim=(1, 2))
    near = 0.5 * (weights.mu[:, 0, 0] * ((x - x_prior) ** 2).sum(dim=(1, 2)))
    tv = weights.lam[:, 0, 0] * _magnitude(_grad(x)).sum(dim=(1, 2, 3))
    return (data + near + tv).double().cpu().numpy()


def holdout_split(n_angles: int):
    """Interleaved ``(train, held_out)`` angle indices (every :data:`HOLDOUT_EVERY`-th held out),
    or None when the scan has too few angles to spare any."""
    idx = np.arange(n_angles)
    held = idx[HOLDOUT_EVERY // 2::HOLDOUT_EVERY]
    if held.size < 2 or n_angles - held.size < 6:
        return None
    return np.setdiff1d(idx, held), held


def select_weights(x_net, y, theta, center, *, denoise=None, iterations=SELECT_ITERATIONS,
                   nonneg=False):
    """Choose ``(prior, weight)`` from :data:`CANDIDATES` by how well each, refined on the
    other angles, predicts held-out measured angles (issue 13's consistency check).

    With ``denoise`` (the network step, ``f(images (1, n, n)) -> images``) the candidates start
    from the network's output for the FBP of the kept angles only, so the held-out angles are
    unseen by every candidate; without it they start from ``x_net``, which has seen them (a bias
    towards trusting the network).

    Parameters
    ----------
    x_net : torch.Tensor, shape (n, n)
        One slice of the network's output.
    y : torch.Tensor, shape (n_angles, n_det)
        Its measured line integrals.
    theta : ndarray, shape (n_angles,)
    center : float

    Returns
    -------
    (prior, weight, scores) : (float, float or None, list of float)
        ``scores``: held-out residual of each candidate (detector-derivative L2, relative to
        that of its start), in :data:`CANDIDATES` order.  The defaults when the scan has too
        few angles (``scores`` empty; weight None = :func:`default_weight`).
    """
    import torch

    split = holdout_split(len(theta))
    if split is None:
        return REFINE_PRIOR, REFINE_WEIGHT, []
    train, held = split
    k = len(CANDIDATES)
    dev = y.device
    p_train = projector_for(x_net.shape[-1], theta[train], y.shape[-1], [center], dev, x_net.dtype)
    p_held = projector_for(x_net.shape[-1], theta[held], y.shape[-1], [center], dev, x_net.dtype)
    ti, hi = (torch.as_tensor(v, device=dev) for v in (train, held))
    start = x_net
    if denoise is not None:
        from tomodl.backend import to_tensor
        from tomodl.recon.fbp import fbp

        rec = fbp(y[ti][None], theta[train], center, num_gridx=x_net.shape[-1], device=dev)
        start = to_tensor(denoise(rec), dev)[0][0].to(x_net.dtype)
    xs = start[None].expand(k, -1, -1).contiguous()
    w = absolute_weights(xs, len(train), [c[1] for c in CANDIDATES], [c[0] for c in CANDIDATES])
    out = solve_rows(p_train, y[ti][None].expand(k, -1, -1).contiguous(), xs, w, iterations,
                     nonneg=nonneg)

    def misfit(x):
        r = p_held.forward(x) - y[hi]
        return (r[..., 1:] - r[..., :-1]).square().sum(dim=(-2, -1))

    scores = (misfit(out) / misfit(start[None]).clamp(min=1e-30)).tolist()
    best = int(np.argmin(scores))
    logger.info("refine weights chosen on %d held-out angles: prior %g, weight %g (held-out "
                "misfit %s relative to the network's)", len(held), *CANDIDATES[best],
                " ".join(f"{v:.3f}" for v in scores))
    return CANDIDATES[best][0], CANDIDATES[best][1], scores


def _setup(sino, theta, center, sinogram_order: bool, num_gridx, device):
    """``(y (B, n_angles, n_det) tensor, theta, centres (B,), n, back)`` from user input."""
    from tomodl.backend import to_tensor
    from tomodl.recon.fbp import _check_args

    s, back = to_tensor(sino, device)
    if not sinogram_order:
        if s.ndim != 3:
            raise TomodlError(f"projections must be 3-D (n_angles, n_rows, n_det), got shape "
                              f"{tuple(s.shape)}")
        s = s.transpose(0, 1)
    th, centers, n = _check_args(tuple(s.shape), theta, center, num_gridx)
    return s.contiguous(), th, centers, n, back


def projector_for(n: int, theta, n_det: int, centers, device, dtype=None):
    """One :class:`~tomodl.recon.projector.ParallelProjector` for rows with ``centers``."""
    from tomodl.recon.projector import ParallelProjector

    c = np.asarray(centers, dtype=np.float64)
    one = bool(np.all(c == c[0]))
    return ParallelProjector(n, theta, n_det, float(c[0]) if one else c, device=device,
                             dtype=dtype)


def tv_reconstruct(sino, theta, center=None, weight=TV_WEIGHT, iterations: int = TV_ITERATIONS,
                   *, nonneg: bool = True, sinogram_order: bool = False, num_gridx=None,
                   device="auto", ncore=None, projector=None):
    """Iterative TV reconstruction (least squares + ``lam`` TV, started at the FBP).

    Parameters
    ----------
    sino : array, shape (n_angles, n_rows, n_det) (or (n_rows, n_angles, n_det) with
        ``sinogram_order=True``)
        Line integrals (``-log`` of the normalized transmission), attenuation x pixels.
    theta : array_like, shape (n_angles,)
        Angles in radians.
    center : float or array_like of shape (n_rows,), optional
        Rotation axis in detector columns (default ``n_det / 2``).
    weight : float or array_like of shape (n_rows,)
        Relative TV weight: ``lam = weight * n_angles * R`` with ``R`` the intensity range of
        the FBP (module docstring).  One value per row runs a weight sweep as one batch.
    iterations : int
        Primal-dual iterations (each: one forward and one adjoint projection).
    nonneg : bool
        Constrain the attenuation to be non-negative.
    num_gridx, device, ncore
        As in :func:`tomodl.recon.fbp.fbp`.
    projector : ParallelProjector, optional
        Reuse a projector built for the same geometry (its CSR matrices are cached).

    Returns
    -------
    array of the input's kind, shape (n_rows, N, N), float32
    """
    import torch

    from tomodl.recon.fbp import fbp

    y, th, centers, n, back = _setup(sino, theta, center, sinogram_order, num_gridx, device)
    x0 = fbp(y, th, centers, num_gridx=n, device=y.device)
    proj = projector or projector_for(n, th, y.shape[-1], centers, y.device)
    with torch.no_grad():
        w = absolute_weights(x0, len(th), weight, 0.0)
        return back(solve_rows(proj, y, x0, w, iterations, nonneg=nonneg, ncore=ncore))


def refine(x_net, sino, theta, center=None, iterations: int = REFINE_ITERATIONS, *,
           prior=REFINE_PRIOR, weight=REFINE_WEIGHT, nonneg: bool = REFINE_NONNEG, denoise=None,
           sinogram_order: bool = False, device="auto", ncore=None, projector=None):
    """Refine images against the measured projections, keeping them as the prior.

    Parameters
    ----------
    x_net : array, shape (n_rows, N, N)
        The network's output (attenuation per pixel): start and prior.
    sino : array, shape (n_angles, n_rows, n_det) (or (n_rows, n_angles, n_det) with
        ``sinogram_order=True``)
        The measured line integrals the images were reconstructed from.
    theta, center, device, ncore
        As in :func:`tomodl.recon.fbp.fbp`.
    iterations : int
        Primal-dual iterations (0 returns ``x_net`` unchanged).
    prior, weight : "auto", float or array_like of shape (n_rows,); weight also None
        Relative proximity and TV weights (module docstring; the defaults were measured on
        held-out simulated families, ``docs/refine.md``); ``weight=None``:
        :func:`default_weight` (grows with the angular undersampling).  ``"auto"`` (both,
        experimental): chosen by :func:`select_weights` on the middle row, by how well each
        candidate predicts measured angles held out of its refinement.
    nonneg : bool
        Constrain the result to be non-negative (absorption data; default
        :data:`REFINE_NONNEG`).
    denoise : callable, optional
        The network step that made ``x_net`` (``f(fbp images) -> images``): with ``"auto"``
        weights the held-out check then starts from the network's output for the kept angles
        (unbiased; see :func:`select_weights`).
    projector : ParallelProjector, optional
        Reuse one built for the same geometry.

    Returns
    -------
    array of the input's kind, shape (n_rows, N, N), float32
    """
    import torch

    from tomodl.backend import to_tensor, torch_threads

    y, th, centers, _, back = _setup(sino, theta, center, sinogram_order, None, device)
    x, _ = to_tensor(x_net, y.device)
    if x.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[1] != x.shape[2]:
        raise TomodlError(f"x_net must be (n_rows, N, N) with the sinogram's {y.shape[0]} rows, "
                          f"got shape {tuple(x.shape)}")
    if int(iterations) <= 0:
        return back(x)
    proj = projector or projector_for(x.shape[-1], th, y.shape[-1], centers, y.device)
    with torch.no_grad():
        if isinstance(prior, str) or isinstance(weight, str):
            if prior != "auto" or weight != "auto":
                raise TomodlError(f"prior and weight are both 'auto' or both numbers, got "
                                  f"{prior!r}, {weight!r}")
            mid = x.shape[0] // 2
            with torch_threads(1 if y.device.type == "cpu" else None):
                prior, weight, _ = select_weights(x[mid], y[mid], th, float(centers[mid]),
                                                  denoise=denoise, nonneg=nonneg)
        if weight is None:
            weight = default_weight(x.shape[-1], len(th))
        w = absolute_weights(x, len(th), weight, prior)
        return back(solve_rows(proj, y, x, w, iterations, nonneg=nonneg, ncore=ncore))
