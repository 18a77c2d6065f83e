# SPDX-License-Identifier: BSD-3-Clause
"""Analytic phantoms, exact projections, simulated scans and sparse-view training pairs.

* :mod:`tomodl.sim.analytic` -- exact 2-D ellipse projector and anti-aliased rasterizer;
* :mod:`tomodl.sim.phantom` -- 3-D phantoms (ellipsoids, cylinders), :func:`project`,
  :func:`ground_truth`;
* :mod:`tomodl.sim.families` -- named, seeded recipes (:data:`FAMILIES`), :func:`make_phantom`;
* :mod:`tomodl.sim.acquisition` -- flux, Poisson noise, flats, darks, blur, rings, zingers;
* :mod:`tomodl.sim.scan` -- DXchange files with ground truth (:func:`simulate_scan`);
* :mod:`tomodl.sim.pairs` -- (sparse FBP, ground truth) pairs split by phantom.

See docs/simulation.md.
"""
from tomodl.sim.config import Acquisition, PhantomParams, ScanGeometry, SimulationError
from tomodl.sim.families import FAMILIES, make_phantom
from tomodl.sim.pairs import make_pairs
from tomodl.sim.phantom import Phantom, ground_truth, project
from tomodl.sim.scan import read_ground_truth, simulate_scan

__all__ = ["Acquisition", "FAMILIES", "Phantom", "PhantomParams", "ScanGeometry",
           "SimulationError", "ground_truth", "make_pairs", "make_phantom", "project",
           "read_ground_truth", "simulate_scan"]
