"""Model packages for 3D Slicer: export, verification, prediction (== nnU-Net's prediction) and .seg.nrrd output.

The module builds one small nnU-Net results folder cheaply: a phantom data set planned in-process with nnU-Net's
own planner and two folds of ``nnUNetTrainer`` networks from ``build_network_architecture`` with seeded random
weights, saved in nnU-Net's checkpoint layout. Labels from random weights are arbitrary but deterministic, which is
all the comparison with nnU-Net's predictor needs. ``test_medmamba_trainer_results`` does the same for MHS-VM.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import plan_phantom_in_process

from medmamba.cli import main as cli_main
from medmamba.errors import MedMambaError
from medmamba.export.export import export_results
from medmamba.export.network import network_spec
from medmamba.export.package import PALETTE, load_package
from medmamba.export.predict import find_cases, make_predictor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "slicer" / "MedMambaSegmentation"))
from MedMambaSegmentationLib import predict_command, run_command  # noqa: E402

VENV_BIN = Path(sys.executable).parent
DATASET = "Dataset912_SlicerPhantom"


def _run(cmd, env):
    done = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert done.returncode == 0, f"{cmd[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _write_fold(results: Path, trainer_class, fold: int, seed: int) -> None:
    """A checkpoint as nnU-Net's trainer saves it (the keys its predictor reads), with seeded random weights."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(json.loads((results / "plans.json").read_text()))
    torch.manual_seed(seed)
    network = trainer_class.build_network_architecture(plans_manager, plans_manager.get_configuration("3d_fullres"),
                                                       1, 3, enable_deep_supervision=True)
    (results / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "trainer_name": trainer_class.__name__,
                "init_args": {"configuration": "3d_fullres", "fold": fold}, "current_epoch": 1,
                "inference_allowed_mirroring_axes": (0, 1, 2)}, results / f"fold_{fold}" / "checkpoint_final.pth")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """(raw dataset folder, plans.json path): a 3-case phantom planned by nnU-Net's planner, in-process."""
    return plan_phantom_in_process(tmp_path_factory.mktemp("slicer_planned"), 912, "SlicerPhantom", seed=5)


@pytest.fixture(scope="module")
def trained(planned, tmp_path_factory):
    """(results folder with folds 0 and 1 of nnUNetTrainer, env for nnU-Net's commands, inputs with 2 cases)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    raw, plans = planned
    root = tmp_path_factory.mktemp("slicer_export")
    results = root / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    results.mkdir(parents=True)
    shutil.copy(plans, results / "plans.json")
    shutil.copy(raw / "dataset.json", results / "dataset.json")
    for fold in (0, 1):
        _write_fold(results, nnUNetTrainer, fold, seed=fold)
    # inputs: one case with an oblique direction and shifted origin (geometry must survive), one as written
    inputs = root / "inputs"
    inputs.mkdir()
    image = sitk.ReadImage(str(raw / "imagesTr" / "case_000_0000.nii.gz"))
    image.SetDirection(sitk.VersorTransform((0.0, 0.0, 1.0), 0.3).GetMatrix())
    image.SetOrigin((12.5, -30.0, 7.25))
    sitk.WriteImage(image, str(inputs / "oblique_0000.nii.gz"))
    shutil.copy(raw / "imagesTr" / "case_001_0000.nii.gz", inputs / "plain_0000.nii.gz")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    return results, env, inputs, "nnUNetTrainer"


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    results = trained[0]
    path = tmp_path_factory.mktemp("package") / "model.zip"
    assert cli_main(["export-slicer", str(results), "-o", str(path), "--folds", "0", "1"]) == 0
    return path


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """nnU-Net's own prediction from the results folder with folds 0 and 1."""
    results, env, inputs, _ = trained
    out = tmp_path_factory.mktemp("reference")
    _run(["nnUNetv2_predict_from_modelfolder", "-i", inputs, "-o", out, "-m", results, "-f", "0", "1",
          "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"], env)
    return out


def _predict_env(trained):
    """No nnU-Net folders and no test trainers: predict must need the package only."""
    _, env, _, _ = trained
    return {k: v for k, v in env.items() if not k.startswith("nnUNet_")}


def test_export_manifest_checksums_and_weights(trained, package):
    results, _, _, trainer = trained
    dataset_json = json.loads((results / "dataset.json").read_text())
    plans = json.loads((results / "plans.json").read_text())
    with zipfile.ZipFile(package) as zf:
        manifest = json.loads(zf.read("medmamba.json"))
        names = sorted(zf.namelist())
        assert [p.name for p in package.parent.iterdir()] == ["model.zip"]  # no temporary file left
        assert names == sorted(["plans.json", "dataset.json", "fold_0.safetensors", "fold_1.safetensors",
                                "medmamba.json"])
        for name in names:
            if name != "medmamba.json":
                assert manifest["files"][name] == hashlib.sha256(zf.read(name)).hexdigest()
        assert json.loads(zf.read("plans.json")) == plans
        assert json.loads(zf.read("dataset.json")) == dataset_json
    import medmamba

    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    assert manifest["medmamba_version"] == medmamba.__version__
    assert (manifest["trainer"], manifest["plans"], manifest["configuration"]) == (trainer, "nnUNetPlans",
                                                                                  "3d_fullres")
    assert manifest["dataset"] == DATASET and manifest["folds"] == [0, 1]
    assert manifest["network"] == {
        "builder": "nnunet", "name": architecture["network_class_name"],
        "arch_init_kwargs": architecture["arch_kwargs"],
        "arch_init_kwargs_req_import": architecture["_kw_requires_import"],
        "num_input_channels": 1, "num_output_channels": 3}
    assert manifest["channels"] == [{"index": 0, "name": "MR"}]
    assert manifest["labels"] == [{"name": "organ1", "value": 1, "rgb": list(PALETTE[0])},
                                  {"name": "organ2", "value": 2, "rgb": list(PALETTE[1])}]
    for fold in (0, 1):
        checkpoint = torch.load(results / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                weights_only=True)
        assert manifest["inference_allowed_mirroring_axes"] == list(checkpoint["inference_allowed_mirroring_axes"])
        loaded = load_package(package).weights[fold]
        expected = checkpoint["network_weights"]
        assert sorted(loaded) == sorted(expected)
        for key, tensor in expected.items():
            assert torch.equal(loaded[key], tensor), key


def test_predict_matches_nnunetv2_predict(trained, package, reference, tmp_path):
    _, _, inputs, _ = trained
    out = tmp_path / "pred"
    done = subprocess.run([str(VENV_BIN / "medmamba"), "predict", "--model", str(package), "-i", str(inputs),
                           "-o", str(out), "--format", "nii.gz"], env=_predict_env(trained), capture_output=True,
                          encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Predicting" in done.stderr and "2/2" in done.stderr  # progress over the folder's cases
    assert sorted(p.name for p in out.iterdir()) == [".medmamba-output.json", "oblique.nii.gz", "plain.nii.gz"]
    for case in ("oblique", "plain"):
        ours, theirs = sitk.ReadImage(str(out / f"{case}.nii.gz")), sitk.ReadImage(str(reference / f"{case}.nii.gz"))
        ours_array = sitk.GetArrayFromImage(ours)
        np.testing.assert_array_equal(ours_array, sitk.GetArrayFromImage(theirs))
        assert len(np.unique(ours_array)) > 1
        np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection())
        np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin())


def test_seg_nrrd_through_slicer_module_command(trained, package, reference, tmp_path, monkeypatch):
    """The Slicer module's subprocess command writes Slicer's segmentation format: every field and the voxels."""
    _, _, inputs, _ = trained
    source = inputs / "oblique_0000.nii.gz"
    out = tmp_path / "oblique.seg.nrrd"
    cmd = predict_command(package, source, out, device="cpu", python=sys.executable)
    for var in [v for v in os.environ if v.startswith("nnUNet_")]:  # the package alone must do
        monkeypatch.delenv(var)
    lines = []
    run_command(cmd, lines.append)
    assert str(out) in lines
    voxels, header = nrrd.read(str(out))  # pynrrd: (i, j, k) axis order
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(reference / "oblique.nii.gz"))).transpose(2, 1, 0)
    np.testing.assert_array_equal(voxels, expected)
    assert voxels.dtype == np.uint8

    image = sitk.ReadImage(str(source))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    assert header["space"] == "left-posterior-superior"
    assert header["dimension"] == 3 and header["kinds"] == ["domain"] * 3 and header["encoding"] == "gzip"
    np.testing.assert_array_equal(header["sizes"], image.GetSize())
    np.testing.assert_allclose(header["space origin"], image.GetOrigin())
    for axis in range(3):  # each space direction: the image axis' unit vector times its spacing
        np.testing.assert_allclose(header["space directions"][axis], direction[:, axis] * image.GetSpacing()[axis])
    # a voxel index maps to the same physical point as SimpleITK computes
    index = (3, 5, 2)
    point = header["space origin"] + np.array(index) @ header["space directions"]
    np.testing.assert_allclose(point, image.TransformIndexToPhysicalPoint(index))

    fixed = {"Segmentation_MasterRepresentation": "Binary labelmap",
             "Segmentation_SourceRepresentation": "Binary labelmap",
             "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
             "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
    for key, value in fixed.items():
        assert header[key] == value
    for n, (name, value) in enumerate([("organ1", 1), ("organ2", 2)]):
        hits = np.nonzero(expected == value)
        extent = (" ".join(f"{int(h.min())} {int(h.max())}" for h in hits) if hits[0].size else "0 -1 0 -1 0 -1")
        rgb = [float(c) for c in header[f"Segment{n}_Color"].split()]
        np.testing.assert_allclose(rgb, np.array(PALETTE[n]) / 255, atol=5e-6)
        assert {k[len(f"Segment{n}_"):]: v for k, v in header.items() if k.startswith(f"Segment{n}_")} == {
            "ID": f"Segment_{value}", "Name": name, "NameAutoGenerated": "0", "Color": header[f"Segment{n}_Color"],
            "ColorAutoGenerated": "0", "LabelValue": str(value), "Layer": "0", "Extent": extent,
            "Tags": "Source:medmamba|"}
    assert "Segment2_ID" not in header


def _rewrite_zip(src: Path, dst: Path, edit=None, extra=()):
    """Copy a zip member by member, ``edit(name, data) -> data``, then add ``extra`` (ZipInfo, data) members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, edit(info.filename, data) if edit else data)
        for info, data in extra:
            zout.writestr(info, data)
    return dst


def _link_member(name):
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("member, problem", [
    (zipfile.ZipInfo("../evil.txt"), "unsafe member path '../evil.txt'"),
    (zipfile.ZipInfo("/etc/evil.txt"), "unsafe member path '/etc/evil.txt'"),
    (zipfile.ZipInfo("sub/../../evil.txt"), "unsafe member path 'sub/../../evil.txt'"),
    (_link_member("plans_link.json"), "member 'plans_link.json' is a link"),
    (zipfile.ZipInfo("extra.bin"), "member 'extra.bin' is not listed in medmamba.json"),
])
def test_unsafe_or_unlisted_members_refused(package, tmp_path, capsys, member, problem):
    bad = _rewrite_zip(package, tmp_path / "bad.zip", extra=[(member, b"x")])
    with pytest.raises(MedMambaError, match=f"^{bad}: {problem}"):
        load_package(bad)
    assert cli_main(["predict", "--model", str(bad), "-i", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err
    assert not (tmp_path / "o").exists()


def test_checksum_mismatch_refused(package, tmp_path, capsys):
    def flip_last_byte(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "fold_1.safetensors" else data

    bad = _rewrite_zip(package, tmp_path / "tampered.zip", edit=flip_last_byte)
    assert cli_main(["predict", "--model", str(bad), "-i", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"medmamba predict: error: {bad}: checksum mismatch for fold_1.safetensors\n"
    load_package(bad, folds=[0])  # an untouched fold alone still verifies


def test_missing_fold_in_package(package):
    with pytest.raises(MedMambaError, match=r"fold 3 is not in the package \(has \[0, 1\]\)"):
        load_package(package, folds=["3"])
    with pytest.raises(MedMambaError, match="fold 'x': not a fold number"):
        load_package(package, folds=["x"])


def test_export_errors_name_what_is_missing(trained, tmp_path, capsys):
    results, _, _, trainer = trained
    out = tmp_path / "model.zip"
    out.write_bytes(b"previous package")

    assert cli_main(["export-slicer", str(results), "-o", str(out), "--folds", "0", "3"]) == 2
    missing = results / "fold_3" / "checkpoint_final.pth"
    assert capsys.readouterr().err == f"medmamba export-slicer: error: {missing}: missing (fold 3 not trained?)\n"

    untrained = tmp_path / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
    (untrained / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(results / name, untrained / name)
    assert cli_main(["export-slicer", str(untrained), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"medmamba export-slicer: error: {untrained}: no fold_*/checkpoint_final.pth"
                                       f" (no trained fold to export)\n")

    (untrained / "plans.json").unlink()
    assert cli_main(["export-slicer", str(untrained), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"medmamba export-slicer: error: {untrained / 'plans.json'}: missing\n"

    # failures leave the previous output untouched and no temporary files
    assert out.read_bytes() == b"previous package"
    assert sorted(p.name for p in tmp_path.iterdir()) == [DATASET, "model.zip"]


def test_export_refuses_pickled_objects_in_checkpoint(trained, tmp_path):
    results, _, _, _ = trained
    copy = tmp_path / results.parent.name / results.name
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("fold_1"))
    checkpoint = copy / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "payload": subprocess.Popen}, checkpoint)  # a non-weights global
    with pytest.raises(MedMambaError, match=f"^{checkpoint}: cannot be read as a weights-only checkpoint"):
        export_results(copy, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def test_trainer_with_custom_network_needs_network_name():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class CustomNet(nnUNetTrainer):
        @staticmethod
        def build_network_architecture(*args, **kwargs):
            raise AssertionError("not called")

    class Declared(CustomNet):
        network_name = "some_registered_model"

    class Manager:
        network_arch_class_name = "x.Net"
        network_arch_init_kwargs = {"a": 1}
        network_arch_init_kwargs_req_import = ("b",)

    with pytest.raises(MedMambaError, match="^CustomNet: builds its own network but declares no network_name"):
        network_spec(CustomNet, Manager, 1, 2)
    assert network_spec(Declared, Manager, 1, 2) == {
        "builder": "medmamba", "name": "some_registered_model", "arch_init_kwargs": {"a": 1},
        "arch_init_kwargs_req_import": ["b"], "num_input_channels": 1, "num_output_channels": 2}
    assert network_spec(nnUNetTrainer, Manager, 1, 2)["builder"] == "nnunet"


def test_find_cases_channel_grouping(tmp_path):
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    endings = [".nii.gz", ".nrrd"]
    assert find_cases(tmp_path, 2, endings) == [
        ("a", [tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"]),
        ("b", [tmp_path / "b_0000.nii.gz", tmp_path / "b_0001.nii.gz"])]
    assert find_cases(tmp_path / "a_0000.nii.gz", 2, endings)[0][0] == "a"
    with pytest.raises(MedMambaError, match="a_0002.nii.gz: missing channel file"):
        find_cases(tmp_path, 3, endings)
    with pytest.raises(MedMambaError, match="give the first channel"):
        find_cases(tmp_path / "a_0001.nii.gz", 2, endings)
    single = tmp_path / "scan.nrrd"
    single.write_bytes(b"")
    assert find_cases(single, 1, endings) == [("scan", [single])]
    with pytest.raises(MedMambaError, match="needs files named CASE_XXXX"):
        find_cases(tmp_path, 2, endings)
    with pytest.raises(MedMambaError, match="notes.txt: unsupported image type"):
        find_cases(tmp_path / "notes.txt", 1, endings)


def test_medmamba_trainer_results(planned, tmp_path):
    """An MHS-VM results folder exports with the medmamba builder (the trainer's ``network_name``), and the
    package's predictor runs the very network the trainer builds, without importing the trainer."""
    from medmamba.nnunet_plugins.trainers import MHSVMTrainer

    raw, plans = planned
    results = tmp_path / DATASET / "MHSVMTrainer__nnUNetPlans__3d_fullres"
    results.mkdir(parents=True)
    shutil.copy(plans, results / "plans.json")
    shutil.copy(raw / "dataset.json", results / "dataset.json")
    _write_fold(results, MHSVMTrainer, 0, seed=0)
    manifest = export_results(results, tmp_path / "mhsvm.zip")
    configuration = json.loads(plans.read_text())["configurations"]["3d_fullres"]
    assert manifest["network"] == {
        "builder": "medmamba", "name": MHSVMTrainer.network_name,
        "arch_init_kwargs": configuration["architecture"]["arch_kwargs"],
        "arch_init_kwargs_req_import": configuration["architecture"]["_kw_requires_import"],
        "num_input_channels": 1, "num_output_channels": 3}
    ours = make_predictor(load_package(tmp_path / "mhsvm.zip")).network.eval()
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(json.loads(plans.read_text()))
    reference = MHSVMTrainer.build_network_architecture(plans_manager, plans_manager.get_configuration("3d_fullres"),
                                                        1, 3, enable_deep_supervision=False)
    checkpoint = torch.load(results / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    reference.load_state_dict(checkpoint["network_weights"])
    assert type(ours) is type(reference)
    x = torch.randn(1, 1, *configuration["patch_size"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=0, atol=0)
