"""Segmentation evaluation: agreement with nnU-Net (Dice/IoU) and MONAI (HD95/ASSD/NSD), edge cases, bad input."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

from medmamba.cli import main
from medmamba.datasets.nnunet_raw import write_sitk
from medmamba.evaluation.segmentation import evaluate_segmentation, label_metrics

SPACING = (3.0, 1.0, 0.7)  # numpy order (z, y, x): strongly anisotropic
SHAPE = (8, 20, 18)


def _ball(center, radius):
    grid = np.indices(SHAPE).astype(float)
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, center, SPACING))
    return dist2 <= radius**2


def make_cases(root, rng):
    """Reference/prediction pairs covering overlap, shifts, one-empty and both-empty labels."""
    ref_dir, pred_dir = root / "ref", root / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    cases = {}
    for i in range(4):
        ref = np.zeros(SHAPE, np.uint8)
        pred = np.zeros(SHAPE, np.uint8)
        ref[_ball((4, 8, 8), 5 + i)] = 1
        pred[_ball((4 + (i % 2), 9, 7 + i), 5)] = 1
        if i != 1:  # case 1: label 2 absent from both
            ref[_ball((4, 14, 12), 3)] = 2
        if i not in (1, 2):  # case 2: label 2 missing from the prediction only
            pred[_ball((3, 14, 13), 3)] = 2
        noise = rng.random(SHAPE) < 0.02
        pred[noise & (pred == 0)] = 1
        cases[f"case_{i}"] = (pred, ref)
        write_sitk(ref, ref_dir / f"case_{i}.nii.gz", SPACING)
        write_sitk(pred, pred_dir / f"case_{i}.nii.gz", SPACING)
    return pred_dir, ref_dir, cases


@pytest.fixture
def folders(tmp_path):
    return make_cases(tmp_path, np.random.default_rng(0))


def nan_equal(a, b, tol):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def test_dice_iou_match_nnunet(folders, tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    pred_dir, ref_dir, _ = folders
    result = evaluate_segmentation(pred_dir, ref_dir, progress=False)
    nnunet = compute_metrics_on_folder(str(ref_dir), str(pred_dir), str(tmp_path / "nnunet.json"), SimpleITKIO(),
                                       ".nii.gz", [1, 2], num_processes=1)
    theirs = {(c["prediction_file"].split("/")[-1][: -len(".nii.gz")], label): m
              for c in nnunet["metric_per_case"] for label, m in c["metrics"].items()}
    assert len(result["cases"]) == len(theirs) == 8
    for row in result["cases"]:
        ref_m = theirs[(row["case"], row["label_value"])]
        assert nan_equal(row["dice"], ref_m["Dice"], 1e-6), row
        assert nan_equal(row["iou"], ref_m["IoU"], 1e-6), row
        assert (row["tp"], row["fp"], row["fn"]) == (ref_m["TP"], ref_m["FP"], ref_m["FN"])
    # both-empty label 2 of case_1: NaN Dice, counted, left out of the mean
    summary = result["summary"]["2"]["dice"]
    assert summary["n"] == 3 and summary["n_nan"] == 1
    finite = [r["dice"] for r in result["cases"] if r["label"] == "2" and not math.isnan(r["dice"])]
    assert summary["mean"] == pytest.approx(np.mean(finite), abs=1e-12)
    assert result["meta"]["both_empty"] == {"1": 0, "2": 1}


def test_distances_match_monai(folders):
    pred_dir, ref_dir, cases = folders
    result = evaluate_segmentation(pred_dir, ref_dir, nsd_tolerance=2.0, progress=False)
    checked = 0
    for row in result["cases"]:
        pred, ref = cases[row["case"]]
        p = torch.from_numpy(pred == row["label_value"])[None, None]
        r = torch.from_numpy(ref == row["label_value"])[None, None]
        if not (p.any() and r.any()):
            continue
        hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(SPACING)).item()
        asd = compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                               spacing=list(SPACING)).item()
        nsd = compute_surface_dice(p, r, [2.0], include_background=True, spacing=list(SPACING)).item()
        assert row["hd95"] == pytest.approx(hd, abs=1e-6)
        assert row["assd"] == pytest.approx(asd, abs=1e-6)
        assert row["nsd"] == pytest.approx(nsd, abs=1e-6)
        checked += 1
    assert checked == 6


def test_spacing_axis_order_single_voxels(tmp_path):
    """One voxel two slices apart along z (3 mm spacing): 6 mm, whatever the in-plane spacing."""
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    ref[2, 5, 5] = 1
    pred[4, 5, 5] = 1
    for folder, array in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        write_sitk(array, tmp_path / folder / "a.nrrd", SPACING)
    for tol, nsd in ((5.0, 0.0), (7.0, 1.0)):
        row = evaluate_segmentation(tmp_path / "pred", tmp_path / "ref", nsd_tolerance=tol, progress=False)["cases"][0]
        assert row["hd95"] == pytest.approx(6.0) and row["assd"] == pytest.approx(6.0)
        assert row["nsd"] == nsd and row["dice"] == 0.0
        assert row["volume_diff"] == 0.0


def test_edge_cases_match_monai_where_defined():
    spacing = (1.0, 2.0)
    empty = np.zeros((10, 10), bool)
    blob = empty.copy()
    blob[3:6, 3:7] = True
    both = label_metrics(empty, empty, spacing, 1.0)
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "hd95", "assd", "nsd", "rel_volume_diff"))
    for pred, ref in ((empty, blob), (blob, empty)):
        m = label_metrics(pred, ref, spacing, 1.0)
        assert m["dice"] == 0.0 and m["iou"] == 0.0
        assert math.isnan(m["hd95"]) and math.isnan(m["assd"])
        with pytest.warns(UserWarning):
            monai_nsd = compute_surface_dice(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None],
                                             [1.0], include_background=True, spacing=list(spacing)).item()
        assert m["nsd"] == monai_nsd == 0.0
        assert m["volume_diff"] == (pred.sum() - ref.sum()) * 2.0


def test_cli_outputs_with_dataset_json(folders, tmp_path):
    pred_dir, ref_dir, _ = folders
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    out = tmp_path / "out"
    assert main(["evaluate", "seg", "--pred", str(pred_dir), "--ref", str(ref_dir), "--dataset-json", str(ds),
                 "--nsd-tolerance", "2", "-o", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["task"] == "segmentation" and set(data["summary"]) == {"liver", "tumour"}
    empty = [c for c in data["cases"] if c["case"] == "case_1" and c["label"] == "tumour"][0]
    assert empty["dice"] is None and empty["hd95"] is None and empty["label_value"] == 2
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and rows[0]["case"] == "case_0"
    for row, case in zip(rows, data["cases"]):
        assert nan_equal(float(row["dice"]), case["dice"] if case["dice"] is not None else math.nan, 1e-12)
    assert "tumour" in (out / "report.md").read_text()
    for metric in ("dice", "hd95", "nsd", "assd"):
        assert (out / f"boxplot_{metric}.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def _fails(capsys, argv, *expected):
    out = argv[argv.index("-o") + 1]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert not Path(out).exists()
    assert not [p for p in Path(out).parent.iterdir() if p.name.startswith(f".{Path(out).name}.tmp")]


def test_bad_input(folders, tmp_path, capsys):
    pred_dir, ref_dir, _ = folders
    out = str(tmp_path / "bad_out")
    args = ["evaluate", "seg", "--pred", str(pred_dir), "--ref", str(ref_dir), "-o", out]
    # a different spacing
    write_sitk(np.zeros(SHAPE, np.uint8), pred_dir / "case_3.nii.gz", (3.0, 1.0, 1.0))
    _fails(capsys, args, "case_3.nii.gz", "spacing")
    # a different shape
    write_sitk(np.zeros((8, 20, 17), np.uint8), pred_dir / "case_3.nii.gz", SPACING)
    _fails(capsys, args, "case_3.nii.gz", "size")
    # an unreadable file
    (pred_dir / "case_3.nii.gz").write_bytes(b"not a nifti")
    _fails(capsys, args, "case_3.nii.gz", "unreadable")
    # a missing case
    (pred_dir / "case_3.nii.gz").unlink()
    _fails(capsys, args, "case_3.nii.gz", "no prediction")
    # an empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, ["evaluate", "seg", "--pred", str(empty), "--ref", str(ref_dir), "-o", out], str(empty))
    # a label value dataset.json does not list
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    _fails(capsys, ["evaluate", "seg", "--pred", str(ref_dir), "--ref", str(ref_dir), "--dataset-json", str(ds),
                    "-o", out], "case_0.nii.gz", "unexpected label values [2]")


def test_singleton_axis_is_dropped_for_distances(tmp_path):
    """A 2D slice stored as (1, H, W): same distances as the 2D arrays."""
    ref2d = np.zeros((12, 12), bool)
    pred2d = ref2d.copy()
    ref2d[2:8, 3:9] = True
    pred2d[4:10, 3:7] = True
    flat = label_metrics(pred2d[None], ref2d[None], (5.0, 1.0, 1.5), 1.0)
    plain = label_metrics(pred2d, ref2d, (1.0, 1.5), 1.0)
    for key in ("hd95", "assd", "nsd", "dice"):
        assert flat[key] == pytest.approx(plain[key])


def test_ignore_label_and_region_match_nnunet(folders, tmp_path):
    """dataset.json with a region (list of values) and an ignore label: nnU-Net's compute_metrics per case."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    pred_dir, ref_dir, cases = folders
    for case, (_, ref) in cases.items():  # ignore label 3 over a slab of the reference
        ref = ref.copy()
        ref[:, :, :5] = 3
        write_sitk(ref, ref_dir / f"{case}.nii.gz", SPACING)
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"labels": {"background": 0, "organ": 1, "whole": [1, 2], "ignore": 3}}))
    result = evaluate_segmentation(pred_dir, ref_dir, ds, progress=False)
    assert result["meta"]["ignore_label"] == 3 and set(result["summary"]) == {"organ", "whole"}
    for case in cases:
        theirs = compute_metrics(str(ref_dir / f"{case}.nii.gz"), str(pred_dir / f"{case}.nii.gz"), SimpleITKIO(),
                                 [1, (1, 2)], ignore_label=3)["metrics"]
        for row in (r for r in result["cases"] if r["case"] == case):
            ref_m = theirs[1 if row["label"] == "organ" else (1, 2)]
            assert (row["tp"], row["fp"], row["fn"]) == (ref_m["TP"], ref_m["FP"], ref_m["FN"])
            assert nan_equal(row["dice"], ref_m["Dice"], 1e-6)
