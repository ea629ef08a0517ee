"""yuweihao/MambaOut: no official network to compare with. MambaOut (CVPR 2025) is an ImageNet classifier (the
paper also uses it as a detection and semantic-segmentation backbone) with no segmentation U-Net; ``mambaout_unet``
is our own baseline (VM-UNet's layout, proven equal to JCruan519/VM-UNet, with each VSS block replaced by
MambaOut's gated CNN block)."""
from __future__ import annotations

from official import Recipe

RECIPE = Recipe(
    "mambaout_unet", "yuweihao/MambaOut", "yuweihao+MambaOut", None,
    not_runnable="MambaOut has no segmentation U-Net; mambaout_unet is our baseline: VM-UNet's layout (vm_unet, "
                 "equal to JCruan519/VM-UNet) with MambaOut's gated CNN block in place of each VSS block, so no "
                 "official code exists to compare it with.",
)
