"""A shortened `medmamba demo`, through the real CLI, checked output by output."""
import json
import math
import subprocess
import sys

import nrrd
import pytest
import SimpleITK as sitk
import yaml

from medmamba.demo import DEFAULT_CONFIG

SHORT = {
    "segmentation": {"n_train": 5, "n_test": 2, "shape": [24, 32, 32], "epochs": 2, "iterations_per_epoch": 2,
                     "val_iterations_per_epoch": 1},
    "classification": {"n_per_class": 6, "image_size": 32, "epochs": 1, "batch_size": 8},
    "restoration": {"n_cases": 6, "image_size": 32, "epochs": 1, "batch_size": 4},
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for section, values in SHORT.items():
        cfg[section].update(values)
    cfg["output_dir"] = str(tmp / "out")
    config = tmp / "demo.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "medmamba", "demo", "--config", str(config)]
    first = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=tmp)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=tmp)
    return cfg, tmp / "out", first, second


def test_every_step_completes_and_a_second_run_reuses_them(demo_run):
    cfg, out, first, second = demo_run
    state = json.loads((out / "demo_state.json").read_text())
    trainers = cfg["segmentation"]["trainers"]
    expected = {"data", "plan", "slicer export", "classification", "restoration", "efficiency", "report"}
    expected |= {f"{step} {t}" for t in trainers for step in ("train", "predict", "evaluate")}
    assert set(state["done"]) == expected
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("done in an earlier run, reused") == len(expected)


def test_segmentation_outputs(demo_run):
    cfg, out, _, _ = demo_run
    seg = cfg["segmentation"]
    raw = out / "nnunet" / "nnUNet_raw" / f"Dataset{seg['dataset_id']:03d}_{seg['dataset_name']}"
    refs = sorted((raw / "labelsTs").glob("*.nii.gz"))
    assert len(refs) == seg["n_test"]
    for trainer in seg["trainers"]:
        for ref in refs:
            pred, truth = sitk.ReadImage(str(out / "predictions" / trainer / ref.name)), sitk.ReadImage(str(ref))
            assert pred.GetSize() == truth.GetSize() and pred.GetSpacing() == pytest.approx(truth.GetSpacing())
            assert set(sitk.GetArrayFromImage(pred).ravel()) <= set(range(seg["num_labels"] + 1))
        metrics = json.loads((out / "evaluation" / trainer / "metrics.json").read_text())
        assert {c["case"] for c in metrics["cases"]} == {r.name.removesuffix(".nii.gz") for r in refs}
        for label in metrics["summary"].values():
            assert 0.0 <= label["dice"]["mean"] <= 1.0


def test_slicer_export_and_segmentation(demo_run):
    _, out, _, _ = demo_run
    assert len(list((out / "slicer").glob("*.zip"))) == 1
    (seg_file,) = (out / "slicer").glob("*.seg.nrrd")
    data, header = nrrd.read(str(seg_file))
    assert header["Segment0_LabelValue"] == "1" and data.max() <= 2


def test_classification_restoration_efficiency_and_report(demo_run):
    cfg, out, _, _ = demo_run
    cls = json.loads((out / "classification" / "evaluation" / "metrics.json").read_text())
    assert 0.0 <= cls["summary"]["accuracy"] <= 1.0
    restore = json.loads((out / "restoration" / "evaluation" / "metrics.json").read_text())
    assert math.isfinite(restore["summary"]["all"]["psnr"]["mean"])
    assert 0.0 <= restore["summary"]["all"]["ssim"]["mean"] <= 1.0
    eff = json.loads((out / "efficiency.json").read_text())
    assert set(eff["networks"]) == set(cfg["segmentation"]["trainers"])
    report = (out / "report.html").read_text()
    for heading in ("Segmentation on held-out cases", "Training curves", "Predictions beside the reference",
                    "Efficiency", "Classification", "Restoration", "3D Slicer"):
        assert heading in report
    assert report.count("data:image/png;base64,") >= 5
    assert "src=\"http" not in report  # self-contained


def test_console_is_quiet_and_the_report_shows_baselines(demo_run):
    _, out, first, _ = demo_run
    assert first.stdout.count("\n") < 60, first.stdout
    everything = first.stdout + first.stderr
    for noise in ("gpuGetDeviceCount", "Traceback", "nnU-Net", "Epoch"):
        assert noise not in everything, noise
    assert str(out / "logs") in first.stdout
    assert (out / "logs" / "train_MHSVMTrainer.log").read_text().count("Epoch") >= 2  # nnU-Net's output, logged
    report = (out / "report.html").read_text()
    for baseline in ("Per case", "Chance level", "degraded input"):
        assert baseline in report


def test_a_changed_configuration_keeps_files_the_demo_did_not_write(tmp_path, monkeypatch):
    """Starting over removes the earlier run's step outputs, never a user's file beside them."""
    from medmamba.demo import Demo, load_config, pipeline

    made = []

    def fake_steps(demo):
        def write(d):
            (d.out / "step_output").mkdir()
            (d.out / "step_output" / "a.txt").write_text("x")
            made.append(d.cfg["seed"])
        return [pipeline.Step("only step", lambda d: [d.out / "step_output"], write)]

    monkeypatch.setattr(Demo, "steps", fake_steps)
    monkeypatch.setattr(Demo, "report", lambda d: None)
    out = tmp_path / "demo"
    Demo(load_config(None), out).run()
    (out / "my_notes.txt").write_text("mine")
    cfg = load_config(None)
    cfg["seed"] = 1
    Demo(cfg, out).run()
    assert made == [0, 1] and (out / "my_notes.txt").read_text() == "mine"
    assert (out / "step_output" / "a.txt").is_file()
