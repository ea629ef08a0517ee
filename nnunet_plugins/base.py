"""What every medmamba nnU-Net trainer shares; each paper's trainer (``trainers``) only names its network and recipe.

- The network comes from the plans through ``medmamba.networks.plans.build_from_plans`` (2D/3D, anisotropic
  strides and deep supervision as nnU-Net planned them).
- ``recipe``: what the paper changed, as attributes set after nnU-Net's defaults (``initial_lr``,
  ``weight_decay``, ``num_epochs``, ...). Variants, ours, the tests' and the demo's, differ only in their recipe and
  are made by :func:`variant`, for any nnU-Net trainer.
- Mixed precision stays on. A step whose loss or gradient norm is not finite is skipped and logged;
  ``max_nonfinite_steps`` in a row stop the run with one line naming the epoch.
- torch.compile stays off; checkpoints hold only plain Python values and tensors, so they load with
  ``torch.load(weights_only=True)``, which is how these trainers load them. They are written to a temporary name
  and renamed, so a run killed at any point leaves complete checkpoints for ``--c``.
- All state lives on the trainer instance: nothing global for DDP to duplicate.
"""
from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists (recursively)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


CUDA = torch.device("cuda")  # nnUNetTrainer's default device


class RecipeTrainer(nnUNetTrainer):
    """A trainer whose ``recipe`` (attribute name -> value) is set after nnU-Net's own ``__init__`` defaults."""

    recipe: dict[str, Any] = {}

    # nnU-Net records __init__'s named arguments (my_init_kwargs), so the signature is spelled out.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for name, value in self.recipe.items():
            setattr(self, name, value)


class MedMambaTrainer(RecipeTrainer):
    """nnU-Net trainer of a medmamba network: a subclass names ``network_name`` (and its ``recipe``); the network is
    built from the plans, torch.compile stays off, steps with a non-finite loss or gradient norm are skipped
    (``max_nonfinite_steps`` in a row end the run), and checkpoints are written atomically and loaded with
    ``weights_only=True``."""

    network_name: str  # a medmamba segmentation network registered with the plans builder
    max_nonfinite_steps = 50

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.nonfinite_steps_in_a_row = 0

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        from medmamba.networks.plans import build_from_configuration

        return build_from_configuration(cls.network_name, configuration_manager, num_input_channels,
                                        num_output_channels, enable_deep_supervision)

    def _do_i_compile(self) -> bool:
        return False

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        # Autocast on CUDA only, as in nnU-Net (CPU autocast is slow).
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.loss(self.network(data), target)

        scaler = self.grad_scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            self.nonfinite_steps_in_a_row = 0
            if scaler is not None:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
        else:
            if scaler is not None:
                scaler.update()  # lowers the loss scale after an overflow
            self._skip_nonfinite_step(loss, grad_norm)
        return {"loss": loss.detach().cpu().numpy()}

    def _skip_nonfinite_step(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.nonfinite_steps_in_a_row += 1
        self.print_to_log_file(f"epoch {self.current_epoch}: non-finite loss ({loss.item():.4g}) or gradient norm "
                               f"({grad_norm.item():.4g}), step skipped ({self.nonfinite_steps_in_a_row} in a row)")
        if self.nonfinite_steps_in_a_row >= self.max_nonfinite_steps:
            message = (f"{type(self).__name__}: training stopped in epoch {self.current_epoch}: "
                       f"{self.nonfinite_steps_in_a_row} steps in a row had a non-finite loss or gradient")
            self.print_to_log_file(message, also_print_to_console=False)
            raise SystemExit(message)

    def save_checkpoint(self, filename: str) -> None:
        # nnU-Net logs numpy scalars; plain values keep the checkpoint loadable with weights_only=True.
        self.logger.load_checkpoint(plain(self.logger.get_checkpoint()))
        self._best_ema = plain(self._best_ema)
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # writes nothing (and logs why)
            return
        # nnU-Net writes in place: a kill during torch.save would leave a corrupt checkpoint for --c to load.
        # Written to a temporary name in the same folder and renamed, the checkpoint is the old one or the new one.
        folder, name = os.path.split(filename)
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*")):
            os.remove(stale)  # left by a run killed while writing
        tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(tmp)
            os.replace(tmp, filename)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        # nnU-Net's own version loads with weights_only=False (and fails when given a dict, as of 2.8.1).
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location=self.device, weights_only=True)
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)  # a torch.compile'd module
        own_keys = network.state_dict().keys()
        network.load_state_dict({k[len("module."):] if k not in own_keys and k.startswith("module.") else k: v
                                 for k, v in checkpoint["network_weights"].items()})
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])

def variant(base: type[nnUNetTrainer], name: str, module: str, **recipe: Any) -> type[RecipeTrainer]:
    """A subclass of the nnU-Net trainer ``base`` (ours or nnU-Net's own) named ``name``, whose recipe is ``base``'s
    updated with ``recipe``, as nnU-Net's ``nnUNetTrainer_Xepochs`` variants set ``num_epochs``.

    ``module`` is the ``__name__`` of the module that binds the class at top level: nnU-Net finds trainers
    by ``getattr(module, name)`` and checkpoints name them.
    """
    settings = ", ".join(f"{k}={v}" for k, v in recipe.items())
    bases = (base,) if issubclass(base, RecipeTrainer) else (RecipeTrainer, base)
    return type(name, bases, {"recipe": {**getattr(base, "recipe", {}), **recipe}, "__module__": module,
                              "__qualname__": name, "__doc__": f"{base.__name__} with {settings}."})
