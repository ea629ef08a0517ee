"""MambaOut U-Net: VM-UNet's layout with MambaOut's gated CNN blocks, no state space model (the honest baseline)."""
from __future__ import annotations

from collections.abc import Sequence

from medmamba.networks.blocks.gated_cnn import GatedCNNBlock
from medmamba.networks.nets._token_unet import token_unet
from medmamba.registry import Paper, ReportedResult, register_model


@register_model(
    task="segmentation", spatial_dims=(2, 3), family="gated CNN without SSM", scan="none (no SSM)",
    paper=Paper("MambaOut: Do We Really Need Mamba for Vision?", "CVPR", 2025, "2405.07992"),
    code_url="https://github.com/yuweihao/MambaOut",
    reported=(ReportedResult("ImageNet-1k (MambaOut-Tiny classifier)", "top-1 accuracy", 82.7),),
    presets={
        "paper": dict(features=(96, 192, 384, 768), strides=(4, 2, 2, 2), depths=(2, 2, 2, 2),
                      decoder_depths=(2, 2, 2, 1), drop_path_rate=0.2),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), depths=1, decoder_depths=1, kernel_size=3),
    },
    reference_input={2: (3, 256, 256), 3: (1, 128, 128, 128)},
    trainer="MambaOutTrainer",
    notes="MambaOut has no segmentation U-Net of its own: this is vm_unet with every VSS block replaced by a gated "
    "CNN block ('paper' preset = vm_unet's), so the two differ only in the SSM. Our own baseline: no paper "
    "parameter count exists for it.",
)
def mambaout_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                  features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
                  depths: int | Sequence[int] = 1, decoder_depths: int | Sequence[int] = 1,
                  kernel_sizes: Sequence | None = None, kernel_size: int = 7, drop_path_rate: float = 0.0,
                  deep_supervision: bool = False):
    """MambaOut U-Net: ``vm_unet``'s layout with gated CNN blocks in place of the VSS blocks.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes.
        features, strides, depths, decoder_depths, kernel_sizes, drop_path_rate, deep_supervision: the U-Net
            layout, see ``token_unet`` (VM-UNet's ``depths`` and ``depths_decoder``).
        kernel_size: the gated CNN block's depthwise convolution kernel (MambaOut's 7).
    """
    return token_unet(
        spatial_dims, in_channels, out_channels,
        lambda dim, dp: GatedCNNBlock(dim, spatial_dims, kernel_size=kernel_size, drop_path=dp),
        features, strides, depths, decoder_depths, kernel_sizes, drop_path_rate, deep_supervision,
    )
