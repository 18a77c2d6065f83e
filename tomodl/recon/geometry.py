# SPDX-License-Identifier: BSD-3-Clause
"""The one definition of the reconstruction grid and the detector coordinate.

Every projector and back-projector in tomodl (FBP, the analytic simulators, centre finding)
uses these functions, so simulated data and reconstructions share one grid and one
orientation: TomoPy gridrec's.

Image ``img[row, col]`` of size ``N x N`` has pixel centres at::

    x = col - x0,    y = (N - 1 - row) - x0,    x0 = (N + 1) // 2

in units of pixels (``y`` points up).  This is where ``tomopy.recon(..., algorithm="gridrec")``
puts them (``gridrec.c``: output column ``j`` is spatial index ``j - offset`` and output row
``N - 1 - k`` is spatial index ``k - offset`` with ``offset = pdim/2 - (pdim - N)//2``): the
rotation axis sits at ``(row, col) = (N - 1 - x0, x0)``, half a pixel right of and above the
geometric centre ``((N - 1)/2, (N - 1)/2)`` for even ``N`` and one pixel for odd ``N``.

A ray at angle ``theta`` (radians) through ``(x, y)`` meets the detector at column
``u = x cos(theta) + y sin(theta) + center``, with ``center`` the rotation axis in
detector-pixel units (column index, pixel centres at integers).  TomoPy's default ``center``
is ``n_det / 2`` (``tomopy.sim.project.get_center``), not ``(n_det - 1) / 2``.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Tuple

import numpy as np

from tomodl.errors import GeometryError

logger = logging.getLogger(__name__)

#: Fewest distinct projection directions (angles modulo 180 degrees) that can form an image:
#: one or two back-projected views are streaks, whatever the object.
MIN_DIRECTIONS = 3
#: Angles closer than this (radians, modulo pi) are one direction.
SAME_DIRECTION = 1e-4
#: Angular coverage (degrees, modulo 180) below which a scan is warned about as limited-angle.
MIN_COVERAGE_DEG = 150.0
#: A rotation axis closer than this fraction of the detector width to an edge is warned about.
EDGE_FRACTION = 0.1
#: How far (pixels) beyond the outer pixel edges the axis may lie before it is refused; the
#: half pixel absorbs the binned centre searches of :mod:`tomodl.recon.center`.
AXIS_MARGIN = 1.0


def grid_origin(n: int) -> float:
    """Column index ``x0`` of the rotation axis in an ``n x n`` grid (its row is ``n - 1 - x0``)."""
    return float((int(n) + 1) // 2)


def image_coordinates(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``n x n`` reconstruction grid.

    Parameters
    ----------
    n : int
        Grid size (``num_gridx``).

    Returns
    -------
    x : ndarray, shape (n,), float64
        ``x`` of each column, in pixels from the rotation axis.
    y : ndarray, shape (n,), float64
        ``y`` of each row, in pixels from the rotation axis (decreasing: row 0 is the top).
    """
    x0 = grid_origin(n)
    idx = np.arange(n, dtype=np.float64)
    return idx - x0, (n - 1 - idx) - x0


def detector_coordinate(x, y, theta, center):
    """Detector column hit by the ray at angle ``theta`` through ``(x, y)``.

    All arguments broadcast; ``theta`` in radians, the rest in pixels.
    """
    return x * np.cos(theta) + y * np.sin(theta) + center


def default_center(n_det: int) -> float:
    """TomoPy's default rotation axis for ``n_det`` detector columns: ``n_det / 2``."""
    return n_det / 2.0


def axis_limits(n_det: int) -> Tuple[float, float]:
    """Range of rotation axes (detector pixels) accepted for ``n_det`` columns: the detector
    ``[-0.5, n_det - 0.5]`` widened by :data:`AXIS_MARGIN`."""
    return -0.5 - AXIS_MARGIN, n_det - 0.5 + AXIS_MARGIN


def directions(theta) -> np.ndarray:
    """Distinct projection directions: angles modulo ``pi``, sorted, within
    :data:`SAME_DIRECTION` of each other merged (``0`` and ``pi`` are one direction)."""
    t = np.sort(np.mod(np.asarray(theta, dtype=np.float64).ravel(), np.pi))
    if t.size == 0:
        return t
    t = t[np.append(True, np.diff(t) > SAME_DIRECTION)]
    if t.size > 1 and t[0] + np.pi - t[-1] <= SAME_DIRECTION:
        t = t[:-1]
    return t


def angular_coverage(theta) -> float:
    """Angular range the projections cover, radians in ``[0, pi]`` (modulo ``pi``): ``pi``
    minus the widest gap between directions, plus the typical step (so that ``n`` evenly spaced
    angles over ``[0, pi)`` cover ``pi``)."""
    d = directions(theta)
    if d.size < 2:
        return 0.0
    gaps = np.append(np.diff(d), d[0] + np.pi - d[-1])
    return float(np.clip(np.pi - gaps.max() + np.median(gaps), 0.0, np.pi))


def angles_per_half_turn(theta) -> float:
    """Projections per 180 degrees of a scan's angles (radians, any order, any arc).

    ``n`` angles evenly covering an arc ``a`` (endpoint spacing included) count as
    ``n * pi / a``; a 360-degree scan of 1800 angles is 900 per half turn.

    Examples
    --------
    >>> round(angles_per_half_turn(np.linspace(0, np.pi, 181)), 1)
    180.0
    """
    t = np.sort(np.asarray(theta, dtype=np.float64).ravel())
    n = t.size
    if n < 2:
        return float(n)
    arc = (t[-1] - t[0]) * n / (n - 1)
    return float(n * math.pi / arc) if arc > 0 else float(n)


def check_angles(theta, *, source: str = "theta") -> None:
    """Refuse angles with fewer than :data:`MIN_DIRECTIONS` distinct directions.

    Raises
    ------
    GeometryError
        One or two projections, or all angles the same (modulo 180 degrees).
    """
    n, k = np.size(theta), directions(theta).size
    if k < MIN_DIRECTIONS:
        raise GeometryError(
            f"{source} give{'s' if source == 'theta' else ''} {k} distinct projection "
            f"direction{'s' * (k != 1)} (angles modulo 180 degrees) for {n} projection"
            f"{'s' * (n != 1)}: FBP needs at least {MIN_DIRECTIONS} to form an image",
            fix="check theta (radians, one angle per projection) or use more projections",
            cli_fix="check the angles stored in the scan file (e.g. /exchange/theta) or use a "
                    "scan with more projections")


def check_center(center, n_det: int, *, source: str = "") -> None:
    """Refuse a rotation axis (a float or one per row) that is off the detector (or not finite).

    ``source`` names the data in the message (e.g. the scan file).

    Raises
    ------
    GeometryError
        The axis lies outside :func:`axis_limits`: no measured ray passes near it.
    """
    c = np.atleast_1d(np.asarray(center, dtype=np.float64)).ravel()
    lo, hi = axis_limits(n_det)
    bad = ~np.isfinite(c) | (c < lo) | (c > hi)
    if np.any(bad):
        row = int(np.argmax(bad))
        where = f" (row {row})" if c.size > 1 else ""
        of = f" of {source}" if source else ""
        raise GeometryError(
            f"the rotation axis {c[row]:g} px{where} is off the detector{of}, whose columns "
            f"are 0 to {n_det - 1}",
            fix=f"pass center= in detector pixels (column index; TomoPy's default n_det / 2 "
                f"= {default_center(n_det):g})",
            cli_fix=f"pass --rotation-axis in detector pixels, 0 to {n_det - 1}, or auto")


def check_geometry(theta, center: Optional[object], n_det: int, *, source: str = "",
                   warn: bool = True) -> None:
    """The physics checks of a reconstruction, shared by :func:`tomodl.recon` and the volume
    pipeline (run once, before any output is opened).

    Refuses (:class:`~tomodl.errors.GeometryError`) what cannot give an image: fewer than
    :data:`MIN_DIRECTIONS` distinct directions, an axis off the detector.  With ``warn``, logs
    one warning each for what is merely doubtful: angular coverage below
    :data:`MIN_COVERAGE_DEG`, an axis within :data:`EDGE_FRACTION` of the detector width from
    an edge.

    Parameters
    ----------
    theta : array_like, shape (n_angles,)
        Angles in radians.
    center : None, float or array_like of shape (n_rows,)
        Rotation axis in detector pixels (None: not known yet, e.g. to be found).
    n_det : int
        Detector columns.
    source : str
        What the data are, for the messages (e.g. ``"scan.h5"``); default the arguments.
    """
    check_angles(theta, source=f"the angles of {source}" if source else "theta")
    if center is not None:
        check_center(center, n_det, source=source)
    if not warn:
        return
    cov = np.degrees(angular_coverage(theta))
    of = f" of {source}" if source else ""
    if cov < MIN_COVERAGE_DEG:
        logger.warning("the angles%s cover %.0f of the 180 degrees (modulo 180) a parallel-beam "
                       "scan needs: expect limited-angle streaks and distortion along the "
                       "missing directions", of, cov)
    if center is None:
        return
    c = np.atleast_1d(np.asarray(center, dtype=np.float64))
    edge = float(np.min(np.minimum(c + 0.5, n_det - 0.5 - c)))
    if edge < EDGE_FRACTION * n_det:
        logger.warning("the rotation axis%s (%s px) is %.1f px from the edge of the %d-px "
                       "detector: most of the reconstruction circle was measured from one side "
                       "only; check the axis with the try mode", of,
                       f"{c[0]:g}" if c.size == 1 else f"{c.min():g}..{c.max():g}", edge, n_det)


def trial_range(center: float, width: float, step: float, n_det: int
                ) -> Tuple[float, float, float]:
    """``(start, stop, step)`` of the try mode's trial centres ``center + k * step`` within
    ``+- width``, kept on the detector, columns ``0 .. n_det - 1`` (a wide search near the edge
    is cut at the edge instead of refused by :func:`check_center`)."""
    lo, hi = 0.0, n_det - 1.0
    k_lo = max(np.ceil((lo - center) / step), np.ceil(-width / step - 1e-9))
    k_hi = min(np.floor((hi - center) / step), np.floor(width / step + 1e-9))
    if k_hi < k_lo:
        raise GeometryError(f"no trial centre within {width:g} px of {center:g} lies on the "
                            f"detector (columns 0 to {n_det - 1})",
                            fix="choose an axis on the detector")
    return float(center + k_lo * step), float(center + k_hi * step + step / 2), float(step)
