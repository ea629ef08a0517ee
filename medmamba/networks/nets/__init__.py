"""Registered networks (MONAI-style networks/nets); importing this package registers every model."""
from medmamba.networks.nets import (  # noqa: F401  (segmentation)
    lightm_unet,
    mambaout_unet,
    mhs_vm_unet,
    segmamba,
    swin_umamba,
    umamba,
    vm_unet,
)
from medmamba.networks.nets import mambair, medmamba_cls, vim  # noqa: F401  (classification, restoration)
