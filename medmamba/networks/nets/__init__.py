"""Registered networks (MONAI-style networks/nets); importing this package registers every model."""
from medmamba.networks.nets import (  # noqa: F401  (segmentation)  # noqa: F401  (classification, restoration)
    lightm_unet,
    mambair,
    mambaout_unet,
    medmamba_cls,
    mhs_vm_unet,
    segmamba,
    swin_umamba,
    umamba,
    vim,
    vm_unet,
)
