"""MONAI dictionary-transform pipelines: classification, nnU-Net-matched segmentation pre/post-processing and
restoration degradations. Our own transforms exist only where MONAI has none (``degradations``,
``segmentation.NnUNetResampled``/``ChannelWised``)."""
from medmamba.transforms.classification import classification_eval_transforms, classification_train_transforms
from medmamba.transforms.degradations import (
    DEGRADATIONS,
    KSpaceUndersampled,
    LowDoseCTNoised,
    degrade,
    restoration_degradation,
)
from medmamba.transforms.restoration import restoration_eval_transforms, restoration_train_transforms
from medmamba.transforms.segmentation import segmentation_postprocessing, segmentation_preprocessing

__all__ = [
    "DEGRADATIONS",
    "KSpaceUndersampled",
    "LowDoseCTNoised",
    "classification_eval_transforms",
    "classification_train_transforms",
    "degrade",
    "restoration_degradation",
    "restoration_eval_transforms",
    "restoration_train_transforms",
    "segmentation_postprocessing",
    "segmentation_preprocessing",
]
