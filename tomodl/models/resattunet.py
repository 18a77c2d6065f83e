# SPDX-License-Identifier: BSD-3-Clause
"""ResAttUnet, the network of the paper: a U-Net with ResNet-like blocks and attention gates."""
from __future__ import annotations

import math

import torch  # noqa: TID253  (this module is imported lazily by the registry)
import torch.nn.functional as F  # noqa: TID253
from torch import nn  # noqa: TID253

from tomodl.models.layers import ConvBNReLU, EncoderDecoder, ResLikeBlock, receptive_field


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
    stem : int, default 1
        Space-to-depth factor ``s`` (the fast CPU release uses 2): the input is rearranged into
        ``s**2`` channels at ``1/s`` of the resolution (``pixel_unshuffle``, lossless), the U-Net
        runs there, and its ``s**2`` output channels are put back at full resolution
        (``pixel_shuffle``).  About ``s**2`` times fewer FLOPs at the same widths; the residual
        is still added at full resolution.  1: the paper's network.
    stem_filters : int, default 0
        With ``stem > 1``: 0 rearranges the input image itself; ``c > 0`` first computes ``c``
        full-resolution features (3x3 conv, batch norm, ReLU) and rearranges those
        (``c * stem**2`` channels), and after ``pixel_shuffle`` (``c`` channels) one more
        full-resolution :class:`~tomodl.models.layers.ConvBNReLU` on them concatenated with
        the first features, then a 1x1 convolution to the correction: a cheap full-resolution
        skip for pixel-scale detail.

    Examples
    --------
    >>> import torch
    >>> net = ResAttUnet(base_filters=4, depth=3).eval()
    >>> bool((net(torch.ones(1, 1, 20, 18)) == 1).all())
    True
    >>> bool((ResAttUnet(4, 3, stem=2).eval()(torch.ones(1, 1, 20, 18)) == 1).all())
    True
    """

    def __init__(self, base_filters: int = 32, depth: int = 5, residual: bool = True,
                 stem: int = 1, stem_filters: int = 0) -> None:
        super().__init__(base_filters, depth, residual, block=ResLikeBlock, attention=True)
        if int(stem) < 1 or int(stem_filters) < 0 or (stem_filters and stem == 1):
            raise ValueError(f"need stem >= 1 and stem_filters >= 0 (only with stem > 1), "
                             f"got {stem}, {stem_filters}")
        self.stem, self.stem_filters = int(stem), int(stem_filters)
        if self.stem > 1:
            width, c = int(base_filters), self.stem_filters
            cells = self.stem**2 * max(c, 1)
            self.down[0] = ResLikeBlock(cells, width)
            self.head = nn.Conv2d(width, cells, 1)
            if c:
                self.stem_in = ConvBNReLU(1, c)
                self.stem_out = nn.Sequential(ConvBNReLU(2 * c, c), nn.Conv2d(c, 1, 1))
            if not self.head.weight.is_meta:
                self._init_weights()
                if c:      # the last layer starts at zero: an untrained network is the identity
                    nn.init.zeros_(self.stem_out[1].weight)
                    nn.init.zeros_(self.head.weight)

    @property
    def size_multiple(self) -> int:
        """Height and width must be divisible by this (``stem * 2 ** (depth - 1)``)."""
        return self.stem * 2 ** (self.depth - 1)

    @property
    def receptive_margin(self) -> int:
        """The exact-tiling overlap in input pixels (see ``EncoderDecoder.receptive_margin``):
        the reduced-resolution margin times ``stem``, plus one stem cell."""
        if self.stem == 1:
            return super().receptive_margin
        m = self.size_multiple
        half = self.stem * (receptive_field(self.depth) // 2 + 1)
        return m * math.ceil((half + m // 2) / m)

    def _body(self, h):
        if self.stem == 1:
            return super()._body(h)
        if not self.stem_filters:
            return F.pixel_shuffle(super()._body(F.pixel_unshuffle(h, self.stem)), self.stem)
        f = self.stem_in(h)
        g = F.pixel_shuffle(super()._body(F.pixel_unshuffle(f, self.stem)), self.stem)
        return self.stem_out(torch.cat([f, g], dim=1))


def stem_state(state: "dict[str, torch.Tensor]", stem: int) -> "dict[str, torch.Tensor]":
    """Carry the weights of a full-resolution ResAttUnet (``stem=1``) over to ``stem=s``.

    A warm start for a faster network: every tensor keeps its shape except the first
    convolution (1 input channel -> ``s**2`` sub-pixel cells) and the head (1 output -> ``s**2``
    cells).  The first convolution's weights are spread evenly over the cells (the network
    then sees the ``s x s``-averaged image) and the head is repeated for every cell (the
    correction is put back by nearest-neighbour upsampling), so the ``stem=s`` network starts
    as the ``stem=1`` one applied at ``1/s`` of the resolution, and training only has to adapt
    it to the finer grid.  Only for ``stem_filters=0``.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        ``state_dict()`` of a ``stem=1`` ResAttUnet.
    stem : int
        The target's ``stem`` (>= 1).

    Returns
    -------
    dict of str to torch.Tensor
        A new state dict for ``ResAttUnet(stem=stem)`` with the same other arguments (the
        unchanged tensors are those of ``state``, not copies).
    """
    first, head_w, head_b = "down.0.conv1.0.weight", "head.weight", "head.bias"
    if state[first].shape[1] != 1 or state[head_w].shape[0] != 1:
        raise ValueError("stem_state needs the weights of a stem=1 ResAttUnet (1 input and "
                         f"1 output channel), got {tuple(state[first].shape)} and "
                         f"{tuple(state[head_w].shape)}")
    cells = int(stem) ** 2
    out = dict(state)          # the three replaced tensors are new; the rest are shared
    out[first] = state[first].repeat(1, cells, 1, 1) / cells
    out[head_w] = state[head_w].repeat(cells, 1, 1, 1)
    out[head_b] = state[head_b].repeat(cells)
    return out
