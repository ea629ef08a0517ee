"""Segmentation metrics per case and foreground label, from MONAI's implementations, in millimetres.

Files: NIfTI (``.nii.gz``, ``.nii``), NRRD, MHA/MHD and lossless 2D images (PNG, BMP, TIFF), read with SimpleITK
and matched by case name (the file name without its ending). A prediction and its reference must share size,
spacing, origin and direction.

Per case and label (``mask = seg == value``; a region, i.e. a list of values in dataset.json, is ``isin``):

- ``tp``, ``fp``, ``fn`` voxel counts, ``n_ref`` = tp + fn, ``n_pred`` = tp + fp.
- ``dice`` = 2tp / (2tp + fp + fn), ``iou`` = tp / (tp + fp + fn), as nnU-Net computes them.
- ``hd95``: ``monai.metrics.compute_hausdorff_distance(percentile=95)`` (symmetric: the larger of the two directed
  95th percentiles), ``assd``: ``compute_average_surface_distance(symmetric=True)``, ``nsd``:
  ``compute_surface_dice`` with ``class_thresholds=[tolerance]`` (edge voxels, ``use_subvoxels=False``); all with
  ``spacing`` = the image spacing in array order, so distances are in mm.
- ``volume_diff`` = (n_pred - n_ref) * voxel volume (mm^3, signed); ``rel_volume_diff`` = (n_pred - n_ref) / n_ref.

Edge cases (NaN is ``null`` in metrics.json; summaries use finite values only and report ``n_nan``):

- reference and prediction both empty: dice, iou, hd95, assd, nsd and rel_volume_diff are NaN (nnU-Net gives NaN
  Dice); the pair is counted in ``n_nan`` and left out of means; volume_diff is 0.
- exactly one empty: dice = iou = 0; hd95 and assd are NaN (no surface to measure to: MONAI returns NaN or inf,
  both reported as NaN, never a finite stand-in); nsd = 0 (MONAI's value: no surface point lies within tolerance
  of an empty surface); rel_volume_diff is NaN when the reference is empty.
- axes of size 1 (e.g. a 2D slice stored as a 3D volume) are dropped before surface distances, so the slice
  border is not mistaken for a surface.
- with an ``ignore`` label in dataset.json, reference voxels carrying it are removed from both masks (nnU-Net
  leaves them out of TP/FP/FN the same way) before every metric.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmamba.datasets.readers import MEDICAL_ENDINGS, check_label_values, check_same_geometry, list_entries, read_sitk
from medmamba.errors import MedMambaError
from medmamba.evaluation import report
from medmamba.io_utils import atomic_dir

SEG_ENDINGS = MEDICAL_ENDINGS + (".png", ".bmp", ".tif", ".tiff")
METRICS = ("dice", "iou", "hd95", "assd", "nsd", "volume_diff", "rel_volume_diff")
COUNTS = ("tp", "fp", "fn", "n_ref", "n_pred")
COLUMNS = ("case", "label", "label_value", *METRICS, *COUNTS)


@dataclass(frozen=True)
class Label:
    """A foreground label of dataset.json: ``value`` an int, or a tuple of ints for a region (their union)."""

    name: str
    value: int | tuple[int, ...]

    def mask(self, seg: np.ndarray) -> np.ndarray:
        return np.isin(seg, self.value) if isinstance(self.value, tuple) else seg == self.value


def labels_from_dataset_json(path: Path) -> tuple[list[Label], int | None]:
    """Foreground labels (not 0, not ``ignore``) of an nnU-Net dataset.json, and the ignore value."""
    try:
        labels = json.loads(Path(path).read_text(encoding="utf-8"))["labels"]
        ignore = labels.get("ignore")
        out = []
        for name, value in labels.items():
            if name in ("background", "ignore"):
                continue
            value = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else int(value)
            if value != 0:
                out.append(Label(str(name), value))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MedMambaError(f"{path}: not a dataset.json with a 'labels' mapping ({type(err).__name__}: {err})") \
            from None
    if not out:
        raise MedMambaError(f"{path}: no foreground labels")
    return out, (int(ignore) if ignore is not None else None)


def read_segmentation(path: Path, allowed=None):
    """(integer array, spacing in array order, SimpleITK image, label values present)."""
    import SimpleITK as sitk

    image = read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MedMambaError(f"{path}: expected a single-channel label map, found "
                            f"{image.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(image)
    values = check_label_values(array, path, allowed)
    return array.astype(np.int64, copy=False), tuple(reversed(image.GetSpacing())), image, values


def _distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance: float) -> dict[str, float]:
    """hd95, assd and nsd from MONAI on two non-empty masks; inf (undefined) becomes NaN."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    keep = [i for i, n in enumerate(pred.shape) if n > 1]
    shape = tuple(pred.shape[i] for i in keep)
    spacing = [float(spacing[i]) for i in keep]
    p = torch.from_numpy(pred.reshape(shape))[None, None]
    r = torch.from_numpy(ref.reshape(shape))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about deprecated arguments of its own helpers
        hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=spacing)
        nsd = compute_surface_dice(p, r, [float(tolerance)], include_background=True, spacing=spacing)
    values = {"hd95": hd95.item(), "assd": assd.item(), "nsd": nsd.item()}
    return {k: (v if math.isfinite(v) else math.nan) for k, v in values.items()}


def label_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance: float) -> dict[str, Any]:
    """All metrics of one boolean prediction mask against one boolean reference mask (see the module docstring)."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    tp, fp, fn = (int(v) for v in compute_tp_fp_fn_tn(ref, pred)[:3])
    n_ref, n_pred = tp + fn, tp + fp
    union = tp + fp + fn
    out: dict[str, Any] = {
        "dice": 2 * tp / (2 * tp + fp + fn) if union else math.nan,
        "iou": tp / union if union else math.nan,
        "volume_diff": (n_pred - n_ref) * float(np.prod(spacing)),
        "rel_volume_diff": (n_pred - n_ref) / n_ref if n_ref else math.nan,
        "tp": tp, "fp": fp, "fn": fn, "n_ref": n_ref, "n_pred": n_pred,
    }
    if n_ref and n_pred:
        out.update(_distances(pred, ref, spacing, tolerance))
    else:
        out.update(hd95=math.nan, assd=math.nan, nsd=0.0 if (n_ref or n_pred) else math.nan)
    return out


def _match_cases(pred_dir: Path, ref_dir: Path) -> list[tuple[str, Path, Path]]:
    preds = list_entries(pred_dir, SEG_ENDINGS, "prediction")
    refs = list_entries(ref_dir, SEG_ENDINGS, "reference")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise MedMambaError(f"{pred_dir}: no prediction for {len(missing)} reference case(s): "
                            + ", ".join(refs[c].name for c in missing[:5]) + (" ..." if len(missing) > 5 else ""))
    extra = sorted(set(preds) - set(refs))
    if extra:
        raise MedMambaError(f"{ref_dir}: no reference for {len(extra)} prediction(s): "
                            + ", ".join(preds[c].name for c in extra[:5]) + (" ..." if len(extra) > 5 else ""))
    return [(case, preds[case], refs[case]) for case in sorted(refs)]


def evaluate_segmentation(pred_dir, ref_dir, dataset_json=None, nsd_tolerance: float = 1.0,
                          progress: bool = True) -> dict[str, Any]:
    """The metrics.json content for the predictions in ``pred_dir`` against ``ref_dir``."""
    from tqdm import tqdm

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    if not nsd_tolerance > 0:
        raise MedMambaError(f"--nsd-tolerance {nsd_tolerance}: must be positive (mm)")
    pairs = _match_cases(pred_dir, ref_dir)
    labels, ignore = labels_from_dataset_json(Path(dataset_json)) if dataset_json else (None, None)
    allowed_ref = allowed_pred = None
    if labels is not None:
        allowed_pred = {0, *(v for lab in labels for v in np.atleast_1d(lab.value).tolist())}
        allowed_ref = allowed_pred | ({ignore} if ignore is not None else set())
    values: set[int] = set()
    loaded = []
    for case, pred_path, ref_path in pairs:
        _, spacing, ref_img, ref_values = read_segmentation(ref_path, allowed_ref)
        _, _, pred_img, pred_values = read_segmentation(pred_path, allowed_pred)
        check_same_geometry(ref_img, pred_img, ref_path, pred_path)
        values.update(int(v) for v in (*ref_values, *pred_values) if v != 0)
        loaded.append((case, pred_path, ref_path, spacing))
    if labels is None:  # every non-zero value found in any file, named by its value
        if not values:
            raise MedMambaError(f"{ref_dir}: no foreground label in any reference or prediction "
                                "(give --dataset-json to name the labels)")
        labels = [Label(str(v), v) for v in sorted(values)]

    cases = []
    for case, pred_path, ref_path, spacing in tqdm(loaded, desc="segmentation metrics", disable=not progress):
        ref = read_segmentation(ref_path)[0]
        pred = read_segmentation(pred_path)[0]
        keep = ref != ignore if ignore is not None else None
        for label in labels:
            ref_mask, pred_mask = label.mask(ref), label.mask(pred)
            if keep is not None:
                ref_mask &= keep
                pred_mask &= keep
            row = {"case": case, "label": label.name,
                   "label_value": list(label.value) if isinstance(label.value, tuple) else label.value}
            row.update(label_metrics(pred_mask, ref_mask, spacing, nsd_tolerance))
            cases.append(row)
    summary = {lab.name: {m: report.summarize(r[m] for r in cases if r["label"] == lab.name) for m in METRICS}
               for lab in labels}
    meta = {
        "pred_dir": str(pred_dir.resolve()),
        "ref_dir": str(ref_dir.resolve()),
        "dataset_json": str(Path(dataset_json).resolve()) if dataset_json else None,
        "num_cases": len(loaded),
        "labels": {lab.name: lab.value for lab in labels},
        "ignore_label": ignore,
        "nsd_tolerance_mm": nsd_tolerance,
        "both_empty": {lab.name: sum(1 for r in cases if r["label"] == lab.name and r["n_ref"] == 0
                                     and r["n_pred"] == 0) for lab in labels},
        "units": {"hd95": "mm", "assd": "mm", "nsd_tolerance": "mm", "volume_diff": "mm^3"},
        "implementation": "monai.metrics compute_hausdorff_distance(percentile=95), "
                          "compute_average_surface_distance(symmetric=True), compute_surface_dice",
    }
    return {"task": "segmentation", "cases": cases, "summary": summary, "meta": meta}


def write_segmentation_outputs(result: dict[str, Any], out_dir, overwrite: bool = False) -> Path:
    """metrics.json, metrics.csv, report.md and one box plot per metric (a box per label), written atomically."""
    labels = list(result["summary"])
    with atomic_dir(out_dir, "evaluate seg", overwrite) as tmp:
        figures = report.box_plots(tmp, result["cases"], METRICS, "label", labels)
        meta = result["meta"]
        md = [
            "# Segmentation evaluation", "",
            f"{meta['num_cases']} cases; predictions `{meta['pred_dir']}`, references `{meta['ref_dir']}`; "
            f"NSD tolerance {meta['nsd_tolerance_mm']} mm. Distances in mm (image spacing), MONAI implementations.",
            "",
            "Means leave out NaN values (`n_nan`): Dice/IoU/distances are NaN when reference and prediction are "
            "both empty; HD95/ASSD are NaN when exactly one is empty (NSD is then 0).", "",
            "Pairs with empty reference and prediction: "
            + ", ".join(f"{name} {n}" for name, n in meta["both_empty"].items()), "",
            "## Summary", "", report.summary_table(result["summary"], METRICS, "label"), "",
            "## Figures", "", *[f"![{name}]({name})" for name in figures], "",
        ]
        report.write_outputs(tmp, result, COLUMNS, "\n".join(md))
    return Path(out_dir)
