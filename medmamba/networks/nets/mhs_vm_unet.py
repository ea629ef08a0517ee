"""MHS-VM: VM-UNet's layout with multi-head scan blocks (one scan pattern per head: continuous, diagonal, spiral,
zigzag), fused by the gated fusion unit."""
from __future__ import annotations

from collections.abc import Sequence

from medmamba.networks.blocks.ssnd import VSSBlock
from medmamba.networks.nets._token_unet import token_unet, vssm_checkpoint_filter
from medmamba.registry import Paper, ReportedResult, register_model


@register_model(
    task="segmentation",
    spatial_dims=(2, 3),
    family="pure Mamba",
    scan="multi-head: head i scans its channel subspace along MHS-VM pattern i (continuous, diagonal, spiral, "
    "zigzag; 4 sequences each), fused by the gated fusion unit",
    paper=Paper("MHS-VM: Multi-Head Scanning in Parallel Subspaces for Vision Mamba", "arXiv", 2024, "2406.05992"),
    code_url="https://github.com/PixDeep/MHS-VM",
    reported=(ReportedResult("ISIC2018", "DSC", 89.41),),
    paper_params_m=17.26,
    params_source="official code",
    presets={
        # The official ISIC2018 model: configs/config_setting.py (depths, 4 heads) and test.py, which evaluates the
        # published best_4h.pth with gfu_t 0.4 (training used 0.5 on ISIC2018, 0 on ISIC2017).
        "paper": dict(features=(96, 192, 384, 768), strides=(4, 2, 2, 2), depths=(2, 2, 2, 2),
                      decoder_depths=(2, 2, 2, 1), num_heads=4, gfu_t=0.4, d_state=16, drop_path_rate=0.2),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), depths=1, decoder_depths=1, d_state=4),
    },
    reference_input={2: (3, 256, 256), 3: (1, 128, 128, 128)},
    trainer="MHSVMTrainer",
    checkpoint_filter=vssm_checkpoint_filter,
    notes="The multi-head scan of the paper and its official code: head i of 3 (C, X, S) or 4 (C, X, S, Z) scans "
    "its d // heads channels along its own pattern, 4 sequences (two routes and their reverses) with their own S6 "
    "parameters, fused by the gated fusion unit (sum times ReLU(cv - gfu_t)). In 3D the patterns are the documented "
    "generalisations in medmamba.kernels.routes. The 'paper' preset is the official ISIC2018 model (VM-UNet's "
    "layout, 4 heads): 17.26M parameters, counted from its modules (PixDeep/MHS-VM VSSM at configs/config_setting.py; "
    "ours 17,257,129, the same count). Under nnU-Net plans (first stride 1) "
    "stage 0 is a residual conv stage.",
)
def mhs_vm_unet(
    spatial_dims: int = 2,
    in_channels: int = 1,
    out_channels: int = 2,
    features: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence = (1, 2, 2, 2),
    depths: int | Sequence[int] = 1,
    decoder_depths: int | Sequence[int] = 1,
    kernel_sizes: Sequence | None = None,
    num_heads: int = 4,
    gfu_t: float = 0.0,
    d_state: int = 16,
    drop_path_rate: float = 0.0,
    deep_supervision: bool = False,
):
    """MHS-VM segmentation U-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes.
        features, strides, depths, decoder_depths, kernel_sizes, drop_path_rate, deep_supervision: the U-Net
            layout, see ``token_unet`` (VM-UNet's ``depths`` and ``depths_decoder``).
        num_heads: 3 (C, X, S) or 4 (C, X, S, Z), MHS-VM's ``head_num``.
        gfu_t: threshold t of the gated fusion unit.
        d_state: S6 state size.
    """
    return token_unet(
        spatial_dims, in_channels, out_channels,
        lambda dim, dp: VSSBlock(dim, spatial_dims, mixer="mhs", drop_path=dp, num_heads=num_heads, gfu_t=gfu_t,
                                 d_state=d_state),
        features, strides, depths, decoder_depths, kernel_sizes, drop_path_rate, deep_supervision,
    )
