"""The U-Net skeleton every segmentation net here shares: encoder stages, decoder stages, deep supervision.

Stage ``i`` of the encoder downsamples by ``strides[i]`` (the first stride may be 1), so stage ``i`` works at
``input / cumprod(strides)[i]``. Decoder stage ``i`` (``i = n_stages - 2 .. 0``) upsamples from stage ``i + 1``,
fuses the skip of encoder stage ``i`` and has a segmentation head. Outputs, highest resolution first:
output 0 at the input resolution, output ``i`` at ``input / cumprod(strides)[i]``; with deep supervision all
``n_stages - 1`` of them (what nnU-Net's ``_get_deep_supervision_scales`` expects), else output 0 alone.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.networks.blocks.conv import as_tuple, conv_nd


def normalize_strides(strides: Sequence, spatial_dims: int) -> list[tuple[int, ...]]:
    """One ``spatial_dims``-tuple per stage from ints or per-axis sequences (ValueError on a wrong length)."""
    return [as_tuple(s, spatial_dims) for s in strides]


def per_stage(value, n_stages: int, name: str) -> list:
    """An int (same for every stage) or a sequence of ``n_stages`` values."""
    values = [value] * n_stages if isinstance(value, (int, float)) else list(value)
    if len(values) != n_stages:
        raise ValueError(f"{name} needs {n_stages} values (one per stage), got {value!r}")
    return values


class UNetDecoder(nn.Module):
    """``deep_supervision`` is the attribute nnU-Net's ``set_deep_supervision_enabled`` toggles.
    ``heads``: one per decoder stage, highest resolution first, or fewer: deep supervision then outputs only the
    stages that have one (Swin-UMamba supervises four of its five). ``unfused``: decoder stages that take the
    upsampled features alone, without their skip (U-Mamba's 2D nets leave out the full-resolution skip)."""

    def __init__(self, ups: Sequence[nn.Module], stages: Sequence[nn.Module], heads: Sequence[nn.Module],
                 fuse: str = "cat", final_up: nn.Module | None = None, deep_supervision: bool = False,
                 unfused: Sequence[int] = ()):
        super().__init__()
        if fuse not in ("cat", "add"):
            raise ValueError(f"fuse must be 'cat' or 'add', not {fuse!r}")
        self.ups, self.stages, self.heads = nn.ModuleList(ups), nn.ModuleList(stages), nn.ModuleList(heads)
        self.fuse, self.final_up, self.deep_supervision = fuse, final_up, deep_supervision
        self.unfused = frozenset(unfused)

    def forward(self, skips: Sequence[torch.Tensor], deepest: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``skips``: one per encoder stage, highest resolution first; the decoder starts from the deepest skip
        (a refined one where the last stage is a ``RefinedSkip``, as UNETR's). ``deepest``, the last stage's own
        output, is for decoders that need it besides its skip (VM-UNet's)."""
        x, outputs = skips[-1], []
        for i in reversed(range(len(self.stages))):
            x = self.ups[i](x)
            if i not in self.unfused:
                x = torch.cat((x, skips[i]), dim=1) if self.fuse == "cat" else x + skips[i]
            x = self.stages[i](x)
            if i == 0:
                outputs.append(self.heads[0](x if self.final_up is None else self.final_up(x)))
            elif self.deep_supervision and i < len(self.heads):
                outputs.append(self.heads[i](x))
        return outputs[::-1]


class RefinedSkip(nn.Module):
    """An encoder stage whose skip goes through ``refine`` (UNETR's encoder blocks, e.g. lifting the width)
    while the next stage gets the stage's own output."""

    def __init__(self, body: nn.Module, refine: nn.Module):
        super().__init__()
        self.body, self.refine = body, refine

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(x)
        return x, self.refine(x)


class SegUNet(nn.Module):
    """Runs ``encoder`` stages (channels-first in and out; a stage may return ``(next_input, skip)``) then
    ``decoder``; pads inputs to a multiple of the total stride and crops the outputs back."""

    def __init__(self, encoder: Sequence[nn.Module], decoder: UNetDecoder, strides: Sequence[Sequence[int]]):
        super().__init__()
        self.encoder = nn.ModuleList(encoder)
        self.decoder = decoder
        self.strides = [tuple(s) for s in strides]
        self.scales = [tuple(int(v) for v in c) for c in np.cumprod(np.array(self.strides), axis=0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        total = self.scales[-1]
        pad = [(-s) % t for s, t in zip(size, total)]
        if any(pad):
            x = F.pad(x, [v for p in reversed(pad) for v in (0, p)])
        skips = []
        for stage in self.encoder:
            x = stage(x)
            x, skip = x if isinstance(x, tuple) else (x, x)
            skips.append(skip)
        outputs = self.decoder(skips, x)
        scales = [(1,) * len(size)] + self.scales[1:]
        outputs = [
            o[(..., *(slice(0, -(-s // f)) for s, f in zip(size, scale)))] for o, scale in zip(outputs, scales)
        ]
        return outputs if self.decoder.deep_supervision else outputs[0]


def seg_heads(spatial_dims: int, features: Sequence[int], out_channels: int) -> list[nn.Module]:
    """1x1 conv heads for decoder stages 0 .. n_stages - 2."""
    return [conv_nd(spatial_dims, f, out_channels, 1) for f in features[:-1]]
