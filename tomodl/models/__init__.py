# SPDX-License-Identifier: BSD-3-Clause
"""Deep-learning streak removal: the networks, their weights and slice-by-slice inference.

``tomodl.models.registry`` (``create_model``, ``list_models``) does not import torch; the
network modules (``unet``, ``resattunet``, ``layers``), ``weights`` and ``inference`` need the
deep-learning dependencies (torch, safetensors).  Import from the submodules, e.g.
``from tomodl.models.inference import load_denoiser, denoise``.
"""
from tomodl.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
