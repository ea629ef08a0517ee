"""VM-UNet: a U-Net of VSS blocks (SS2D cross-scan), patch merging/expanding, additive skips."""
from __future__ import annotations

from collections.abc import Sequence

from medmamba.networks.blocks.ssnd import VSSBlock
from medmamba.networks.nets._token_unet import token_unet, vssm_checkpoint_filter
from medmamba.registry import Paper, ReportedResult, register_model


@register_model(
    task="segmentation",
    spatial_dims=(2, 3),
    family="pure Mamba",
    scan="4-route cross-scan (2D) / 6-route cross-scan (3D)",
    paper=Paper("VM-UNet: Vision Mamba UNet for Medical Image Segmentation", "arXiv", 2024, "2402.02491"),
    code_url="https://github.com/JCruan519/VM-UNet",
    reported=(ReportedResult("Synapse", "DSC", 81.08),),
    paper_params_m=27.43,
    presets={
        # The official configuration (configs/config_setting.py): depths [2, 2, 2, 2], depths_decoder [2, 2, 2, 1].
        "paper": dict(features=(96, 192, 384, 768), strides=(4, 2, 2, 2), depths=(2, 2, 2, 2),
                      decoder_depths=(2, 2, 2, 1), d_state=16, expand=2, drop_path_rate=0.2),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), depths=1, decoder_depths=1, d_state=4),
    },
    reference_input={2: (3, 256, 256), 3: (1, 128, 128, 128)},
    trainer="VMUNetTrainer",
    checkpoint_filter=vssm_checkpoint_filter,
    notes="The paper is 2D; the 3D variant scans 6 routes. Under nnU-Net plans (first stride 1) stage 0 is a "
    "residual conv stage and VSS blocks start at the first downsampled stage. The default SS2D expansion is 1 "
    "(CPU-friendly); the paper's 2 is in preset 'paper'.",
)
def vm_unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 2,
    features: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence = (1, 2, 2, 2),
    depths: int | Sequence[int] = 1,
    decoder_depths: int | Sequence[int] = 1,
    kernel_sizes: Sequence | None = None,
    d_state: int = 16,
    expand: float = 1,
    drop_path_rate: float = 0.0,
    deep_supervision: bool = False,
):
    """VM-UNet segmentation U-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes.
        features, strides, depths, decoder_depths, kernel_sizes, drop_path_rate, deep_supervision: the U-Net
            layout, see ``token_unet`` (VM-UNet's ``depths`` and ``depths_decoder``).
        d_state: S6 state size.
        expand: SS2D's inner width as a multiple of the stage width (the paper's 2 in preset ``"paper"``).
    """
    return token_unet(
        spatial_dims, in_channels, out_channels,
        lambda dim, dp: VSSBlock(dim, spatial_dims, mixer="ss", drop_path=dp, d_state=d_state, expand=expand),
        features, strides, depths, decoder_depths, kernel_sizes, drop_path_rate, deep_supervision,
    )
