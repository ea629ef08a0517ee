"""Registered networks (MONAI-style networks/nets); importing this package registers every model."""
from medmamba.networks.nets import mhs_vm_unet, vm_unet  # noqa: F401  (segmentation)
from medmamba.networks.nets import mambair, medmamba_cls, vim  # noqa: F401  (classification, restoration)
