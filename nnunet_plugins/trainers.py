"""One nnU-Net trainer per paper; each changes only what its paper changed, the rest is nnU-Net's default.

``nnUNetv2_train DATASET 3d_fullres 0 -tr MHSVMTrainer`` (or ``2d``, ``3d_lowres``, ``3d_cascade_fullres``).
Epoch variants follow nnU-Net's naming (``nnUNetTrainer_5epochs``): ``MHSVMTrainer_1epoch``,
``MHSVMTrainer_5epochs`` ... ``MHSVMTrainer_500epochs`` for every trainer.

nnU-Net's defaults: SGD (Nesterov, momentum 0.99), lr 1e-2, weight decay 3e-5, poly schedule, 1000 epochs of
250 iterations, deep supervision, mixed precision.
"""
from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from medmamba.nnunet_plugins.base import MedMambaTrainer, variant
from medmamba.training.common import CosineLRScheduler


class VMUNetTrainer(MedMambaTrainer):
    """VM-UNet (Ruan & Xiang 2024): AdamW, lr 1e-3, weight decay 1e-2, cosine annealing to 1e-5, 300 epochs."""

    network_name = "vm_unet"
    recipe = {"initial_lr": 1e-3, "weight_decay": 1e-2, "num_epochs": 300}

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class MHSVMTrainer(VMUNetTrainer):
    """MHS-VM (Ji 2024) was trained with VM-UNet's recipe; only the network differs."""

    network_name = "mhs_vm_unet"


class UMambaBotTrainer(MedMambaTrainer):
    """U-Mamba_Bot (Ma et al. 2024) kept nnU-Net's training recipe."""

    network_name = "umamba_bot"


class UMambaEncTrainer(MedMambaTrainer):
    """U-Mamba_Enc (Ma et al. 2024) kept nnU-Net's training recipe."""

    network_name = "umamba_enc"


class SegMambaTrainer(MedMambaTrainer):
    """SegMamba (Xing et al. 2024) trained with SGD, lr 1e-2 and a poly schedule for 1000 epochs: nnU-Net's recipe."""

    network_name = "segmamba"


class LightMUNetTrainer(MedMambaTrainer):
    """LightM-UNet (Liao et al. 2024), as the official ``nnUNetTrainerLightMUNet``: Adam (eps 1e-5), lr 1e-4,
    weight decay 1e-5, poly schedule, no deep supervision. Its network is LightM-UNet's own configuration (the
    builder's defaults): the plan sets only the dimensionality, the input channels and the classes."""

    network_name = "lightm_unet"
    recipe = {"initial_lr": 1e-4, "weight_decay": 1e-5, "enable_deep_supervision": False}

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        from medmamba.registry import create_model

        return create_model(cls.network_name, spatial_dims=len(configuration_manager.patch_size),
                            in_channels=num_input_channels, out_channels=num_output_channels)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay,
                                     eps=1e-5)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class SwinUMambaTrainer(MedMambaTrainer):
    """Swin-UMamba (Liu et al. 2024) from scratch, as the official ``nnUNetTrainerSwinUMambaScratch``: AdamW (eps
    1e-5), lr 1e-4, weight decay 5e-2, cosine annealing to 1e-6 over nnU-Net's 1000 epochs. The network ignores
    the plan's stages, so deep supervision covers its four outputs (1, 1/2, 1/4, 1/8), as the official trainer."""

    network_name = "swin_umamba"
    recipe = {"initial_lr": 1e-4, "weight_decay": 5e-2}

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay,
                                      eps=1e-5)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs, min_lr=1e-6)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return [[0.5**i] * len(self.configuration_manager.patch_size) for i in range(4)]


class MambaOutTrainer(MedMambaTrainer):
    """MambaOut (Yu & Wang 2024) gated-CNN U-Net, the no-SSM control: MambaOut published no segmentation recipe
    for medical images, so it keeps nnU-Net's."""

    network_name = "mambaout_unet"


TRAINERS = (MHSVMTrainer, VMUNetTrainer, UMambaBotTrainer, UMambaEncTrainer, SegMambaTrainer, LightMUNetTrainer,
            SwinUMambaTrainer, MambaOutTrainer)
EPOCH_VARIANTS = {"1epoch": 1, "5epochs": 5, "10epochs": 10, "50epochs": 50, "100epochs": 100, "250epochs": 250,
                  "500epochs": 500}

__all__ = [trainer.__name__ for trainer in TRAINERS]
for _trainer in TRAINERS:
    for _suffix, _epochs in EPOCH_VARIANTS.items():
        _name = f"{_trainer.__name__}_{_suffix}"
        globals()[_name] = variant(_trainer, _name, __name__, num_epochs=_epochs)
        __all__.append(_name)
