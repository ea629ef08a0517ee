"""hustvl/Vim: ``vim/models_mamba.py``'s Vim-Ti,
``vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2`` (the paper's ImageNet-1K
model: embed 192, depth 24, patch 16, bimamba v2, RMSNorm, middle class token) with the 1000-class head on the
paper's 224 x 224 input; ours by the ``paper`` preset. The file is imported on its own (with ``vim/rope.py``,
which it star-imports), not the folder, whose ``utils`` and ``datasets`` would shadow installed packages. A small
configuration (3 x 5 patches: an odd count, so the class token splits the sequence unevenly) gives the key
fixture."""
from __future__ import annotations

import sys
from pathlib import Path

from official import Case, Recipe, load_file, quietly

REPO = "hustvl/Vim"
FOLDER = "hustvl+Vim"
VIM_TI = "vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"
# What that function fixes, besides patch_size, embed_dim and depth.
VIM_TI_FLAGS = dict(rms_norm=True, residual_in_fp32=True, fused_add_norm=True, final_pool_type="mean",
                    if_abs_pos_embed=True, if_rope=False, if_rope_residual=False, bimamba_type="v2",
                    if_cls_token=True, if_divide_out=True, use_middle_cls_token=True)


def models_mamba(checkout: Path):
    """``vim/models_mamba.py``, loaded once per checkout (it registers its models with timm)."""
    path = checkout / "vim" / "models_mamba.py"
    module = sys.modules.get("vim_models_mamba")
    if module is None or Path(module.__file__) != path:
        load_file(checkout / "vim" / "rope.py", "rope")
        module = load_file(path, "vim_models_mamba")
    return module


def vision_mamba(checkout: Path, **kwargs):
    """A builder of the official Vim-Ti (no ``kwargs``) or of ``VisionMamba`` with Vim-Ti's flags and ``kwargs``."""
    def build():
        module = models_mamba(checkout)
        if not kwargs:
            return quietly(lambda: getattr(module, VIM_TI)(num_classes=1000))
        return quietly(lambda: module.VisionMamba(**VIM_TI_FLAGS, **kwargs))

    return build


def cases(checkout: Path) -> list[Case]:
    paper = {"create_model": {"preset": "paper", "spatial_dims": 2, "in_channels": 3, "num_classes": 1000}}
    small = {"create_model": {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "img_size": [24, 40],
                              "patch_size": 8, "embed_dim": 32, "depth": 2, "d_state": 4}}
    return [Case("paper configuration (Vim-Ti, ImageNet-1K, 224 x 224)", paper, (2, 3, 224, 224),
                 vision_mamba(checkout)),
            Case("small configuration, 3 x 5 patches", small, (2, 1, 24, 40),
                 vision_mamba(checkout, img_size=(24, 40), patch_size=8, stride=8, channels=1, num_classes=3,
                              embed_dim=32, depth=2, d_state=4), key_fixture=True)]


RECIPE = Recipe("vim_tiny", REPO, FOLDER, cases)
