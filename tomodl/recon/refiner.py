# SPDX-License-Identifier: BSD-3-Clause
"""The refinement stage of a reconstruction (``refine=N`` of :func:`tomodl.recon`, ``tomodl recon
--refine N``): what the user asked for (:class:`RefineSettings`) and the object that refines
chunk after chunk of one scan (:class:`Refiner`), with the solver of
:mod:`tomodl.recon.refine` and, for ``rounds > 1``, the run's network and FBP."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from tomodl.errors import TomodlError
from tomodl.recon.refine import (REFINE_NONNEG, REFINE_PRIOR, REFINE_ROUNDS, REFINE_WEIGHT,
                                 REFINE_WEIGHT_SCALE, projector_for, refine, select_weights)


@dataclass(frozen=True)
class RefineSettings:
    """What ``refine=N`` of :func:`tomodl.recon` / ``tomodl recon --refine N`` asks for.

    Attributes
    ----------
    iterations : int
        Primal-dual iterations per slice; 0 = off (the output is the network's, bit for bit).
    prior, weight : float (weight also None: :func:`default_weight`)
        Relative proximity and TV weights (:func:`refine`).
    nonneg : bool
        Constrain the result to be non-negative (:data:`REFINE_NONNEG`).
    rounds : int
        Network passes (:data:`REFINE_ROUNDS`); each round after the first applies the
        network again to the refined image plus the FBP of its data residual, then refines.
    """

    iterations: int = 0
    prior: Any = REFINE_PRIOR
    weight: Any = REFINE_WEIGHT
    nonneg: bool = REFINE_NONNEG
    rounds: int = REFINE_ROUNDS

    def __post_init__(self) -> None:
        it = self.iterations
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 0:
            raise TomodlError(f"refine must be a number of iterations >= 0 (0 = off), got {it!r}")
        if not isinstance(self.nonneg, (bool, np.bool_)):
            raise TomodlError(f"refine nonneg must be True or False, got {self.nonneg!r}")
        r = self.rounds
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise TomodlError(f"refine rounds must be a number of network passes >= 1, got {r!r}")
        if not it and (self.nonneg is False or r != 1):
            raise TomodlError("refine_nonneg=False and refine_rounds (--refine-allow-negative, "
                              "--refine-rounds) only change the refinement",
                              fix="add refine=N or drop them",
                              cli_fix="add --refine N or drop --refine-allow-negative and "
                                      "--refine-rounds")
        for name in ("prior", "weight"):
            v = getattr(self, name)
            if v is None and name == "weight":
                continue
            if v != "auto" and (isinstance(v, str) or not np.isfinite(v) or v < 0):
                raise TomodlError(f"refine {name} must be 'auto' or a finite number >= 0, "
                                  f"got {v!r}")

    def provenance(self) -> Optional[dict]:
        """The record stored with the output (None when off)."""
        if not self.iterations:
            return None
        weight = self.weight
        if weight is None:
            weight = f"{REFINE_WEIGHT_SCALE:g} * sqrt(pi N / (2 n_angles))"
        return {"iterations": int(self.iterations), "prior": self.prior, "weight": weight,
                "nonneg": self.nonneg, "rounds": int(self.rounds),
                "method": "preconditioned primal-dual, LS + prior + TV"}


class Refiner:
    """Refines chunk after chunk of one scan, building one projector per set of centres."""

    def __init__(self, settings: RefineSettings, theta) -> None:
        self.settings = settings
        self.theta = np.asarray(theta, dtype=np.float64)
        self._projectors: dict = {}
        self.chosen: Optional[tuple] = None

    def __call__(self, rec, sinos, centers, *, device="auto", ncore=None, denoise=None,
                 reconstruct=None):
        """Refine ``rec (rows, N, N)`` against ``sinos (rows, n_angles, n_det)`` (any kind);
        ``denoise``: the network step that made ``rec`` (for the unbiased held-out check and
        the later rounds); ``reconstruct``: the run's FBP of sinograms ``(rows, n_angles,
        n_det)`` (needed with ``rounds > 1``)."""
        s = self.settings
        if not s.iterations:
            return rec
        from tomodl.backend import to_tensor

        c = np.broadcast_to(np.asarray(centers, dtype=np.float64), (sinos.shape[0],))
        dev = to_tensor(rec[:1], device)[0].device         # where refine() will compute
        key = (rec.shape[-1], sinos.shape[-1], str(dev),
               (float(c[0]),) if np.all(c == c[0]) else tuple(c))
        proj = self._projectors.get(key)
        if proj is None:
            proj = projector_for(rec.shape[-1], self.theta, sinos.shape[-1], c, dev)
            self._projectors = {key: proj}  # keep the latest only: chunks share a geometry
        prior, weight = self.chosen or (s.prior, s.weight)
        if prior == "auto" or weight == "auto":   # chosen once per run, on its first chunk
            prior, weight = self.choose(rec, sinos, c, dev, denoise)
        def solve_once(x):
            return refine(x, sinos, self.theta, c, s.iterations, prior=prior, weight=weight,
                          nonneg=s.nonneg, sinogram_order=True, device=dev, ncore=ncore,
                          projector=proj)

        x = solve_once(rec)
        if s.rounds > 1 and (denoise is None or reconstruct is None):
            raise TomodlError("refine rounds > 1 need the network and the FBP of the run")
        for _ in range(s.rounds - 1):
            x = solve_once(denoise(self.residual_image(x, sinos, proj, dev, reconstruct)))
        return x

    @staticmethod
    def residual_image(x, sinos, proj, device, reconstruct):
        """``x + FBP(y - A x)`` in ``x``'s array kind: the network's input of the next round."""
        import torch

        from tomodl.backend import to_tensor

        xt, back = to_tensor(x, device)
        yt, _ = to_tensor(sinos, device)
        with torch.no_grad():
            resid = yt - proj.forward(xt)
        img, _ = to_tensor(reconstruct(resid), device)
        return back(xt + img)

    def choose(self, rec, sinos, centers, device, denoise=None):
        """Run :func:`select_weights` on the middle row of ``rec``; remember the choice."""
        import torch

        from tomodl.backend import to_tensor, torch_threads

        mid = rec.shape[0] // 2
        x, _ = to_tensor(rec[mid], device)
        y, _ = to_tensor(sinos[mid], device)
        with torch.no_grad(), torch_threads(1 if x.device.type == "cpu" else None):
            prior, weight, _ = select_weights(x, y, self.theta, float(centers[mid]),
                                              denoise=denoise, nonneg=self.settings.nonneg)
        self.chosen = (prior, weight)
        return prior, weight
