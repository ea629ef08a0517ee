"""Fixtures and hooks; the helpers they use, and tests use, are in helpers.py."""
import os
from pathlib import Path

import pytest
from helpers import (
    PHANTOM_DATASET_ID,
    PHANTOM_DATASET_NAME,
    REPORTS_VAR,
    VENV_BIN,
    build_once,
    nnunet_subprocess_env,
    plan_phantom_in_process,
    run_command,
)


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """nnU-Net's three folders under tmp_path, set in this process and returned as a subprocess env."""
    env = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = tmp_path / var
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
        env[var] = str(folder)
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    return os.environ.copy()


@pytest.fixture(scope="session")
def nnunet_phantom_preprocessed(tmp_path_factory) -> dict:
    """A 5-case 3D phantom (20x32x32 voxels at 2.5x1x1 mm, labels 0..2) in nnU-Net raw format, planned and
    preprocessed for ``2d`` and ``3d_fullres`` by ``nnUNetv2_plan_and_preprocess``; fold 0 validates on one case.

    Returns a dict: ``dataset_id``, ``dataset_name``, ``folders`` (nnUNet_raw/preprocessed/results),
    ``env`` (for subprocesses, see ``nnunet_subprocess_env``), ``raw_images`` (its imagesTr folder).
    Do not write into it except under ``nnUNet_results/<dataset>/<your trainer>...``.
    """

    def build(folder: Path) -> dict:
        from medmamba.datasets.phantom import write_nnunet_phantom_3d

        folders = {var: str(folder / var) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        for path in folders.values():
            Path(path).mkdir(exist_ok=True)
        raw = write_nnunet_phantom_3d(folders["nnUNet_raw"], PHANTOM_DATASET_ID, "Phantom", n_cases=5,
                                      shape=(20, 32, 32), spacing=(2.5, 1.0, 1.0), seed=0, num_labels=2)
        env = nnunet_subprocess_env(folders)
        run_command(["nnUNetv2_plan_and_preprocess", "-d", PHANTOM_DATASET_ID, "-c", "2d", "3d_fullres",
                     "-np", "1", "-npfp", "1", "--verify_dataset_integrity"], {**env, "nnUNet_n_proc_DA": "1"})
        # nnU-Net's own seeded 5-fold split, written now so that parallel trainings never race to write it.
        from batchgenerators.utilities.file_and_folder_operations import save_json
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").iterdir())
        save_json(generate_crossval_split(cases, seed=12345, n_splits=5),
                  str(Path(folders["nnUNet_preprocessed"], PHANTOM_DATASET_NAME, "splits_final.json")))
        return {"dataset_id": PHANTOM_DATASET_ID, "dataset_name": PHANTOM_DATASET_NAME, "folders": folders,
                "env": env, "raw_images": str(raw / "imagesTr")}

    return build_once(tmp_path_factory, "nnunet_phantom", build)


@pytest.fixture(scope="session")
def trained_mhsvm_results(tmp_path_factory, nnunet_phantom_preprocessed) -> dict:
    """``MHSVMTrainer`` trained by ``nnUNetv2_train`` on ``nnunet_phantom_preprocessed``, 3d_fullres fold 0:
    two tiny epochs (test variant ``MHSVMTrainer_tiny2epochs``), interrupted after the first and resumed with
    ``--c``. Its results folder is complete (checkpoint_final.pth, plans.json, dataset.json, ...), so it serves
    ``nnUNetv2_predict -d ... -tr ... -c 3d_fullres -f 0`` and exports.

    Returns the ``nnunet_phantom_preprocessed`` dict plus ``trainer``, ``configuration``, ``plans``, ``fold``,
    ``results_folder`` (``nnUNet_results/<dataset>/<trainer>__nnUNetPlans__3d_fullres``) and ``interrupted``
    (what the interrupted run left: ``files`` in fold_0 and the ``checkpoint_latest.pth`` epoch).
    """

    def build(folder: Path) -> dict:
        import torch

        data = nnunet_phantom_preprocessed
        trainer, configuration = "MHSVMTrainer_tiny2epochs", "3d_fullres"
        command = ["nnUNetv2_train", data["dataset_id"], configuration, "0", "-tr", trainer, "-device", "cpu"]
        run_command(command, {**data["env"], "MEDMAMBA_TEST_STOP_AFTER_EPOCH": "0"}, expect_rc=3)
        results = Path(data["folders"]["nnUNet_results"], data["dataset_name"],
                       f"{trainer}__nnUNetPlans__{configuration}")
        latest = torch.load(results / "fold_0" / "checkpoint_latest.pth", map_location="cpu", weights_only=True)
        interrupted = {"files": sorted(p.name for p in (results / "fold_0").iterdir()),
                       "latest_epoch": latest["current_epoch"]}
        run_command(command + ["--c"], data["env"])
        return {**data, "trainer": trainer, "configuration": configuration, "plans": "nnUNetPlans", "fold": 0,
                "results_folder": str(results), "interrupted": interrupted}

    return build_once(tmp_path_factory, "trained_mhsvm", build)


@pytest.fixture(scope="session")
def tiny_model_package(tmp_path_factory) -> dict:
    """A model package as ``medmamba export-slicer`` writes it: nnU-Net's own network (``nnUNetTrainer``) with
    seeded random weights, fold 0, for a 3-case 3D phantom (20x28x28 voxels at 2.5x1x1 mm, labels 0..2) planned
    in-process by nnU-Net's planner. Cheap (no training); what it predicts is arbitrary but deterministic.

    Returns a dict: ``zip`` (the package), ``results`` (the nnU-Net results folder it was exported from),
    ``image`` (a 3D NIfTI image of the data set).
    """

    def build(folder: Path) -> dict:
        import json
        import shutil

        import torch
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from medmamba.export.export import export_results

        raw, plans = plan_phantom_in_process(folder, 913, "TinyModel", seed=3)
        results = folder / "nnUNet_results" / raw.name / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        (results / "fold_0").mkdir(parents=True)
        shutil.copy(plans, results / "plans.json")
        shutil.copy(raw / "dataset.json", results / "dataset.json")
        plans_manager = PlansManager(json.loads(plans.read_text()))
        torch.manual_seed(0)
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, plans_manager.get_configuration("3d_fullres"), 1, 3, enable_deep_supervision=True)
        torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": "3d_fullres", "fold": 0}, "current_epoch": 1,
                    "inference_allowed_mirroring_axes": None}, results / "fold_0" / "checkpoint_final.pth")
        export_results(results, folder / "model.zip")
        return {"zip": str(folder / "model.zip"), "results": str(results),
                "image": str(raw / "imagesTr" / "case_000_0000.nii.gz")}

    return build_once(tmp_path_factory, "tiny_model_package", build)


NNUNET_FIXTURES = {"nnunet_phantom_preprocessed", "trained_mhsvm_results", "demo_run"}  # run nnU-Net's commands


def pytest_collection_modifyitems(config, items):
    """Tiers follow what a test needs: nnU-Net's console commands (through these fixtures, or a module marked so)
    and a browser (the docs site), as the markers in pyproject.toml say."""
    for item in items:
        if NNUNET_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.nnunet)
        if item.module.__name__ == "test_docs_site":
            item.add_marker(pytest.mark.browser)


def pytest_configure(config):
    import tempfile

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        config.medmamba_reports = Path(tempfile.mkdtemp(prefix="medmamba-test-reports-"))
        os.environ[REPORTS_VAR] = str(config.medmamba_reports)


def _bad_input_summary(rows: list[dict]) -> list[str]:
    """The sweep's figure (tests/test_bad_inputs.py) and the fuzzing's, from the rows the tests recorded."""
    sweep = [r for r in rows if r["kind"] != "fuzz"]
    fuzz = [r for r in rows if r["kind"] == "fuzz"]

    def harm(group):
        return (f"{sum(r['traceback'] for r in group)} tracebacks, {sum(bool(r['new']) for r in group)} partial "
                f"outputs, {sum(len(r['lost']) for r in group)} user files lost, "
                f"{sum(len(r['changed']) for r in group)} inputs changed")

    lines = []
    if sweep:
        cases = {r["case"] for r in sweep}
        commands = sorted({r["command"] for r in sweep})
        console = sum(r["kind"] == "console" for r in sweep)
        lines.append(f"bad-input sweep: {len(cases)} bad inputs across {len(commands)} commands "
                     f"({', '.join(commands)}), {len(sweep)} runs ({console} through the console command): "
                     f"{harm(sweep)}, "
                     f"{sum(r['rc'] == 0 for r in sweep)} exit 0; the last line names the file or option in "
                     f"{sum(r['named'] for r in sweep)}/{len(sweep)}")
    if fuzz:
        refused = [r for r in fuzz if r["rc"] != 0]
        lines.append(f"header and package fuzzing (hypothesis): {len(fuzz)} examples: {len(refused)} refused (the "
                     f"last line names the file in {sum(r['named'] for r in refused)}), {len(fuzz) - len(refused)} "
                     f"still valid and accepted; {harm(fuzz)}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    import json

    folder = getattr(config, "medmamba_reports", None)
    if folder is None:
        return
    rows = [json.loads(line) for path in sorted(folder.glob("bad_inputs-*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]
    lines = _bad_input_summary(rows)
    if lines:
        terminalreporter.write_sep("-", "medmamba reliability figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config):
    import shutil

    folder = getattr(config, "medmamba_reports", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
