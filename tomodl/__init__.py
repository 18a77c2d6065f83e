# SPDX-License-Identifier: BSD-3-Clause
"""tomodl: sparse-view synchrotron tomography, TomoPy-compatible FBP and deep-learning denoising.

The public entry points are :func:`tomodl.recon` (a drop-in for ``tomopy.recon``),
:func:`tomodl.tomopy_algorithm` (a callable for ``tomopy.recon(..., algorithm=f)``) and
:func:`tomodl.read_dx`.  ``tomodl.recon`` is a function that deliberately shadows the
``tomodl/recon/`` subpackage, as in TomoPy: inside the package always write
``from tomodl.recon.fbp import fbp``.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from tomodl.io.dxchange import read_dx, scan_info, write_dx  # noqa: E402
from tomodl.recon.api import recon, tomopy_algorithm  # noqa: E402
from tomodl.recon.center import find_center, write_center  # noqa: E402
from tomodl.recon.check import check  # noqa: E402
from tomodl.recon.corrections import (Corrections, bin_projections,  # noqa: E402
                                      remove_outlier)
from tomodl.recon.preprocess import circ_mask, minus_log, normalize  # noqa: E402
from tomodl.recon.phase import retrieve_phase  # noqa: E402
from tomodl.recon.preview import write_preview  # noqa: E402
from tomodl.recon.stitch import find_center_360, stitch_360  # noqa: E402
from tomodl.recon.stripes import (remove_all_stripe, remove_stripe_fw,  # noqa: E402
                                  remove_stripe_ti)


def create_model(*args, **kwargs):
    """Build a registered network; see :func:`tomodl.models.registry.create_model`."""
    from tomodl.models.registry import create_model as _create

    return _create(*args, **kwargs)


def list_models():
    """Names of the registered networks; see :func:`tomodl.models.registry.list_models`."""
    from tomodl.models.registry import list_models as _list

    return _list()


__all__ = ["__version__", "recon", "tomopy_algorithm", "read_dx", "scan_info", "write_dx",
           "normalize", "minus_log", "circ_mask", "find_center", "write_center",
           "create_model", "list_models", "Corrections", "remove_outlier", "bin_projections",
           "remove_stripe_fw", "remove_stripe_ti", "remove_all_stripe",
           "retrieve_phase", "stitch_360", "find_center_360", "write_preview", "check"]
