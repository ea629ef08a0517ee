"""Image restoration metrics per case: PSNR and SSIM (MONAI's ``PSNRMetric``/``SSIMMetric``) and NMSE.

Images (NIfTI, NRRD, MHA/MHD, PNG/BMP/TIFF; one channel) are read with SimpleITK, matched by case name, and must
share size, spacing, origin and direction with their reference. Axes of size 1 are dropped, so a 2D slice stored
as a 3D volume gets 2D SSIM; SSIM is 2D or 3D after that (a Gaussian window of 11 voxels, sigma 1.5, K1 0.01,
K2 0.03, as in the SSIM paper and scikit-image with ``gaussian_weights=True``), so every remaining axis needs at
least 11 voxels.

- ``data_range``: the ``--data-range`` value when given, else the reference's max - min for that case (recorded
  per case); PSNR = 20 log10(data_range) - 10 log10(MSE) (infinite, reported as NaN, for identical images).
- ``nmse`` = ||pred - ref||^2 / ||ref||^2 (NaN for an all-zero reference), computed in float64.
- A constant reference without ``--data-range`` has no data range: an error naming the file.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medmamba.datasets.readers import MEDICAL_ENDINGS, check_same_geometry, list_entries, read_header, read_sitk
from medmamba.errors import MedMambaError
from medmamba.evaluation import report
from medmamba.io_utils import atomic_dir

ENDINGS = MEDICAL_ENDINGS + (".png", ".bmp", ".tif", ".tiff")
METRICS = ("psnr", "ssim", "nmse")
COLUMNS = ("case", *METRICS, "data_range", "dims")
SSIM_WINDOW = 11


def read_image(path: Path) -> np.ndarray:
    """An image's voxels as a float64 array in numpy axis order (``read_sitk``: unreadable files refused)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(read_sitk(path)).astype(np.float64)


def check_pair(ref_path: Path, pred_path: Path) -> None:
    """From the headers: one channel, the same grid, large enough for SSIM."""
    ref, pred = read_header(ref_path), read_header(pred_path)
    for path, header in ((ref_path, ref), (pred_path, pred)):
        if header.GetNumberOfComponents() != 1:
            raise MedMambaError(f"{path}: expected a single-channel image, found {header.GetNumberOfComponents()} "
                                "components")
    check_same_geometry(ref, pred, ref_path, pred_path)
    size = [n for n in ref.GetSize() if n > 1]
    if len(size) not in (2, 3) or min(size) < SSIM_WINDOW:
        raise MedMambaError(f"{ref_path}: SSIM needs a 2D or 3D image with at least {SSIM_WINDOW} voxels per axis, "
                            f"got size {ref.GetSize()}")


def image_metrics(pred: np.ndarray, ref: np.ndarray, data_range: float) -> dict[str, Any]:
    """PSNR and SSIM (MONAI) and NMSE of one image pair (singleton axes dropped)."""
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric

    shape = tuple(n for n in ref.shape if n > 1)
    p = torch.from_numpy(pred.reshape(shape))[None, None]
    r = torch.from_numpy(ref.reshape(shape))[None, None]
    psnr = PSNRMetric(max_val=data_range)(p, r).item()
    ssim = SSIMMetric(spatial_dims=len(shape), data_range=data_range, win_size=SSIM_WINDOW)(p, r).item()
    ref_energy = float(np.sum(ref**2))
    nmse = float(np.sum((pred - ref) ** 2)) / ref_energy if ref_energy else math.nan
    return {"psnr": psnr if math.isfinite(psnr) else math.nan, "ssim": ssim, "nmse": nmse,
            "data_range": float(data_range), "dims": len(shape)}


def evaluate_restoration(pred_dir, ref_dir, data_range: float | None = None, progress: bool = True) -> dict[str, Any]:
    """PSNR, SSIM and NMSE of every prediction against its reference (conventions in the module docstring).

    Every pair's headers are checked before any voxel is read.

    Args:
        pred_dir: folder of restored images.
        ref_dir: folder of clean references, the same case names.
        data_range: PSNR's and SSIM's data range; None: each reference's max - min.
        progress: show a progress bar.

    Returns:
        ``{"task": "restoration", "cases": [{"case", "psnr", "ssim", "nmse", "data_range", "dims"}, ...],
        "summary": {"all": {metric: report.summarize(...)}}, "meta": {...}}``.

    Raises:
        MedMambaError: a non-positive ``data_range``, unmatched cases, a pair with different geometry, more than one
            channel or too small for SSIM, a constant reference without ``data_range``, or non-finite voxels.
    """
    from tqdm import tqdm

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    if data_range is not None and not data_range > 0:
        raise MedMambaError(f"--data-range {data_range}: must be positive")
    preds = list_entries(pred_dir, ENDINGS, "prediction")
    refs = list_entries(ref_dir, ENDINGS, "reference")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise MedMambaError(f"{pred_dir}: no prediction for reference case(s) "
                            + ", ".join(refs[c].name for c in missing[:5]))
    extra = sorted(set(preds) - set(refs))
    if extra:
        raise MedMambaError(f"{ref_dir}: no reference for prediction(s) " + ", ".join(preds[c].name for c in extra[:5]))
    for case in sorted(refs):  # headers only: input errors before any long work
        check_pair(refs[case], preds[case])
    cases = []
    for case in tqdm(sorted(refs), desc="restoration metrics", disable=not progress):
        ref, pred = read_image(refs[case]), read_image(preds[case])
        case_range = data_range if data_range is not None else float(ref.max() - ref.min())
        if not case_range > 0:
            raise MedMambaError(f"{refs[case]}: constant reference image has no data range (give --data-range)")
        if not (np.isfinite(ref).all() and np.isfinite(pred).all()):
            raise MedMambaError(f"{preds[case]}: NaN or infinite values (or in its reference)")
        cases.append({"case": case, **image_metrics(pred, ref, case_range)})
    summary = {"all": {m: report.summarize(c[m] for c in cases) for m in METRICS}}
    meta = {"pred_dir": str(pred_dir.resolve()), "ref_dir": str(ref_dir.resolve()), "num_cases": len(cases),
            "data_range": data_range if data_range is not None else "per case: reference max - min",
            "implementation": "monai.metrics PSNRMetric, SSIMMetric (gaussian window 11, sigma 1.5); NMSE numpy"}
    return {"task": "restoration", "cases": cases, "summary": summary, "meta": meta}


def write_restoration_outputs(result: dict[str, Any], out_dir, overwrite: bool = False) -> Path:
    """Write metrics.json, metrics.csv, report.md and a box plot per metric into ``out_dir``.

    The folder is written whole or not at all (``atomic_dir``).

    Args:
        result: what :func:`evaluate_restoration` returned.
        out_dir: the output folder.
        overwrite: write into a folder that holds files ``evaluate restore`` did not write (they are kept).

    Returns:
        ``out_dir``.
    """
    with atomic_dir(out_dir, "evaluate restore", overwrite) as tmp:
        figures = report.box_plots(tmp, result["cases"], METRICS, None, ["all"])
        meta = result["meta"]
        md = [
            "# Restoration evaluation", "",
            f"{meta['num_cases']} cases; data range: {meta['data_range']}. PSNR in dB; NMSE = ||pred - ref||² / "
            "||ref||². Means leave out NaN values (`n_nan`, e.g. PSNR of identical images).", "",
            report.summary_table(result["summary"], METRICS, "images"), "",
            "## Per case", "", report.markdown_table(["case", *METRICS, "data range"],
                                                     [(c["case"], *(c[m] for m in METRICS), c["data_range"])
                                                      for c in result["cases"]]), "",
            "## Figures", "", *[f"![{name}]({name})" for name in figures], "",
        ]
        report.write_outputs(tmp, result, COLUMNS, "\n".join(md))
    return Path(out_dir)
