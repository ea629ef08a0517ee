"""A test trainer to be killed (tests/test_nnunet_trainers.py, kill and resume): ``MHSVMTrainer_tiny2epochs``
that, when told by the environment, stops at a chosen point, touches ``MEDMAMBA_TEST_FLAG`` and waits there to be
killed:

- ``MEDMAMBA_TEST_HOLD_IN_EPOCH=N``: in the first training step of epoch N;
- ``MEDMAMBA_TEST_SLOW_SAVE=NAME``: halfway through writing checkpoint NAME (e.g. ``checkpoint_latest.pth``),
  half of its bytes on disk.

It skips nnU-Net's final validation (its checkpoints are what the test is about).
"""
import io
import os
import time
from pathlib import Path
from unittest import mock

import torch
from medmamba_test_trainers import MHSVMTrainer_tiny2epochs


def _wait_to_be_killed() -> None:
    Path(os.environ["MEDMAMBA_TEST_FLAG"]).touch()
    time.sleep(3600)


def _half_written_save(obj, path, *args, **kwargs) -> None:
    buffer = io.BytesIO()
    _TORCH_SAVE(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        _wait_to_be_killed()


_TORCH_SAVE = torch.save


class MHSVMTrainer_tiny2epochs_killable(MHSVMTrainer_tiny2epochs):
    def train_step(self, batch: dict) -> dict:
        if os.environ.get("MEDMAMBA_TEST_HOLD_IN_EPOCH") == str(self.current_epoch):
            _wait_to_be_killed()
        return super().train_step(batch)

    def save_checkpoint(self, filename: str) -> None:
        if os.environ.get("MEDMAMBA_TEST_SLOW_SAVE") == os.path.basename(filename):
            with mock.patch("torch.save", _half_written_save):
                super().save_checkpoint(filename)
        else:
            super().save_checkpoint(filename)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Skipped: the test is about checkpoints, and the final validation is most of a tiny run's time."""
