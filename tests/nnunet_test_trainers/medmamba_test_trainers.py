"""Test-only trainer variants, found by nnU-Net through ``nnUNet_extTrainer`` (the tests list this folder there,
as a user would list theirs, and medmamba's startup hook appends its own).

- ``<Trainer>_tiny``: one epoch of two training and one validation iteration, for every medmamba trainer.
- ``MHSVMTrainer_tiny2epochs``: two such epochs, a checkpoint after each; exits with code 3 after the epoch named
  by ``MEDMAMBA_TEST_STOP_AFTER_EPOCH`` (an interrupted run to resume with ``--c``).
- ``MHSVMTrainer_tiny_nan``: its loss is always NaN; two skipped steps in a row stop it.
- ``MHSVMTrainer_tiny_nomirror``: ``MHSVMTrainer_tiny`` without mirroring, like nnU-Net's
  ``nnUNetTrainerNoMirroring``: validation and prediction run one pass per tile instead of eight.
"""
import os

from medmamba.nnunet_plugins.base import variant
from medmamba.nnunet_plugins.trainers import TRAINERS, MHSVMTrainer

TINY = {"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1}

for _trainer in TRAINERS:
    globals()[f"{_trainer.__name__}_tiny"] = variant(_trainer, f"{_trainer.__name__}_tiny", __name__, **TINY)


class MHSVMTrainer_tiny2epochs(MHSVMTrainer):
    recipe = {**MHSVMTrainer.recipe, **TINY, "num_epochs": 2, "save_every": 1}

    def on_epoch_end(self):
        finished_epoch = self.current_epoch
        super().on_epoch_end()
        if os.environ.get("MEDMAMBA_TEST_STOP_AFTER_EPOCH") == str(finished_epoch):
            raise SystemExit(3)


class MHSVMTrainer_tiny_nan(MHSVMTrainer):
    recipe = {**MHSVMTrainer.recipe, **TINY, "max_nonfinite_steps": 2}

    def _build_loss(self):
        loss = super()._build_loss()
        return lambda output, target: loss(output, target) * float("nan")


class MHSVMTrainer_tiny_nomirror(MHSVMTrainer):
    recipe = {**MHSVMTrainer.recipe, **TINY}

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None
