"""Restoration evaluation: PSNR/SSIM against scikit-image and MONAI, NMSE against numpy, bad input."""
import csv
import json

import numpy as np
import pytest
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from medmamba.cli import main
from medmamba.datasets.nnunet_raw import write_sitk
from medmamba.evaluation.restoration import evaluate_restoration


def make_pairs(root, shapes, rng, endings=None):
    (root / "pred").mkdir()
    (root / "ref").mkdir()
    pairs = {}
    for i, shape in enumerate(shapes):
        ref = (rng.random(shape) * 100 - 20).astype(np.float32)
        pred = (ref + rng.normal(scale=5 + i, size=shape)).astype(np.float32)
        spacing = (2.5,) + (0.8,) * (len(shape) - 1)
        ending = endings[i] if endings else ".nii.gz"
        write_sitk(ref, root / "ref" / f"case_{i}{ending}", spacing)
        write_sitk(pred, root / "pred" / f"case_{i}{ending}", spacing)
        pairs[f"case_{i}"] = (pred.astype(np.float64), ref.astype(np.float64))
    return pairs


def skimage_ssim(pred, ref, data_range):
    return structural_similarity(pred, ref, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


def test_2d_and_3d_match_skimage(tmp_path):
    pairs = make_pairs(tmp_path, [(24, 30), (12, 16, 14), (1, 20, 22)], np.random.default_rng(0),
                       [".nii.gz", ".mha", ".nrrd"])
    result = evaluate_restoration(tmp_path / "pred", tmp_path / "ref", progress=False)
    assert [c["dims"] for c in result["cases"]] == [2, 3, 2]
    for row in result["cases"]:
        pred, ref = pairs[row["case"]]
        pred, ref = pred.squeeze(), ref.squeeze()
        data_range = ref.max() - ref.min()
        assert row["data_range"] == pytest.approx(data_range)
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=data_range), abs=1e-5)
        assert row["ssim"] == pytest.approx(skimage_ssim(pred, ref, data_range), abs=1e-5)
        assert row["nmse"] == pytest.approx(normalized_root_mse(ref, pred, normalization="euclidean") ** 2, rel=1e-9)
    summary = result["summary"]["all"]["ssim"]
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(np.mean([c["ssim"] for c in result["cases"]]))


def test_fixed_data_range_and_cli_outputs(tmp_path):
    pairs = make_pairs(tmp_path, [(16, 16), (20, 18)], np.random.default_rng(1))
    out = tmp_path / "out"
    assert main(["evaluate", "restore", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--data-range", "255", "-o", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["task"] == "restoration" and set(data["summary"]["all"]) == {"psnr", "ssim", "nmse"}
    for row in data["cases"]:
        pred, ref = pairs[row["case"]]
        assert row["data_range"] == 255.0
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=255), abs=1e-5)
        assert row["ssim"] == pytest.approx(skimage_ssim(pred, ref, 255), abs=1e-5)
    with open(out / "metrics.csv") as f:
        assert [r["case"] for r in csv.DictReader(f)] == ["case_0", "case_1"]
    assert (out / "boxplot_ssim.png").read_bytes()[:4] == b"\x89PNG"
    assert "PSNR" in (out / "report.md").read_text()


def test_identical_images_psnr_is_nan_not_a_number(tmp_path):
    make_pairs(tmp_path, [(16, 16)], np.random.default_rng(2))
    (tmp_path / "pred" / "case_0.nii.gz").write_bytes((tmp_path / "ref" / "case_0.nii.gz").read_bytes())
    row = evaluate_restoration(tmp_path / "pred", tmp_path / "ref", progress=False)["cases"][0]
    assert np.isnan(row["psnr"]) and row["ssim"] == pytest.approx(1.0) and row["nmse"] == 0.0


@pytest.mark.parametrize("problem", ["spacing", "shape", "missing", "unreadable", "empty", "too_small"])
def test_bad_input(tmp_path, capsys, problem):
    make_pairs(tmp_path, [(16, 16), (16, 16)], np.random.default_rng(3))
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    culprit = pred_dir / "case_1.nii.gz"
    if problem == "spacing":
        write_sitk(np.zeros((16, 16), np.float32), culprit, (1.0, 1.0))
    elif problem == "shape":
        write_sitk(np.zeros((16, 15), np.float32), culprit, (2.5, 0.8))
    elif problem == "missing":
        culprit.unlink()
    elif problem == "unreadable":
        culprit.write_bytes(b"\x00garbage")
    elif problem == "empty":
        for p in pred_dir.iterdir():
            p.unlink()
        culprit = pred_dir
    else:
        for folder in (pred_dir, ref_dir):
            write_sitk(np.random.rand(8, 16).astype(np.float32), folder / "case_1.nii.gz", (2.5, 0.8))
        culprit = ref_dir / "case_1.nii.gz"
    out = tmp_path / "out"
    assert main(["evaluate", "restore", "--pred", str(pred_dir), "--ref", str(ref_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(culprit.name) in err and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))
