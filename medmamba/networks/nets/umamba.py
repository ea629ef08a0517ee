"""U-Mamba: nnU-Net's residual conv U-Net with Mamba layers, at the bottleneck (Bot) or after encoder stages (Enc)."""
from __future__ import annotations

from collections.abc import Sequence

from medmamba.networks.blocks.mamba import MambaLayer
from medmamba.networks.nets._conv_unet import conv_unet
from medmamba.registry import Paper, ReportedResult, register_model

PAPER = Paper("U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation", "arXiv", 2024,
              "2401.04722")
CODE = "https://github.com/bowang-lab/U-Mamba"
TINY = dict(features=(8, 16, 32), strides=(1, 2, 2), n_conv_per_stage=1, d_state=4)
# nnU-Net's 3d_fullres topology for a 128^3 patch (the reference input: the paper's abdomen CT task); U-Mamba
# self-configures like nnU-Net and states no fixed size.
NNUNET_3D = dict(features=(32, 64, 128, 256, 320, 320), strides=(1, 2, 2, 2, 2, 2), n_conv_per_stage=2,
                 n_conv_per_stage_decoder=2)
NOTES = ("Self-configuring like nnU-Net: the paper states no parameter count. The 'paper' preset is checked "
         "against the official code of the paper's time (bowang-lab/U-Mamba UMambaBot.py / UMambaEnc.py, commit "
         "92a741a: residual encoder and decoder, 2 blocks per stage) at nnU-Net's 128^3 plans, counted from its "
         "modules: Bot 58.41M, Enc 59.68M (2 classes); the later UMambaBot_3d.py trims blocks to 42M. The Mamba "
         "layer here is a pre-norm residual Mamba over all voxels of the feature map; the official layer returns "
         "the Mamba output without the residual (no parameters differ).")


def _umamba(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
            n_conv_per_stage_decoder, mamba_stages, d_state, deep_supervision, residual_decoder):
    extras = [MambaLayer(f, d_state=d_state) if i in mamba_stages else None for i, f in enumerate(features)]
    return conv_unet(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
                     n_conv_per_stage_decoder, extras, residual_encoder=True, deep_supervision=deep_supervision,
                     residual_decoder=residual_decoder)


@register_model(
    task="segmentation", spatial_dims=(3, 2), family="hybrid with CNN", scan="unidirectional (flattened voxels)",
    paper=PAPER, code_url=CODE,
    reported=(ReportedResult("Abdomen CT (FLARE22 organs)", "DSC", 86.83),),
    paper_params_m=58.41, params_source="official code",
    presets={"paper": NNUNET_3D, "tiny": TINY},
    reference_input={3: (1, 128, 128, 128), 2: (1, 512, 512)},
    trainer="UMambaBotTrainer", notes=NOTES,
)
def umamba_bot(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
               features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
               kernel_sizes: Sequence | None = None, n_conv_per_stage: int | Sequence[int] = 2,
               n_conv_per_stage_decoder: int | Sequence[int] = 1, d_state: int = 16, deep_supervision: bool = False,
               residual_decoder: bool = True):
    return _umamba(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
                   n_conv_per_stage_decoder, {len(features) - 1}, d_state, deep_supervision, residual_decoder)


@register_model(
    task="segmentation", spatial_dims=(3, 2), family="hybrid with CNN", scan="unidirectional (flattened voxels)",
    paper=PAPER, code_url=CODE,
    reported=(ReportedResult("Abdomen CT (FLARE22 organs)", "DSC", 86.38),),
    paper_params_m=59.68, params_source="official code",
    presets={"paper": dict(NNUNET_3D, mamba_from_stage=0), "tiny": TINY},
    reference_input={3: (1, 128, 128, 128), 2: (1, 512, 512)},
    trainer="UMambaEncTrainer",
    notes=NOTES + " The paper puts Mamba after every encoder stage (preset 'paper'); the default starts at stage 1 "
    "to skip the costly full-resolution scan.",
)
def umamba_enc(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
               features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
               kernel_sizes: Sequence | None = None, n_conv_per_stage: int | Sequence[int] = 2,
               n_conv_per_stage_decoder: int | Sequence[int] = 1, mamba_from_stage: int = 1, d_state: int = 16,
               deep_supervision: bool = False, residual_decoder: bool = True):
    return _umamba(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
                   n_conv_per_stage_decoder, set(range(mamba_from_stage, len(features))), d_state, deep_supervision,
                   residual_decoder)
