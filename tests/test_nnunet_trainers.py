"""medmamba's nnU-Net trainers, driven through nnU-Net's own console commands in subprocesses, as a user would.

Shared setup (conftest): ``nnunet_phantom_preprocessed`` (a 5-case 3D phantom, planned and preprocessed for 2d and
3d_fullres) and ``trained_mhsvm_results`` (MHSVMTrainer, 3d_fullres fold 0, interrupted after one epoch and resumed
with ``--c``). The ``*_tiny`` trainers (tests/nnunet_test_trainers) run one or two epochs of two iterations.
"""
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import run_command

from medmamba.nnunet_plugins import trainers
from medmamba.nnunet_plugins.base import plain
from medmamba.nnunet_plugins.discovery import TRAINER_FOLDER
from medmamba.training.common import CosineLRScheduler

LABELS = {0, 1, 2}
# What each paper trained with (optimizer, lr, weight decay, epochs); nnU-Net's default: SGD, 1e-2, 3e-5, 1000.
PAPER_RECIPES = {
    "MHSVMTrainer": ("AdamW", 1e-3, 1e-2, 300),
    "VMUNetTrainer": ("AdamW", 1e-3, 1e-2, 300),
    "UMambaBotTrainer": ("SGD", 1e-2, 3e-5, 1000),
    "UMambaEncTrainer": ("SGD", 1e-2, 3e-5, 1000),
    "SegMambaTrainer": ("SGD", 1e-2, 3e-5, 1000),
    "LightMUNetTrainer": ("Adam", 1e-4, 1e-5, 1000),
    "SwinUMambaTrainer": ("AdamW", 1e-4, 5e-2, 1000),
    "MambaOutTrainer": ("SGD", 1e-2, 3e-5, 1000),
}


def assert_same_geometry_and_labels(predicted: Path, reference: Path):
    pred, ref = sitk.ReadImage(str(predicted)), sitk.ReadImage(str(reference))
    assert pred.GetSize() == ref.GetSize()
    np.testing.assert_allclose(pred.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(pred.GetOrigin(), ref.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-6)
    values = sitk.GetArrayViewFromImage(pred)
    assert np.issubdtype(values.dtype, np.integer)
    assert set(np.unique(values).tolist()) <= LABELS


def train(data: dict, trainer: str, configuration: str, *extra, expect_rc=0, **env):
    command = ["nnUNetv2_train", data["dataset_id"], configuration, "0", "-tr", trainer, "-device", "cpu", *extra]
    proc = run_command(command, {**data["env"], **env}, expect_rc=expect_rc)
    fold = Path(data["folders"]["nnUNet_results"], data["dataset_name"],
                f"{trainer}__nnUNetPlans__{configuration}", "fold_0")
    return proc, fold


def check_trained_fold(fold: Path, data: dict, trainer: str, epochs: int):
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["trainer_name"] == trainer and checkpoint["current_epoch"] == epochs
    assert len(checkpoint["logging"]["train_losses"]) == epochs
    labels = Path(data["raw_images"]).parent / "labelsTr"
    splits = Path(data["folders"]["nnUNet_preprocessed"], data["dataset_name"], "splits_final.json")
    validation_cases = json.loads(splits.read_text())[0]["val"]
    validated = sorted((fold / "validation").glob("*.nii.gz"))
    assert [p.name for p in validated] == [f"{case}.nii.gz" for case in sorted(validation_cases)]
    for predicted in validated:
        assert_same_geometry_and_labels(predicted, labels / predicted.name)


# --------------------------------------------------------------------------------------------------------------
# in-process


def test_every_trainer_has_nnunets_epoch_variants_as_module_level_classes():
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    assert list(trainers.EPOCH_VARIANTS) == ["1epoch", "5epochs", "10epochs", "50epochs", "100epochs",
                                             "250epochs", "500epochs"]
    assert sorted(t.__name__ for t in trainers.TRAINERS) == sorted(PAPER_RECIPES)
    for trainer in trainers.TRAINERS:
        for suffix, epochs in trainers.EPOCH_VARIANTS.items():
            name = f"{trainer.__name__}_{suffix}"
            cls = getattr(trainers, name)
            assert (cls.__name__, cls.__module__) == (name, trainers.__name__) and issubclass(cls, trainer)
            assert cls.recipe == {**trainer.recipe, "num_epochs": epochs}
            assert name in trainers.__all__
    # nnU-Net's own finder, as nnUNetv2_train calls it on an nnUNet_extTrainer folder
    found = recursive_find_python_class(TRAINER_FOLDER, "LightMUNetTrainer_250epochs", None,
                                        base_folder=TRAINER_FOLDER, cleanup_imports_from_base_folder=True)
    assert found is trainers.LightMUNetTrainer_250epochs


def test_build_network_architecture_uses_nnunets_current_signature():
    import inspect

    params = list(inspect.signature(trainers.MHSVMTrainer.build_network_architecture).parameters)
    assert params == ["plans_manager", "configuration_manager", "num_input_channels", "num_output_channels",
                      "enable_deep_supervision"]


def test_cosine_schedule_matches_torch_cosine_annealing():
    epochs, lr, min_lr = 7, 1e-3, 1e-5
    ours = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr)
    ref = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = CosineLRScheduler(ours, lr, epochs, min_lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=epochs, eta_min=min_lr)
    for epoch in range(epochs + 1):
        scheduler.step(epoch)  # nnU-Net passes the epoch; resuming jumps straight to it
        assert math.isclose(ours.param_groups[0]["lr"], ref.param_groups[0]["lr"], rel_tol=1e-9), epoch
        ref.step()
        reference.step()


def test_plain_checkpoint_values_load_with_weights_only(tmp_path):
    logged = {"train_losses": [np.float64(0.5), np.float32(0.25)], "dice": [[np.float32(0.1), np.float32(0.2)]],
              "ema": np.float64(0.3), "shape": (np.int64(2), 3), "weights": torch.ones(2)}
    torch.save(logged, tmp_path / "numpy.pth")
    with pytest.raises(pickle.UnpicklingError):  # what nnU-Net's own checkpoints run into
        torch.load(tmp_path / "numpy.pth", weights_only=True)
    torch.save(plain(logged), tmp_path / "plain.pth")
    loaded = torch.load(tmp_path / "plain.pth", weights_only=True)
    assert loaded["train_losses"] == [0.5, 0.25] and loaded["ema"] == pytest.approx(0.3)
    assert loaded["dice"] == [[pytest.approx(0.1), pytest.approx(0.2)]] and loaded["shape"] == (2, 3)
    assert torch.equal(loaded["weights"], torch.ones(2))


# --------------------------------------------------------------------------------------------------------------
# end to end: nnUNetv2_train / nnUNetv2_predict in subprocesses


def test_mhsvm_3d_fullres_resumes_with_c(trained_mhsvm_results):
    data = trained_mhsvm_results
    interrupted = data["interrupted"]
    assert "checkpoint_latest.pth" in interrupted["files"] and "checkpoint_final.pth" not in interrupted["files"]
    assert interrupted["latest_epoch"] == 1
    fold = Path(data["results_folder"], "fold_0")
    check_trained_fold(fold, data, data["trainer"], epochs=2)
    assert not (fold / "checkpoint_latest.pth").exists()  # nnU-Net removes it once the final one is written
    debug = json.loads((fold / "debug.json").read_text())
    assert debug["num_epochs"] == "2" and debug["num_iterations_per_epoch"] == "2"


def test_mhsvm_predict_keeps_geometry(trained_mhsvm_results, tmp_path):
    data = trained_mhsvm_results
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = sitk.ReadImage(str(Path(data["raw_images"]) / "case_001_0000.nii.gz"))
    sitk.WriteImage(image, str(inputs / "plain_0000.nii.gz"))
    # the same scan somewhere else in the scanner, rotated 90 degrees about z
    image.SetOrigin((12.5, -40.0, 7.25))
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(inputs / "moved_0000.nii.gz"))
    run_command(["nnUNetv2_predict", "-i", inputs, "-o", outputs, "-d", data["dataset_id"], "-c",
                 data["configuration"], "-f", "0", "-tr", data["trainer"], "-device", "cpu", "-npp", "1", "-nps", "1",
                 "--disable_progress_bar"], data["env"])
    for case in ("plain", "moved"):
        assert_same_geometry_and_labels(outputs / f"{case}.nii.gz", inputs / f"{case}_0000.nii.gz")


def test_mhsvm_2d(nnunet_phantom_preprocessed):
    _, fold = train(nnunet_phantom_preprocessed, "MHSVMTrainer_tiny", "2d")
    check_trained_fold(fold, nnunet_phantom_preprocessed, "MHSVMTrainer_tiny", epochs=1)


# each trainer runs on 3d_fullres, or on its paper's configuration where the network is the paper's in 2D only
# (Swin-UMamba's: the plan does not shape it, and its 3D extension at the paper's widths is heavy for a CPU test)
CONFIGURATION = {"SwinUMambaTrainer": "2d"}


@pytest.mark.parametrize("trainer", [t.__name__ for t in trainers.TRAINERS if t is not trainers.MHSVMTrainer])
def test_trainer_trains_and_validates(nnunet_phantom_preprocessed, trainer):
    name = f"{trainer}_tiny"
    _, fold = train(nnunet_phantom_preprocessed, name, CONFIGURATION.get(trainer, "3d_fullres"))
    check_trained_fold(fold, nnunet_phantom_preprocessed, name, epochs=1)
    debug = json.loads((fold / "debug.json").read_text())
    optimizer, lr, weight_decay, _ = PAPER_RECIPES[trainer]
    assert debug["optimizer"].startswith(optimizer + " ")
    assert float(debug["initial_lr"]) == lr and float(debug["weight_decay"]) == weight_decay


def test_paper_epochs_are_the_trainers_default():
    for trainer in trainers.TRAINERS:
        assert trainer.recipe.get("num_epochs", 1000) == PAPER_RECIPES[trainer.__name__][3]


def test_nonfinite_steps_are_skipped_then_stop_the_run(nnunet_phantom_preprocessed):
    proc, fold = train(nnunet_phantom_preprocessed, "MHSVMTrainer_tiny_nan", "3d_fullres", expect_rc=1)
    assert proc.stderr.strip().splitlines()[-1] == (
        "MHSVMTrainer_tiny_nan: training stopped in epoch 0: 2 steps in a row had a non-finite loss or gradient")
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "step skipped (1 in a row)" in log and "step skipped (2 in a row)" in log
    assert not (fold / "checkpoint_final.pth").exists()


# --------------------------------------------------------------------------------------------------------------
# killed with SIGKILL, then resumed with --c


def _train_until_killed(command, env, flag: Path, timeout: float = 600) -> None:
    """Start ``command``; once it touches ``flag`` (it waits there), kill its process group with SIGKILL."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([str(c) for c in command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            encoding="utf-8", errors="replace", start_new_session=True)
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before the kill point:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("training did not reach the kill point in time")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    flag.unlink()
    assert proc.returncode == -signal.SIGKILL


def _checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def assert_checkpoints_complete(fold: Path) -> None:
    """Every checkpoint --c might load is complete."""
    for path in sorted(fold.glob("checkpoint_*.pth")):
        try:
            _checkpoint(path)
        except Exception as err:  # noqa: BLE001  (torch raises several types for a truncated file)
            pytest.fail(f"the kill left a corrupt {path.name}: {type(err).__name__}: {err}")


@pytest.mark.nnunet
def test_killed_training_resumes_with_c(nnunet_phantom_preprocessed, tmp_path):
    """SIGKILL while writing the first checkpoint, during an epoch, and while writing the final checkpoint: each
    time ``--c`` resumes from the last complete checkpoint (ours are written to a temporary name and renamed; nnU-Net
    writes in place, and a half-written checkpoint_latest.pth / checkpoint_final.pth is what --c would load), and the
    epochs and loss history continue from it. One run per kill point, each resuming the previous one."""
    data = nnunet_phantom_preprocessed
    trainer = "MHSVMTrainer_tiny2epochs_killable"  # 2 epochs, a checkpoint after each (tests/nnunet_test_trainers)
    env = {**data["env"], "nnUNet_results": str(tmp_path / "results"), "MEDMAMBA_TEST_FLAG": str(tmp_path / "flag")}
    command = ["nnUNetv2_train", data["dataset_id"], "3d_fullres", "0", "-tr", trainer, "-device", "cpu"]
    fold = tmp_path / "results" / data["dataset_name"] / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    latest, final = fold / "checkpoint_latest.pth", fold / "checkpoint_final.pth"

    # 1. halfway through writing the first checkpoint_latest (end of epoch 0): no checkpoint to resume from
    _train_until_killed(command, {**env, "MEDMAMBA_TEST_SLOW_SAVE": "checkpoint_latest.pth"}, tmp_path / "flag")
    assert_checkpoints_complete(fold)
    assert list(fold.glob(".checkpoint_latest.pth.tmp-*")) and not latest.exists() and not final.exists()

    # 2. --c starts over (nothing complete to resume), killed during epoch 1: checkpoint_latest holds epoch 0
    _train_until_killed(command + ["--c"], {**env, "MEDMAMBA_TEST_HOLD_IN_EPOCH": "1"}, tmp_path / "flag")
    assert_checkpoints_complete(fold)
    after_epoch_0 = _checkpoint(latest)
    assert after_epoch_0["current_epoch"] == 1 and len(after_epoch_0["logging"]["train_losses"]) == 1
    assert not list(fold.glob(".*.tmp-*"))  # the half-written file of kill 1 was removed by the next write

    # 3. --c resumes at epoch 1, killed halfway through writing checkpoint_final: checkpoint_latest still complete
    _train_until_killed(command + ["--c"], {**env, "MEDMAMBA_TEST_SLOW_SAVE": "checkpoint_final.pth"},
                        tmp_path / "flag")
    assert_checkpoints_complete(fold)
    assert list(fold.glob(".checkpoint_final.pth.tmp-*")) and not final.exists()
    still = _checkpoint(latest)
    assert still["current_epoch"] == 1 and still["logging"] == after_epoch_0["logging"]

    # 4. --c resumes at epoch 1 again and completes: epoch 0's history is the one checkpointed in run 2
    run_command(command + ["--c"], env)
    done = _checkpoint(final)
    assert done["current_epoch"] == 2 and len(done["logging"]["train_losses"]) == 2
    for key in ("train_losses", "epoch_start_timestamps", "val_losses"):
        assert done["logging"][key][:1] == after_epoch_0["logging"][key], key
    assert not latest.exists() and not list(fold.glob(".*"))  # no temporary file left
