"""Evaluation harness: segmentation, classification and restoration metrics, and efficiency profiles.

Each task has a Python function returning the ``metrics.json`` content and a writer for the output folder
(metrics.json, metrics.csv, report.md, PNG figures; written to a temporary folder and renamed):

- :mod:`~medmamba.evaluation.segmentation`: ``evaluate_segmentation`` / ``write_segmentation_outputs``
- :mod:`~medmamba.evaluation.classification`: ``evaluate_classification`` / ``write_classification_outputs``
- :mod:`~medmamba.evaluation.restoration`: ``evaluate_restoration`` / ``write_restoration_outputs``
- :mod:`~medmamba.evaluation.efficiency`: ``profile_model`` (one network, one input shape) and
  ``run_sweep`` / ``write_sweep_outputs`` (networks against input size, with reference networks)

The same is on the command line as ``medmamba evaluate seg|cls|restore|efficiency``.
"""
from medmamba.evaluation.classification import evaluate_classification, write_classification_outputs
from medmamba.evaluation.efficiency import profile_model, run_sweep, write_sweep_outputs
from medmamba.evaluation.restoration import evaluate_restoration, write_restoration_outputs
from medmamba.evaluation.segmentation import evaluate_segmentation, write_segmentation_outputs

__all__ = [
    "evaluate_segmentation",
    "write_segmentation_outputs",
    "evaluate_classification",
    "write_classification_outputs",
    "evaluate_restoration",
    "write_restoration_outputs",
    "profile_model",
    "run_sweep",
    "write_sweep_outputs",
]
