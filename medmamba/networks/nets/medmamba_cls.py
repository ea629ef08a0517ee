"""MedMamba (Yue & Li, arXiv 2403.03849): a hierarchical classifier of SS-Conv-SSM blocks, 2D and 3D.

Patch embedding (stride 4) -> 4 stages of SS-Conv-SSM blocks with patch merging between them (resolution / 2,
channels x 2) -> global average pooling -> linear head, as YubiaoYue/MedMamba's ``MedMamba.py`` (``VSSM``). In 3D
the cross-scan has 6 routes instead of 4.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn as nn

from medmamba.networks.blocks.patch import PatchEmbed, PatchMerging
from medmamba.networks.blocks.ss_conv_ssm import SSConvSSM
from medmamba.networks.blocks.stochastic_depth import drop_path_rates
from medmamba.registry import Paper, ReportedResult, register_model


class MedMambaClassifier(nn.Module):
    """MedMamba classifier: (B, in_channels, *spatial) -> logits (B, out_channels).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes.
        depths: SS-Conv-SSM blocks per stage; stages are joined by patch merging (resolution / 2).
        dims: width per stage, or the first stage's width, doubled at each later stage.
        d_state: S6 state size.
        patch_size: stride of the patch embedding.
        drop_path_rate: stochastic depth rising linearly to this over all blocks.

    Raises:
        ValueError: ``dims`` and ``depths`` have different lengths.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        depths: Sequence[int] = (2, 2, 4, 2),
        dims: Sequence[int] | int = 96,
        d_state: int = 16,
        patch_size: int = 4,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        dims = [dims * 2**i for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        if len(dims) != len(depths):
            raise ValueError(f"dims {dims} and depths {list(depths)} need one value per stage")
        self.patch_embed = PatchEmbed(spatial_dims, in_channels, dims[0], patch_size)
        total = sum(depths)
        rates = drop_path_rates(drop_path_rate, total)
        stages = []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            start = sum(depths[:i])
            blocks = [SSConvSSM(dim, spatial_dims, d_state, rates[start + j]) for j in range(depth)]
            if i < len(depths) - 1:
                blocks.append(PatchMerging(spatial_dims, dim, dims[i + 1]))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(dims[-1], out_channels)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> pooled features (B, dims[-1])."""
        x = self.stages(self.patch_embed(x))
        return x.flatten(1, -2).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_BLOCK_RULES = [  # inside one official SS_Conv_SSM -> ours
    (r"ln_1\.", "norm."),
    (r"self_attention\.conv2d\.", "ssm.conv."),
    (r"self_attention\.(x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds)$", r"ssm.ssm.\1"),
    (r"self_attention\.(in_proj|out_norm|out_proj)\.", r"ssm.\1."),
    (r"conv33conv33conv11\.", "conv_branch."),
]


def checkpoint_filter(state_dict, model: MedMambaClassifier):
    """Map an official MedMamba state dict (``VSSM`` of ``MedMamba.py``) to ours.

    Official ``layers[i].blocks[j]`` -> ``stages[i][j]``; ``layers[i].downsample`` (the patch merging at the end
    of stage i) -> ``stages[i][depth_i]``; ``patch_embed`` and ``head`` keep their names. Returns a
    ``medmamba.weights.Converted``.
    """
    from medmamba.weights import remap

    def rename(key: str):
        if key.startswith(("patch_embed.", "head.")):
            return key, None
        m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.*)", key)
        if m:
            stage = int(m[1])
            return f"stages.{stage}.{len(model.stages[stage]) - 1}.{m[2]}", None
        m = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m:
            for pattern, repl in _BLOCK_RULES:
                if re.match(pattern, m[3]):
                    return f"stages.{m[1]}.{m[2]}.{re.sub(pattern, repl, m[3], count=1)}", None
        return None

    return remap(state_dict, rename)


_PAPER = Paper(
    title="MedMamba: Vision Mamba for Medical Image Classification",
    venue="arXiv preprint",
    year=2024,
    arxiv="2403.03849",
)
_CODE = "https://github.com/YubiaoYue/MedMamba"
_COMMON = dict(
    task="classification",
    spatial_dims=(2, 3),
    family="hybrid with CNN",
    scan="4-route cross-scan (2D) / 6-route (3D), on half the channels beside a conv branch",
    paper=_PAPER,
    code_url=_CODE,
    reference_input={2: (3, 224, 224), 3: (1, 64, 64, 64)},
    checkpoint_filter=checkpoint_filter,
)
_TINY = {"depths": (1, 1), "dims": 16, "d_state": 4}
# MedMamba.py (YubiaoYue/MedMamba 104beb3) builds T, S and B with 6 classes (PAD-UFES-20's) at its end.
_NOTES = ("The official VSSM of MedMamba.py at {config}, 6 classes (as the file builds it), counted from its "
          "modules in the official code (YubiaoYue/MedMamba 104beb3): {count}M. 3D is our extension (SS3D with 6 "
          "routes, Conv3d branch); the paper is 2D.")


@register_model(
    **_COMMON,
    reported=(
        ReportedResult("PAD-UFES-20 (6 classes)", "AUC", 0.808),
        ReportedResult("Fetal-Planes-DB (6 classes)", "overall accuracy %", 94.0),
        ReportedResult("Kvasir (8 classes)", "overall accuracy %", 78.8),
    ),
    # MedMamba-T on PAD-UFES-20 (6-class head, 224^2 RGB), as quoted by the survey arXiv 2410.02362, sec. 3.5.2;
    # the official code's count is 14.46M.
    paper_params_m=14.5,
    presets={"paper": {"depths": (2, 2, 4, 2), "dims": 96, "out_channels": 6}, "tiny": _TINY},
    notes="The official VSSM of MedMamba.py at its default (T) configuration, depths (2, 2, 4, 2), widths 96-768. "
    "3D is our extension (SS3D with 6 routes, Conv3d branch); the paper is 2D.",
)
def medmamba_t(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2, **kwargs) -> MedMambaClassifier:
    """MedMamba-T: depths (2, 2, 4, 2), widths 96-768 (the official code's default)."""
    kwargs = {"depths": (2, 2, 4, 2), "dims": 96, **kwargs}
    return MedMambaClassifier(spatial_dims, in_channels, out_channels, **kwargs)


@register_model(
    **_COMMON,
    paper_params_m=18.63,
    params_source="official code",
    presets={"paper": {"depths": (2, 2, 8, 2), "dims": 96, "out_channels": 6}, "tiny": _TINY},
    notes=_NOTES.format(config="depths (2, 2, 8, 2), widths 96-768", count=18.63),
)
def medmamba_s(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2, **kwargs) -> MedMambaClassifier:
    """MedMamba-S: depths (2, 2, 8, 2), widths 96-768 (MedMamba.py's ``medmamba_s``)."""
    kwargs = {"depths": (2, 2, 8, 2), "dims": 96, **kwargs}
    return MedMambaClassifier(spatial_dims, in_channels, out_channels, **kwargs)


@register_model(
    **_COMMON,
    paper_params_m=39.86,
    params_source="official code",
    presets={"paper": {"depths": (2, 2, 12, 2), "dims": 128, "out_channels": 6}, "tiny": _TINY},
    notes=_NOTES.format(config="depths (2, 2, 12, 2), widths 128-1024", count=39.86),
)
def medmamba_b(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2, **kwargs) -> MedMambaClassifier:
    """MedMamba-B: depths (2, 2, 12, 2), widths 128-1024 (MedMamba.py's ``medmamba_b``)."""
    kwargs = {"depths": (2, 2, 12, 2), "dims": 128, **kwargs}
    return MedMambaClassifier(spatial_dims, in_channels, out_channels, **kwargs)
