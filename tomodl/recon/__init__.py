# SPDX-License-Identifier: BSD-3-Clause
"""Classical reconstruction: pre-processing, filters, FBP, the TomoPy-style API and the pipeline.

Import from the modules (``from tomodl.recon.fbp import fbp``): ``tomodl.recon`` is also the
function :func:`tomodl.recon.api.recon`, which shadows this subpackage as an attribute.
"""
