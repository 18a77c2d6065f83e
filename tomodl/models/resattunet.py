# SPDX-License-Identifier: BSD-3-Clause
"""ResAttUnet, the network of the paper: a U-Net with ResNet-like blocks and attention gates."""
from __future__ import annotations

from tomodl.models.layers import EncoderDecoder, ResLikeBlock


class ResAttUnet(EncoderDecoder):
    """U-Net with the paper's ResNet-like blocks (Fig. 3) and attention gates on the skips (Fig. 4).

    Encoder levels have ``base_filters * 2**i`` filters (32, 64, 128, 256, 512 by default); the
    decoder mirrors them with 2x2 transposed convolutions.  Every level, on both sides, is a
    :class:`~tomodl.models.layers.ResLikeBlock` (``relu(bn(conv2(h)) + h)`` with
    ``h = relu(bn(conv1(x)))``).  Before each skip connection is concatenated, an
    :class:`~tomodl.models.layers.AttentionGate` weights it by ``sigmoid(psi(relu([theta(skip),
    phi(up)])))``, where ``up`` is the transposed-convolution output of the level below.

    Parameters
    ----------
    base_filters : int, default 32
    depth : int, default 5
    residual : bool, default True
        Predict a correction added to the input (the last layer starts at zero, so the untrained
        network returns its input).

    Examples
    --------
    >>> import torch
    >>> net = ResAttUnet(base_filters=4, depth=3).eval()
    >>> bool((net(torch.ones(1, 1, 20, 18)) == 1).all())
    True
    """

    def __init__(self, base_filters: int = 32, depth: int = 5, residual: bool = True) -> None:
        super().__init__(base_filters, depth, residual, block=ResLikeBlock, attention=True)
