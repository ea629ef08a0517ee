"""``train_restoration``: a 2D restoration net from the registry on the layout in ``medmamba.training``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medmamba.datasets.readers import MEDICAL_ENDINGS, check_same_geometry, list_entries, read_sitk
from medmamba.errors import MedMambaError
from medmamba.io_utils import atomic_dir, claim_dir
from medmamba.training.common import (
    CHECKPOINT_BEST,
    CHECKPOINT_LATEST,
    autocast,
    check_network_input,
    check_out_dir,
    fit,
    load_checkpoint,
    resolve_device,
    split_validation,
)

COMMAND = "train restore"
OUTPUTS = (CHECKPOINT_LATEST, CHECKPOINT_BEST, "history.json", "curves.png", "predictions/", "inputs/")

# Network-side intensity scaling ``(x - shift) / scale`` per degradation: CT in HU maps air to 0, water to 1.
INTENSITY = {"lowdose_ct": (-1000.0, 1000.0)}


def read_pairs(split_dir: Path, paired: bool) -> list[dict]:
    """``[{"case", "target"[, "image"]}]`` from ``split_dir/clean`` (and ``split_dir/degraded``), checked."""
    clean = list_entries(split_dir / "clean", MEDICAL_ENDINGS, "clean image")
    items = [{"case": case, "target": str(path)} for case, path in clean.items()]
    if paired:
        degraded = list_entries(split_dir / "degraded", MEDICAL_ENDINGS, "degraded image")
        for case, path in degraded.items():
            if case not in clean:
                raise MedMambaError(f"{path}: degraded image has no clean image in {split_dir / 'clean'}")
        for it in items:
            if it["case"] not in degraded:
                raise MedMambaError(f"{it['target']}: clean image has no degraded image in {split_dir / 'degraded'}")
            it["image"] = str(degraded[it["case"]])
    for it in items:  # readable, 2D, and pairs on the same grid
        target = read_sitk(it["target"])
        if "image" in it:
            check_same_geometry(target, read_sitk(it["image"]), it["target"], it["image"])
        size = [s for s in target.GetSize() if s > 1]
        if len(size) != 2:
            raise MedMambaError(f"{it['target']}: expected a 2D image, got size {target.GetSize()}")
    return items


def _read_dataset_json(path: Path) -> dict:
    """The data set's optional ``dataset.json`` (``{}`` when absent)."""
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise MedMambaError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(stored, dict):
        raise MedMambaError(f"{path}: expected a JSON object")
    return stored


def train_restoration(data_dir, out_dir, model: str = "mambair", degradation: str | None = None,
                      epochs: int = 10, batch_size: int = 8, lr: float = 2e-4, seed: int = 0,
                      val_fraction: float = 0.2, patch_size: Sequence[int] | None = None, preset: str | None = None,
                      device: str | None = None, amp: bool = True, workers: int = 0, resume: bool = False,
                      progress: bool = True, overwrite: bool = False, **degradation_params) -> dict:
    """Train with an L1 loss, keep the best validation PSNR, restore ``DIR/test``; returns the last history entry.
    Every input is checked before training; ``out_dir`` follows ``medmamba.io_utils.claim_dir`` (``overwrite``:
    start an earlier run over, or write beside files training did not write)."""
    from monai.data import Dataset
    from monai.inferers import sliding_window_inference
    from monai.utils import set_determinism

    import medmamba
    from medmamba.transforms.degradations import DEGRADATIONS
    from medmamba.transforms.restoration import restoration_eval_transforms

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    check_out_dir(out_dir, COMMAND, resume, overwrite)
    if degradation is not None and degradation not in DEGRADATIONS:
        raise MedMambaError(f"--degradation {degradation!r}: choose one of {', '.join(DEGRADATIONS)}")
    paired = degradation is None
    if paired and not (data_dir / "train" / "degraded").is_dir():
        raise MedMambaError(f"{data_dir / 'train' / 'degraded'}: missing; give --degradation to degrade on the fly")
    train_items = read_pairs(data_dir / "train", paired)
    test_items = []
    if (data_dir / "test").is_dir():
        test_items = read_pairs(data_dir / "test", paired or (data_dir / "test" / "degraded").is_dir())
    stored = _read_dataset_json(data_dir / "dataset.json")
    shift, scale = INTENSITY.get(degradation or str(stored.get("degradation", "")), (0.0, 1.0))
    size = [s for s in read_sitk(train_items[0]["target"]).GetSize() if s > 1][::-1]
    patch = tuple(patch_size or [min(48, s) for s in size])
    if any(p > s for p, s in zip(patch, size)):
        raise MedMambaError(f"--patch {' '.join(map(str, patch))}: larger than {train_items[0]['target']} "
                            f"({'x'.join(map(str, size))})")
    config = dict(task="restore", model=model, preset=preset, degradation=degradation, params=degradation_params,
                  epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction,
                  patch_size=list(patch), shift=shift, scale=scale, data=str(data_dir))

    set_determinism(seed=seed)
    dev = resolve_device(device)
    net = medmamba.create_model(model, spatial_dims=2, in_channels=1, out_channels=1, preset=preset).to(dev)
    check_network_input(net, (1, *patch), "--patch", dev)
    train_part, val_part = split_validation(train_items, val_fraction, seed)
    train_tf, eval_tf = _transforms(degradation, patch, shift, scale, degradation_params, train_items[0])

    def infer(x: torch.Tensor) -> torch.Tensor:
        with autocast(dev, amp):
            return sliding_window_inference(x.to(dev), roi_size=patch, sw_batch_size=batch_size, predictor=net,
                                            overlap=0.25, mode="gaussian", padding_mode="replicate").float()

    def validate() -> float:
        eval_tf.set_random_state(seed=seed)  # the same degraded validation images every epoch
        return _mean_psnr(net, Dataset(val_part, eval_tf), infer)

    claim_dir(out_dir, COMMAND, OUTPUTS, overwrite)
    history = fit(net, torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4), out_dir,
                  train_items=train_part, train_transform=train_tf, loss=torch.nn.functional.l1_loss,
                  target_key="target", validate=validate if val_part else None, metric="psnr", config=config,
                  epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=dev, amp=amp, workers=workers,
                  resume=resume, progress=progress)

    if test_items and (out_dir / CHECKPOINT_BEST).is_file():
        net.load_state_dict(load_checkpoint(out_dir / CHECKPOINT_BEST)["model"])
        test_tf = restoration_eval_transforms(None if "image" in test_items[0] else degradation, shift, scale,
                                              **({} if "image" in test_items[0] else degradation_params))
        test_tf.set_random_state(seed=seed)
        write_restored(out_dir, test_items, Dataset(test_items, test_tf), infer, shift, scale)
    return history[-1] if history else {}


def _transforms(degradation, patch, shift, scale, params: dict, probe: dict):
    """The training and evaluation pipelines, tried once on ``probe``: parameters the degradation does not take
    or cannot use are refused before training."""
    from medmamba.transforms.restoration import restoration_eval_transforms, restoration_train_transforms

    try:
        train_tf = restoration_train_transforms(degradation, patch, shift, scale, **params)
        eval_tf = restoration_eval_transforms(degradation, shift, scale, **params)
        eval_tf(dict(probe))
    except (ValueError, TypeError, RuntimeError) as err:
        cause = err.__cause__ or err  # MONAI re-raises a transform's error as a RuntimeError
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        given = " ".join(f"{k}={v}" for k, v in params.items()) or "none"
        raise MedMambaError(f"--degradation {degradation} --param ({given}): {detail}") from None
    return train_tf, eval_tf


@torch.no_grad()
def _mean_psnr(net, dataset, infer) -> float:
    """Mean PSNR over whole images with the evaluation harness's metric (MONAI's), data range the clean image's
    max - min."""
    from medmamba.evaluation.restoration import image_metrics

    net.eval()
    values = []
    for item in dataset:
        pred = infer(item["image"][None])[0].cpu().numpy()
        ref = np.asarray(item["target"])
        values.append(image_metrics(pred, ref, float(ref.max() - ref.min()) or 1.0)["psnr"])
    return float(np.nanmean(values))


@torch.no_grad()
def write_restored(out_dir: Path, items: list[dict], dataset, infer, shift: float, scale: float) -> None:
    """Restored test images as ``OUT/predictions/<case>.nii.gz`` on the reference's grid (and the inputs)."""
    import SimpleITK as sitk

    with atomic_dir(out_dir / "predictions", COMMAND) as pred_dir, atomic_dir(out_dir / "inputs", COMMAND) as input_dir:
        for it, sample in zip(items, dataset):
            reference = read_sitk(it["target"])
            pred = infer(sample["image"][None])[0, 0].cpu().numpy() * scale + shift
            for folder, array in ((pred_dir, pred), (input_dir, sample["image"][0].numpy() * scale + shift)):
                # MONAI loads (x, y); SimpleITK arrays are (y, x)
                out = sitk.GetImageFromArray(np.ascontiguousarray(array.T.astype(np.float32)).reshape(
                    sitk.GetArrayViewFromImage(reference).shape))
                out.CopyInformation(reference)
                sitk.WriteImage(out, str(folder / f"{it['case']}.nii.gz"), useCompression=True)
