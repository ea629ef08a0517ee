import csv
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medmamba.cli import main as cli_main
from medmamba.datasets.phantom import write_classification_2d, write_restoration_pairs
from medmamba.errors import MedMambaError
from medmamba.training import train_classifier, train_restoration

CLS = dict(model="medmamba_t", preset="tiny", epochs=2, batch_size=4, lr=1e-3, seed=3, device="cpu", progress=False)
RES = dict(model="mambair", preset="tiny", epochs=1, batch_size=4, patch_size=(16, 16), seed=1, device="cpu",
           progress=False)


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    return write_classification_2d(tmp_path_factory.mktemp("cls") / "data", n_per_class=4, shape=(16, 16), seed=0,
                                   num_classes=2, test_fraction=0.25)


@pytest.fixture(scope="module")
def res_data(tmp_path_factory):
    return write_restoration_pairs(tmp_path_factory.mktemp("res") / "data", n_cases=4, shape=(20, 20),
                                   degradation="gaussian", seed=0, std=0.1)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_cls_is_reproducible_resumable_and_writes_predictions(cls_data, tmp_path):
    from medmamba.evaluation.classification import evaluate_classification

    last = train_classifier(cls_data, tmp_path / "a", **CLS)
    train_classifier(cls_data, tmp_path / "b", **{**CLS, "epochs": 1})
    resumed = train_classifier(cls_data, tmp_path / "b", **CLS, resume=True)
    a, b = _weights(tmp_path / "a" / "checkpoint_latest.pt"), _weights(tmp_path / "b" / "checkpoint_latest.pt")
    assert a["epoch"] == b["epoch"] == 2 and last == resumed and a["history"] == b["history"]
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], rtol=0, atol=0, msg=name)
    with open(tmp_path / "a" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "prob_round", "prob_elongated", "pred"]
    probs = np.array([[float(r["prob_round"]), float(r["prob_elongated"])] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [r["pred"] for r in rows] == [["round", "elongated"][i] for i in probs.argmax(1)]
    result = evaluate_classification(tmp_path / "a" / "predictions.csv", tmp_path / "a" / "labels.csv")
    with open(tmp_path / "a" / "labels.csv") as f:
        truth = {r["case"]: r["label"] for r in csv.DictReader(f)}
    assert set(truth) == {r["case"] for r in rows} == {c["case"] for c in result["cases"]}
    accuracy = np.mean([truth[r["case"]] == r["pred"] for r in rows])
    assert result["summary"]["accuracy"] == pytest.approx(accuracy)
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0


def test_restore_writes_predictions_on_the_reference_grid(res_data, tmp_path):
    last = train_restoration(res_data, tmp_path / "r", degradation="gaussian", std=0.1, **RES)
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["psnr"])
    refs = sorted(p.name for p in (res_data / "test" / "clean").iterdir())
    assert sorted(p.name for p in (tmp_path / "r" / "predictions").glob("[!.]*")) == refs
    ref = sitk.ReadImage(str(res_data / "test" / "clean" / refs[0]))
    pred = sitk.ReadImage(str(tmp_path / "r" / "predictions" / refs[0]))
    assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == ref.GetSpacing()
    # the stored degraded test images were used as inputs (paired test set)
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "r" / "inputs" / refs[0]))),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(res_data / "test" / "degraded" / refs[0]))),
                               atol=1e-5)
    again = train_restoration(res_data, tmp_path / "r2", degradation="gaussian", std=0.1, **RES)
    assert again == last


def test_bad_training_input(cls_data, res_data, tmp_path):
    import shutil

    bad = tmp_path / "cls"
    shutil.copytree(cls_data, bad)
    first = (bad / "train" / "labels.csv").read_text().splitlines()[1].split(",")[0]
    image = bad / "train" / "images" / f"{first}.nii.gz"
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(MedMambaError, match=rf"{first}\.nii\.gz: unreadable image"):
        train_classifier(bad, tmp_path / "o1", **CLS)
    image.unlink()
    with pytest.raises(MedMambaError, match=rf"labels\.csv: case '{first}' has no image"):
        train_classifier(bad, tmp_path / "o1", **CLS)
    (bad / "train" / "labels.csv").unlink()
    with pytest.raises(MedMambaError, match=r"train/labels\.csv: missing"):
        train_classifier(bad, tmp_path / "o1", **CLS)

    res = tmp_path / "res"
    shutil.copytree(res_data, res)
    victim = sorted((res / "train" / "degraded").iterdir())[0]
    victim.unlink()
    with pytest.raises(MedMambaError, match=r"clean image has no degraded image"):
        train_restoration(res, tmp_path / "o2", **RES)
    for p in (res / "train" / "clean").iterdir():
        p.unlink()
    with pytest.raises(MedMambaError, match=r"train/clean: no clean image files found"):
        train_restoration(res, tmp_path / "o2", degradation="blur", **RES)
    assert not (tmp_path / "o1" / "checkpoint_latest.pt").exists()


def test_cli_train_errors_are_one_line(cls_data, tmp_path, capsys):
    assert cli_main(["train", "cls", "--data", str(cls_data), "--out", str(tmp_path / "o"), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "medmamba", "train", "restore", "--data", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "o"), "--degradation", "gaussian"], capture_output=True,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("medmamba train: error: ")
