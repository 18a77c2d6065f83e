# SPDX-License-Identifier: BSD-3-Clause
"""Building blocks shared by :class:`~tomodl.models.unet.UNet` and
:class:`~tomodl.models.resattunet.ResAttUnet`.

Both networks are the same encoder-decoder skeleton (:class:`EncoderDecoder`) and differ only in
the block used at every level and in the attention gates on the skip connections.  The choices
the paper leaves open are made here, once, and listed in ``docs/models.md``:

* every 3x3 convolution is zero-padded ("same"), bias-free, followed by batch norm and ReLU;
* down-sampling is 2x2 max pooling, up-sampling a 2x2 transposed convolution with stride 2 that
  halves the channels (Ronneberger et al. 2015);
* the network predicts a correction that is added to its input (``residual=True``); the last
  1x1 convolution starts at zero so an untrained network is exactly the identity;
* convolutions start from Kaiming-normal weights (fan-out, ReLU gain), batch norm from (1, 0).

Spatial sizes: the network needs ``H`` and ``W`` divisible by :attr:`EncoderDecoder.size_multiple`
(``2 ** (depth - 1)``); :meth:`EncoderDecoder.forward` pads other sizes by reflection and crops
the output back, so any size works.
"""
from __future__ import annotations

import math
from typing import List, Tuple, Type

import torch  # noqa: TID253  (this module defines torch.nn classes; imported lazily by the registry)
import torch.nn.functional as F  # noqa: TID253
from torch import nn  # noqa: TID253


def pad_to_multiple(x: "torch.Tensor", multiple: int) -> Tuple["torch.Tensor", Tuple[int, int]]:
    """Pad the last two axes at their end so both are divisible by ``multiple``.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W)
    multiple : int

    Returns
    -------
    padded : torch.Tensor, shape (N, C, Hp, Wp)
        Reflection padding (replicate where a side is too short to reflect).
    size : (int, int)
        The original ``(H, W)``, to crop the result back with ``y[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


class ConvBNReLU(nn.Sequential):
    """3x3 "same" conv (no bias) -> batch norm -> ReLU: ``(N, c_in, H, W) -> (N, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Module):
    """The U-Net block: two :class:`ConvBNReLU` in a row (Ronneberger et al. 2015)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(c_in, c_out)
        self.conv2 = ConvBNReLU(c_out, c_out)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.conv2(self.conv1(x))


class ResLikeBlock(nn.Module):
    """The paper's "ResNet-like" block (its Fig. 3): the shortcut skips only the second conv.

    ``h = relu(bn1(conv1(x)))``, ``y = relu(bn2(conv2(h)) + h)``.  Because the shortcut starts
    after the first convolution, which already changes the channel count, no projection is
    needed, and the block has exactly as many parameters as :class:`DoubleConv`.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(c_in, c_out)
        self.conv2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)
        )

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        h = self.conv1(x)
        return torch.relu_(self.conv2(h).add_(h))


class AttentionGate(nn.Module):
    """The paper's attention block (its Fig. 4) on one skip connection.

    The skip features ``x`` and the decoder features ``g`` (same resolution) each go through a
    1x1 convolution to ``c_int`` channels; the two results are concatenated, passed through a
    ReLU and a 1x1 convolution with one output filter, and a sigmoid turns that into a weight in
    (0, 1) that multiplies ``x``.  (Without the ReLU, concatenation followed by a 1x1 conv would
    collapse to a linear map; with it, this is Oktay et al.'s additive attention.)

    Parameters
    ----------
    c_skip, c_gate : int
        Channels of ``x`` and ``g``.
    c_int : int
        Channels of each 1x1 projection (``c_skip // 2`` in both networks, as Oktay et al.).
    """

    def __init__(self, c_skip: int, c_gate: int, c_int: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(c_skip, c_int, 1)
        self.phi = nn.Conv2d(c_gate, c_int, 1)
        self.psi = nn.Conv2d(2 * c_int, 1, 1)

    def weight(self, x: "torch.Tensor", g: "torch.Tensor") -> "torch.Tensor":
        """The attention weight, shape (N, 1, H, W), values in (0, 1)."""
        f = torch.relu_(torch.cat([self.theta(x), self.phi(g)], dim=1))
        return torch.sigmoid(self.psi(f))

    def forward(self, x: "torch.Tensor", g: "torch.Tensor") -> "torch.Tensor":
        return x * self.weight(x, g)


class EncoderDecoder(nn.Module):
    """A U-shaped network with ``depth`` levels of ``base_filters * 2**level`` channels.

    Parameters
    ----------
    base_filters : int
        Channels of the first level (32 in the paper: levels 32, 64, 128, 256, 512).
    depth : int
        Number of levels including the bottleneck (5 in the paper); ``depth - 1`` poolings.
    residual : bool
        Output ``input + correction`` (default) instead of the image itself.
    block : type
        Block used at every encoder and decoder level.
    attention : bool
        Put an :class:`AttentionGate` on every skip connection.

    Input and output: ``(N, 1, H, W)`` float tensors, any ``H, W``.
    """

    def __init__(
        self,
        base_filters: int = 32,
        depth: int = 5,
        residual: bool = True,
        *,
        block: Type[nn.Module] = DoubleConv,
        attention: bool = False,
    ) -> None:
        super().__init__()
        if int(base_filters) < 1 or int(depth) < 2:
            raise ValueError(f"need base_filters >= 1 and depth >= 2, got {base_filters}, {depth}")
        self.depth, self.residual = int(depth), bool(residual)
        widths = [int(base_filters) * 2**i for i in range(self.depth)]
        self.down = nn.ModuleList(
            [block(c_in, c) for c_in, c in zip([1] + widths[:-1], widths)]
        )
        pairs = list(zip(widths[:0:-1], widths[-2::-1]))  # (below, this level), bottom-up
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, c, 2, stride=2) for b, c in pairs])
        self.gates = nn.ModuleList(
            [AttentionGate(c, c, max(1, c // 2)) for _, c in pairs] if attention else []
        )
        self.up_blocks = nn.ModuleList([block(2 * c, c) for _, c in pairs])
        self.head = nn.Conv2d(widths[0], 1, 1)
        if not self.head.weight.is_meta:    # meta tensors (shape checks) hold no values
            self._init_weights()

    @property
    def size_multiple(self) -> int:
        """Height and width must be divisible by this (``2 ** (depth - 1)``) to avoid padding."""
        return 2 ** (self.depth - 1)

    @property
    def receptive_margin(self) -> int:
        """Pixels on each side that can influence an output pixel, rounded up to
        :attr:`size_multiple`: the tile overlap that makes tiled inference exact.

        Half the :func:`receptive_field` plus up to ``size_multiple / 2`` for the position of
        the pixel in the pooling grid (112 for the paper's depth 5, 24 for depth 3).
        """
        m = self.size_multiple
        return m * math.ceil((receptive_field(self.depth) // 2 + m // 2) / m)

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        if self.residual:
            nn.init.zeros_(self.head.weight)

    def _decode(self, h: "torch.Tensor", skips: List["torch.Tensor"]) -> "torch.Tensor":
        for i, (up, block) in enumerate(zip(self.up, self.up_blocks)):
            u = up(h)
            skip = skips.pop()
            if self.gates:
                skip = self.gates[i](skip, u)
            h = block(torch.cat([skip, u], dim=1))
            del u, skip
        return h

    def _body(self, h: "torch.Tensor") -> "torch.Tensor":
        """Encoder, decoder and head on a padded input: ``(N, C, H, W) -> (N, C', H, W)``."""
        skips: List[torch.Tensor] = []
        for i, block in enumerate(self.down):
            h = block(h)
            if i < self.depth - 1:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        return self.head(self._decode(h, skips))

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        """``(N, 1, H, W) -> (N, 1, H, W)``, same dtype family; any ``H, W`` (padded internally)."""
        xp, (h0, w0) = pad_to_multiple(x, self.size_multiple)
        out = self._body(xp)
        if self.residual:
            out = xp + out.to(xp.dtype)
        return out[..., :h0, :w0]


def receptive_field(depth: int, convs_per_level: int = 2) -> int:
    """Width in input pixels of the receptive field of one output pixel of :class:`EncoderDecoder`.

    Walks the deepest path: ``convs_per_level`` 3x3 convolutions at every encoder level,
    2x2 pooling between levels, 2x2 stride-2 transposed convolutions (no overlap) and the
    decoder convolutions back up.  For the paper's depth 5 this is 200 pixels.
    """
    rf, jump = 1, 1
    for level in range(depth):
        rf += 2 * convs_per_level * jump
        if level < depth - 1:
            rf += jump
            jump *= 2
    for _ in range(depth - 1):
        jump //= 2
        rf += 2 * convs_per_level * jump
    return rf
