# SPDX-License-Identifier: BSD-3-Clause
"""The control network of the paper: the original U-Net with half the filters."""
from __future__ import annotations

from tomodl.models.layers import DoubleConv, EncoderDecoder


class UNet(EncoderDecoder):
    """U-Net (Ronneberger et al. 2015) with half the filters, 32 ... 512, as the paper's control.

    Differences from the 2015 network, all shared with :class:`~tomodl.models.resattunet.ResAttUnet`
    so that only the structure differs (paper section 3.2): "same" padding instead of valid
    convolutions (output size = input size, no overlap-tile cropping), batch norm after every
    3x3 convolution, one input and one output channel, and a residual output
    (``input + correction``).

    Parameters
    ----------
    base_filters : int, default 32
        Channels of the first level; level ``i`` has ``base_filters * 2**i``.
    depth : int, default 5
        Number of levels (4 poolings).
    residual : bool, default True
        Predict a correction added to the input.

    Examples
    --------
    >>> import torch
    >>> net = UNet(base_filters=4, depth=3).eval()
    >>> net(torch.zeros(2, 1, 37, 31)).shape
    torch.Size([2, 1, 37, 31])
    """

    def __init__(self, base_filters: int = 32, depth: int = 5, residual: bool = True) -> None:
        super().__init__(base_filters, depth, residual, block=DoubleConv, attention=False)
