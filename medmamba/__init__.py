"""medmamba: Mamba (selective state space) networks for medical imaging, on stock nnU-Net."""
from medmamba._version import __version__
from medmamba.registry import create_model, list_models, model_entry, register_model

__all__ = ["__version__", "create_model", "list_models", "model_entry", "register_model"]
