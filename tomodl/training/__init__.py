# SPDX-License-Identifier: BSD-3-Clause
"""Training and evaluation of the streak-removal networks (``tomodl train``, ``tomodl evaluate``).

- :mod:`~tomodl.training.config`: :class:`TrainConfig` (TOML + overrides), the paper's recipe
  as defaults;
- :mod:`~tomodl.training.trainer`: :func:`train` (Adam + StepLR, fp32 or amp, per-epoch
  validation and exact-resume checkpoints, DDP under ``torchrun``, best epoch exported as a
  weights folder);
- :mod:`~tomodl.training.evaluate`: PSNR/SSIM tables (the paper's Table 1) and Fig. 6;
- :mod:`~tomodl.training.profile`: fp32 vs amp memory and time (the paper's Table 2).

Nothing here imports torch at module level.  See ``docs/training.md``.
"""
from tomodl.training.config import TrainConfig, load_config
from tomodl.training.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]
