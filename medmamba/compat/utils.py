"""mamba_ssm's ``utils.generation`` and ``utils.hf`` names that the papers' code imports (Vim's models_mamba.py
imports GenerationMixin, load_config_hf and load_state_dict_hf at module level and calls none of them)."""
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"


@dataclass
class InferenceParams:
    """Decoding state shared by the layers: ``key_value_memory_dict`` maps layer_idx to that layer's states and
    ``seqlen_offset`` counts the tokens already processed (0: the next forward is the prompt)."""

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: dict = field(default_factory=dict)
    lengths_per_sample: torch.Tensor | None = None

    def reset(self, max_seqlen, max_batch_size):
        """Start a new sequence with the same cache.

        Args:
            max_seqlen: the new maximum sequence length.
            max_batch_size: the new maximum batch size.
        """
        self.max_seqlen, self.max_batch_size, self.seqlen_offset = max_seqlen, max_batch_size, 0
        if self.lengths_per_sample is not None:
            self.lengths_per_sample.zero_()


class GenerationMixin:
    """mamba_ssm's language-model mixin, present so that code importing it loads; text generation is not part of
    medmamba's shim."""

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None, **kwargs):
        """Abstract, as in mamba_ssm: the model class defines it.

        Args:
            batch_size, max_seqlen, dtype: the cache's size and dtype.
        """
        raise NotImplementedError(f"{type(self).__name__}.allocate_inference_cache is not defined")

    def generate(self, input_ids, max_length, **kwargs):
        """Not provided: medmamba's mamba_ssm shim covers the vision models' mixers, not language-model decoding.

        Args:
            input_ids, max_length: as mamba_ssm's (any call raises NotImplementedError).
        """
        raise NotImplementedError("GenerationMixin.generate: text generation is not provided by medmamba's "
                                  "mamba_ssm shim")


def _local_file(model_name, filename, caller):
    path = Path(model_name) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: {path} not found; medmamba's mamba_ssm shim reads a local model folder "
                                f"and downloads nothing (fetch the Hugging Face repository first, then pass its "
                                f"folder)")
    return path


def load_config_hf(model_name):
    """The model's config.json.

    Args:
        model_name: a local folder holding config.json (a Hub repository id is not downloaded).

    Returns:
        The parsed configuration (dict).
    """
    return json.loads(_local_file(model_name, CONFIG_NAME, "load_config_hf").read_text())


def load_state_dict_hf(model_name, device=None, dtype=None):
    """The model's pytorch_model.bin state dict, loaded with weights_only=True.

    Args:
        model_name: a local folder holding pytorch_model.bin (a Hub repository id is not downloaded).
        device: where to put the tensors (default: as saved, mapped to the CPU first when converting dtype).
        dtype: optional dtype to convert the tensors to.

    Returns:
        The state dict.
    """
    path = _local_file(model_name, WEIGHTS_NAME, "load_state_dict_hf")
    state_dict = torch.load(path, map_location="cpu" if dtype not in (None, torch.float32) else device,
                            weights_only=True)
    if dtype is not None:
        state_dict = {k: v.to(dtype=dtype) for k, v in state_dict.items()}
    return {k: v.to(device=device) for k, v in state_dict.items()}
