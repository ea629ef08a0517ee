"""MONAI dictionary-transform pipelines: classification, nnU-Net-matched segmentation pre/post-processing and
restoration degradations. Our own transforms exist only where MONAI has none (``degradations``)."""
from medmamba.transforms.degradations import (
    DEGRADATIONS,
    KSpaceUndersampled,
    LowDoseCTNoised,
    degrade,
    restoration_degradation,
)

__all__ = ["DEGRADATIONS", "KSpaceUndersampled", "LowDoseCTNoised", "degrade", "restoration_degradation"]
