"""medmamba: Mamba (selective state space) networks for medical imaging, on stock nnU-Net."""
from medmamba._version import __version__
from medmamba.registry import create_model, list_models, model_entry, register_model

__all__ = ["__version__", "create_model", "import_weights", "list_models", "model_entry", "register_model"]


def __getattr__(name: str):
    # import_weights pulls in torch: loaded on first use, so that `import medmamba` stays light.
    if name == "import_weights":
        from medmamba.weights import import_weights

        return import_weights
    raise AttributeError(f"module 'medmamba' has no attribute {name!r}")
