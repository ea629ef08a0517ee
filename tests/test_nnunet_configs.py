"""medmamba's trainers in nnU-Net's other configurations and commands, run as a user runs them (console commands in
subprocesses): 3d_lowres and 3d_cascade_fullres training and prediction, nnUNetv2_find_best_configuration,
nnUNetv2_export_model_to_zip / nnUNetv2_install_pretrained_model_from_zip, and what -num_gpus (DDP) relies on.

Shared setup: ``trained_mhsvm_results`` (conftest: MHSVMTrainer, 3d_fullres fold 0) and ``trained_mhsvm_cascade``
(below: a phantom that nnU-Net's own planner gives a 3d_lowres stage, trained in 3d_lowres then
3d_cascade_fullres with the test-only ``MHSVMTrainer_tiny_nomirror``).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import build_once, nnunet_subprocess_env, run_command
from test_nnunet_trainers import LABELS, assert_same_geometry_and_labels, check_trained_fold

pytestmark = pytest.mark.nnunet  # every test runs nnU-Net console commands

LOWRES_DATASET_ID = 902
LOWRES_DATASET_NAME = "Dataset902_PhantomLowres"
# Without mirroring, sliding-window validation and prediction run one pass per tile instead of eight.
CASCADE_TRAINER = "MHSVMTrainer_tiny_nomirror"


def results_folder(data: dict, trainer: str, configuration: str) -> Path:
    return Path(data["folders"]["nnUNet_results"], data["dataset_name"], f"{trainer}__nnUNetPlans__{configuration}")


def predict(data: dict, env: dict, inputs: Path, outputs: Path, configuration: str, fold: str, trainer: str, *extra):
    run_command(["nnUNetv2_predict", "-i", inputs, "-o", outputs, "-d", data["dataset_id"], "-c", configuration,
                 "-f", fold, "-tr", trainer, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar",
                 *extra], env)


def validation_cases(data: dict, fold: int = 0) -> list:
    splits = Path(data["folders"]["nnUNet_preprocessed"], data["dataset_name"], "splits_final.json")
    return sorted(json.loads(splits.read_text())[fold]["val"])


@pytest.fixture(scope="session")
def trained_mhsvm_cascade(tmp_path_factory) -> dict:
    """A 2-case phantom (24x40x40 voxels at 2.5x1x1 mm) planned by ``nnUNetv2_plan_and_preprocess`` with a 10 MB
    GPU memory target: the small patch it then picks makes nnU-Net's planner add ``3d_lowres`` (with
    ``next_stage``) and ``3d_cascade_fullres`` (``previous_stage``) itself. ``CASCADE_TRAINER`` is trained by
    ``nnUNetv2_train`` in 3d_lowres on fold ``all`` (its validation then predicts every case into
    ``predicted_next_stage``, which the cascade trains on), then in 3d_cascade_fullres on fold 0 (2-fold split).

    Returns the keys of ``nnunet_phantom_preprocessed`` (for this data set) plus ``lowres`` and ``cascade``
    (their results folders).
    """

    def build(folder: Path) -> dict:
        from batchgenerators.utilities.file_and_folder_operations import save_json
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        from medmamba.datasets.phantom import write_nnunet_phantom_3d

        folders = {var: str(folder / var) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        for path in folders.values():
            Path(path).mkdir(exist_ok=True)
        raw = write_nnunet_phantom_3d(folders["nnUNet_raw"], LOWRES_DATASET_ID, "PhantomLowres", n_cases=2,
                                      shape=(24, 40, 40), spacing=(2.5, 1.0, 1.0), seed=1, num_labels=2)
        env = nnunet_subprocess_env(folders)
        run_command(["nnUNetv2_plan_and_preprocess", "-d", LOWRES_DATASET_ID, "-c", "3d_fullres", "3d_lowres",
                     "-np", "1", "-npfp", "1", "-gpu_memory_target", "0.01"], {**env, "nnUNet_n_proc_DA": "1"})
        cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").iterdir())
        save_json(generate_crossval_split(cases, seed=12345, n_splits=2),
                  str(Path(folders["nnUNet_preprocessed"], LOWRES_DATASET_NAME, "splits_final.json")))
        data = {"dataset_id": LOWRES_DATASET_ID, "dataset_name": LOWRES_DATASET_NAME, "folders": folders, "env": env,
                "raw_images": str(raw / "imagesTr")}
        for configuration, fold in (("3d_lowres", "all"), ("3d_cascade_fullres", "0")):
            run_command(["nnUNetv2_train", LOWRES_DATASET_ID, configuration, fold, "-tr", CASCADE_TRAINER,
                         "-device", "cpu"], env)
        return {**data, "lowres": str(results_folder(data, CASCADE_TRAINER, "3d_lowres")),
                "cascade": str(results_folder(data, CASCADE_TRAINER, "3d_cascade_fullres"))}

    return build_once(tmp_path_factory, "nnunet_cascade", build)


# --------------------------------------------------------------------------------------------------------------
# 3d_lowres -> 3d_cascade_fullres


def test_planner_made_the_lowres_and_cascade_stages(trained_mhsvm_cascade):
    data = trained_mhsvm_cascade
    plans = json.loads(Path(data["folders"]["nnUNet_preprocessed"], data["dataset_name"], "nnUNetPlans.json")
                       .read_text())["configurations"]
    assert plans["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    assert plans["3d_cascade_fullres"] == {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    assert all(lo > full for lo, full in zip(plans["3d_lowres"]["spacing"], plans["3d_fullres"]["spacing"]))


def test_mhsvm_3d_lowres_trains_and_predicts_the_next_stage(trained_mhsvm_cascade):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    data = trained_mhsvm_cascade
    fold = Path(data["lowres"], "fold_all")
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["trainer_name"] == CASCADE_TRAINER and checkpoint["init_args"]["configuration"] == "3d_lowres"
    labels = Path(data["raw_images"]).parent / "labelsTr"
    cases = sorted(p.name[: -len(".nii.gz")] for p in labels.iterdir())
    validated = sorted((fold / "validation").glob("*.nii.gz"))
    assert [p.name for p in validated] == [f"{case}.nii.gz" for case in cases]  # fold "all" validates every case
    for predicted in validated:  # nnU-Net resamples the coarse prediction back to the scan's own grid
        assert_same_geometry_and_labels(predicted, labels / predicted.name)
    # what the cascade trains on: every case, resampled to the 3d_fullres grid, read by nnU-Net's own loader
    fullres = Path(data["folders"]["nnUNet_preprocessed"], data["dataset_name"], "nnUNetPlans_3d_fullres")
    dataset = infer_dataset_class(str(fullres))(str(fullres), cases, folder_with_segs_from_previous_stage=str(
        Path(data["lowres"], "predicted_next_stage", "3d_cascade_fullres")))
    for case in cases:
        _, seg, seg_prev, _ = dataset.load_case(case)
        assert seg_prev.shape == seg.shape[1:]  # seg has a channel axis
        assert set(np.unique(seg_prev[:]).tolist()) <= LABELS


def test_mhsvm_3d_cascade_fullres_trains_on_the_lowres_predictions(trained_mhsvm_cascade):
    data = trained_mhsvm_cascade
    fold = Path(data["cascade"], "fold_0")
    check_trained_fold(fold, data, CASCADE_TRAINER, epochs=1)
    debug = json.loads((fold / "debug.json").read_text())
    assert debug["is_cascaded"] == "True"
    assert debug["folder_with_segs_from_previous_stage"] == str(
        Path(data["lowres"], "predicted_next_stage", "3d_cascade_fullres"))
    assert debug["num_input_channels"] == str(1 + len(LABELS) - 1)  # the scan + one-hot previous-stage labels


def test_cascade_predicts_from_lowres_predictions(trained_mhsvm_cascade, tmp_path):
    data = trained_mhsvm_cascade
    inputs, lowres, cascade = tmp_path / "in", tmp_path / "lowres", tmp_path / "cascade"
    inputs.mkdir()
    image = sitk.ReadImage(str(Path(data["raw_images"]) / "case_000_0000.nii.gz"))
    image.SetOrigin((12.5, -40.0, 7.25))
    sitk.WriteImage(image, str(inputs / "scan_0000.nii.gz"))
    # -step_size 1: tiles that touch instead of half-overlapping, fewer passes of the CPU network
    predict(data, data["env"], inputs, lowres, "3d_lowres", "all", CASCADE_TRAINER, "-step_size", "1")
    assert_same_geometry_and_labels(lowres / "scan.nii.gz", inputs / "scan_0000.nii.gz")
    predict(data, data["env"], inputs, cascade, "3d_cascade_fullres", "0", CASCADE_TRAINER,
            "-step_size", "1", "-prev_stage_predictions", lowres)
    assert_same_geometry_and_labels(cascade / "scan.nii.gz", inputs / "scan_0000.nii.gz")
    arguments = json.loads((cascade / "predict_from_raw_data_args.json").read_text())
    assert arguments["folder_with_segs_from_prev_stage"] == str(lowres)


# --------------------------------------------------------------------------------------------------------------
# nnUNetv2_find_best_configuration, nnUNetv2_export_model_to_zip / nnUNetv2_install_pretrained_model_from_zip


def mean_foreground_dice(predicted: list, reference: list) -> float:
    """nnU-Net's ``foreground_mean`` Dice, recomputed with numpy: per label the mean over cases (a label absent from
    both prediction and reference does not count), then the mean over labels."""
    per_label = []
    for label in sorted(LABELS - {0}):
        scores = []
        for pred, ref in zip(predicted, reference):
            p, r = sitk.GetArrayFromImage(sitk.ReadImage(str(pred))) == label, \
                sitk.GetArrayFromImage(sitk.ReadImage(str(ref))) == label
            if p.any() or r.any():
                scores.append(2 * (p & r).sum() / (p.sum() + r.sum()))
        per_label.append(np.mean(scores) if scores else np.nan)
    return float(np.nanmean(per_label))


def test_find_best_configuration_names_our_trainer(trained_mhsvm_results, tmp_path):
    data = trained_mhsvm_results
    trainer = data["trainer"]
    results = tmp_path / "nnUNet_results"  # a copy: the command writes next to the model and the dataset
    shutil.copytree(data["results_folder"], results / data["dataset_name"] / Path(data["results_folder"]).name)
    run_command(["nnUNetv2_find_best_configuration", data["dataset_id"], "-c", "3d_fullres", "-tr", trainer,
                 "-f", "0", "-np", "1", "--disable_ensembling"], {**data["env"], "nnUNet_results": str(results)})

    information = json.loads((results / data["dataset_name"] / "inference_information.json").read_text())
    best = information["best_model_or_ensemble"]
    assert information["folds"] == [0]
    assert best["selected_model_or_models"] == [
        {"configuration": "3d_fullres", "trainer": trainer, "plans_identifier": "nnUNetPlans"}]
    validated = [Path(data["results_folder"], "fold_0", "validation", f"{case}.nii.gz")
                 for case in validation_cases(data)]
    labels = [Path(data["raw_images"]).parent / "labelsTr" / p.name for p in validated]
    assert best["result_on_crossval_pre_pp"] == pytest.approx(mean_foreground_dice(validated, labels), abs=1e-6)
    assert Path(best["postprocessing_file"]).is_file()
    instructions = (results / data["dataset_name"] / "inference_instructions.txt").read_text()
    assert (f"nnUNetv2_predict -d {data['dataset_name']} -i INPUT_FOLDER -o OUTPUT_FOLDER -f  0 -tr {trainer} "
            f"-c 3d_fullres -p nnUNetPlans") in instructions


def test_exported_model_installs_and_predicts_the_same_labels(trained_mhsvm_results, tmp_path):
    data = trained_mhsvm_results
    trainer, archive = data["trainer"], tmp_path / "model.zip"
    run_command(["nnUNetv2_export_model_to_zip", "-d", data["dataset_id"], "-o", archive, "-c", "3d_fullres",
                 "-tr", trainer, "-f", "0"], data["env"])

    # another user: fresh nnU-Net folders, nothing but the zip
    fresh = {var: str(tmp_path / "fresh" / var) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in fresh.values():
        Path(path).mkdir(parents=True)
    env = nnunet_subprocess_env(fresh)
    run_command(["nnUNetv2_install_pretrained_model_from_zip", archive], env)
    installed = Path(fresh["nnUNet_results"], data["dataset_name"], Path(data["results_folder"]).name)
    original = torch.load(Path(data["results_folder"], "fold_0", "checkpoint_final.pth"), map_location="cpu",
                          weights_only=True)
    loaded = torch.load(installed / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert loaded["trainer_name"] == trainer
    assert loaded["network_weights"].keys() == original["network_weights"].keys()
    assert all(torch.equal(v, original["network_weights"][k]) for k, v in loaded["network_weights"].items())

    # the installed model predicts what the trained one predicted for its validation case
    case = validation_cases(data)[0]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(Path(data["raw_images"]) / f"{case}_0000.nii.gz", inputs)
    predict(data, env, inputs, outputs, "3d_fullres", "0", trainer)
    assert_same_geometry_and_labels(outputs / f"{case}.nii.gz", inputs / f"{case}_0000.nii.gz")
    validated = Path(data["results_folder"], "fold_0", "validation", f"{case}.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / f"{case}.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(validated))))


# --------------------------------------------------------------------------------------------------------------
# -num_gpus: nnU-Net 2.8.1 asserts a CUDA device for num_gpus > 1 (with -device cpu it stops with "DDP training ...
# is only implemented for cuda devices"; on a machine without GPUs the default -device cuda fails creating the NCCL
# process group). So two CPU processes with the gloo backend replay what its DDP worker (run_ddp) does instead.

DDP_STEPS = ("finite", "nan_on_rank0", "finite", "nan_on_rank0", "nan_on_rank0")


def _ddp_rank(rank: int, world_size: int, port: int, dataset_id: int, outcome: str):
    """One rank: nnU-Net's own ``get_trainer_from_args`` and ``initialize`` (DDP batch split, SyncBatchNorm
    conversion, DDP wrapping, DDP-aware loss) with the process group up, then our ``train_step`` on each rank's own
    batch; what every rank saw is written to ``outcome/rank<r>.json``."""
    import datetime
    import os

    import torch.distributed as dist
    import torch.nn.functional as F
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as nnunet_trainer_module
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # The one change for CPU: nnU-Net passes device_ids=[rank] (a GPU); DDP takes none for a CPU module.
    nnunet_trainer_module.DDP = lambda module, device_ids=None: DistributedDataParallel(module)
    trainer = get_trainer_from_args(str(dataset_id), "3d_fullres", 0, "MHSVMTrainer", device=torch.device("cpu"))
    # ranks that fell out of step would wait for each other forever; the timeout turns that into an error
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=120))
    trainer.is_ddp, trainer.local_rank = True, rank  # what nnUNetTrainer.__init__ sets once a process group exists
    torch.manual_seed(rank)  # different initial weights on each rank: DDP must broadcast rank 0's
    trainer.initialize()
    trainer.max_nonfinite_steps = 2

    def gathered_params() -> list:
        flat = torch.cat([p.detach().flatten() for p in trainer.network.parameters()])
        everyone = [torch.empty_like(flat) for _ in range(world_size)]
        dist.all_gather(everyone, flat)
        return everyone

    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch, as nnU-Net's loaders give
    patch = list(trainer.configuration_manager.patch_size)
    record = {"batch_size": trainer.batch_size, "steps": []}
    params = gathered_params()
    record["same_initial_weights"] = all(torch.equal(params[0], p) for p in params)
    for kind in DDP_STEPS:
        data = torch.randn([trainer.batch_size, 1, *patch], generator=generator)
        seg = (data > 0.3).float() + (data > 1.2).float()
        targets = [F.interpolate(seg, size=[round(n * s) for n, s in zip(patch, scale)], mode="nearest")
                   for scale in trainer._get_deep_supervision_scales()]
        if kind == "nan_on_rank0" and rank == 0:
            data[0, 0, 0, 0, 0] = float("nan")
        before = params[rank]
        try:
            trainer.train_step({"data": data, "target": targets})
            stopped = None
        except SystemExit as stop:
            stopped = str(stop)
        params = gathered_params()
        record["steps"].append({"kind": kind, "stopped": stopped, "changed": not torch.equal(before, params[rank]),
                                "same_on_all_ranks": all(torch.equal(params[0], p) for p in params),
                                "nonfinite_in_a_row": trainer.nonfinite_steps_in_a_row})
        if stopped:
            break
    Path(outcome, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def test_two_process_ddp_keeps_ranks_in_step(nnunet_phantom_preprocessed, tmp_path, monkeypatch):
    import torch.multiprocessing as mp
    from nnunetv2.run.run_training import find_free_network_port

    data = nnunet_phantom_preprocessed
    for var, value in data["env"].items():  # the ranks start from this process's environment, as under mp.spawn
        if var.startswith(("nnUNet_", "OMP_", "MKL_")):
            monkeypatch.setenv(var, value)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))  # logs; the shared data stays read-only
    mp.spawn(_ddp_rank, args=(2, find_free_network_port(), data["dataset_id"], str(tmp_path)), nprocs=2, join=True)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for record in ranks:
        assert record["batch_size"] == 1  # nnU-Net split the planned batch of 2 over the two ranks
        assert record["same_initial_weights"]
        steps = record["steps"]
        assert [s["kind"] for s in steps] == list(DDP_STEPS)
        # a finite step updates every rank identically: gradients were averaged across ranks
        for step in (steps[0], steps[2]):
            assert step["changed"] and step["same_on_all_ranks"] and step["nonfinite_in_a_row"] == 0
        # a NaN on rank 0 alone reaches every rank's averaged gradient: all ranks skip, count and stop together
        assert not steps[1]["changed"] and steps[1]["nonfinite_in_a_row"] == 1 and steps[1]["stopped"] is None
        assert not steps[3]["changed"] and steps[3]["nonfinite_in_a_row"] == 1
        assert steps[4]["nonfinite_in_a_row"] == 2 and not steps[4]["changed"]
        assert steps[4]["stopped"] == ("MHSVMTrainer: training stopped in epoch 0: "
                                       "2 steps in a row had a non-finite loss or gradient")
