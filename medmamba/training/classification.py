"""``train_classifier``: a 2D image classifier from the registry on the layout in ``medmamba.training``."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medmamba.datasets.readers import check_finite
from medmamba.errors import MedMambaError
from medmamba.io_utils import atomic_file, claim_dir
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

COMMAND = "train cls"
OUTPUTS = (CHECKPOINT_LATEST, CHECKPOINT_BEST, "history.json", "curves.png", "predictions.csv", "labels.csv")


def read_labelled_split(folder: Path) -> list[dict]:
    """``[{"case", "image", "label_name"}]`` from ``folder/labels.csv`` and ``folder/images``; checks every pair."""
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file():
        raise MedMambaError(f"{labels_csv}: missing (a classification split holds images/ and labels.csv)")
    try:
        with open(labels_csv, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"case", "label"} <= set(reader.fieldnames):
                raise MedMambaError(f"{labels_csv}: needs the columns case,label")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise MedMambaError(f"{labels_csv}: unreadable CSV ({err})") from None
    if not rows:
        raise MedMambaError(f"{labels_csv}: no cases")
    images = folder / "images"
    files = {}
    if images.is_dir():
        for p in images.iterdir():
            if p.is_file() and not p.name.startswith("."):
                files.setdefault(p.name.split(".")[0], p)
    items, seen = [], set()
    for row in rows:
        case = row["case"]
        if case in seen:
            raise MedMambaError(f"{labels_csv}: case {case!r} listed twice")
        seen.add(case)
        if case not in files:
            raise MedMambaError(f"{labels_csv}: case {case!r} has no image in {images}")
        items.append({"case": case, "image": str(files[case]), "label_name": row["label"]})
    return items


def _class_names(data_dir: Path, items: list[dict]) -> list[str]:
    meta = data_dir / "dataset.json"
    classes = None
    if meta.is_file():
        try:
            content = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            raise MedMambaError(f"{meta}: invalid JSON ({err})") from None
        classes = content.get("classes") if isinstance(content, dict) else None
        if classes is not None and (not isinstance(classes, list) or len(set(map(str, classes))) != len(classes)):
            raise MedMambaError(f"{meta}: 'classes' must be a list of distinct class names")
    classes = [str(c) for c in classes] if classes else sorted({it["label_name"] for it in items})
    if len(classes) < 2:
        raise MedMambaError(f"{meta if meta.is_file() else data_dir / 'train' / 'labels.csv'}: needs at least two "
                            f"classes, found {classes}")
    return classes


def _with_label_index(items: list[dict], classes: list[str], source: Path) -> list[dict]:
    index = {c: i for i, c in enumerate(classes)}
    for it in items:
        if it["label_name"] not in index:
            raise MedMambaError(f"{source}: case {it['case']!r} has label {it['label_name']!r}, "
                                f"not one of the classes {classes}")
        it["label"] = index[it["label_name"]]
    return items


def _probe_images(paths: list[str]) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial size of the first image) as the pipeline loads them; every image is read and checked:
    readable, 2D, finite, and with the first image's channel count."""
    from monai.transforms import EnsureChannelFirst, LoadImage

    channels, size = None, None
    for path in paths:
        try:
            image = EnsureChannelFirst()(LoadImage(image_only=True)(path))
        except Exception as err:  # MONAI wraps reader errors in RuntimeError / OSError / ValueError
            raise MedMambaError(f"{path}: unreadable image ({type(err).__name__})") from None
        if image.ndim != 3:
            raise MedMambaError(f"{path}: expected a 2D image, got shape {tuple(image.shape[1:])}")
        check_finite(np.asarray(image), path)
        if channels is None:
            channels, size = int(image.shape[0]), tuple(int(s) for s in image.shape[1:])
        elif image.shape[0] != channels:
            raise MedMambaError(f"{path}: {image.shape[0]} channel(s), the first image ({paths[0]}) has {channels}")
    return channels, size


def train_classifier(data_dir, out_dir, model: str = "medmamba_t", epochs: int = 10, batch_size: int = 16,
                     lr: float = 1e-3, weight_decay: float = 0.05, seed: int = 0, val_fraction: float = 0.2,
                     spatial_size: Sequence[int] | None = None, preset: str | None = None, device: str | None = None,
                     amp: bool = True, workers: int = 0, resume: bool = False, progress: bool = True,
                     overwrite: bool = False) -> dict:
    """Train, keep the best validation accuracy, predict ``DIR/test``; returns the final history entry.
    Every input is checked before training; ``out_dir`` follows ``medmamba.io_utils.claim_dir`` (``overwrite``:
    start an earlier run over, or write beside files training did not write)."""
    from monai.data import DataLoader, Dataset
    from monai.utils import set_determinism

    import medmamba
    from medmamba.transforms.classification import classification_eval_transforms, classification_train_transforms

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    check_out_dir(out_dir, COMMAND, resume, overwrite)
    train_items = read_labelled_split(data_dir / "train")
    classes = _class_names(data_dir, train_items)
    _with_label_index(train_items, classes, data_dir / "train" / "labels.csv")
    test_items = (_with_label_index(read_labelled_split(data_dir / "test"), classes, data_dir / "test" / "labels.csv")
                  if (data_dir / "test").is_dir() else [])
    channels, size = _probe_images([it["image"] for it in train_items + test_items])
    spatial_size = tuple(spatial_size or size)
    config = dict(task="cls", model=model, preset=preset, epochs=epochs, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, seed=seed, val_fraction=val_fraction, spatial_size=list(spatial_size),
                  classes=classes, in_channels=channels, data=str(data_dir))

    set_determinism(seed=seed)
    dev = resolve_device(device)
    net = medmamba.create_model(model, spatial_dims=2, in_channels=channels, num_classes=len(classes),
                                preset=preset).to(dev)
    check_network_input(net, (channels, *spatial_size), "--size", dev)
    train_part, val_part = split_validation(train_items, val_fraction, seed)
    eval_tf = classification_eval_transforms(spatial_size)
    val_loader = DataLoader(Dataset(val_part, eval_tf), batch_size=batch_size, shuffle=False, num_workers=workers)

    def validate() -> float:
        probs, labels = _predict(net, val_loader, dev, amp)
        return float((probs.argmax(1) == labels).mean())

    claim_dir(out_dir, COMMAND, OUTPUTS, overwrite)
    history = fit(net, torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay), out_dir,
                  train_items=train_part, train_transform=classification_train_transforms(spatial_size),
                  loss=torch.nn.CrossEntropyLoss(), target_key="label", validate=validate if val_part else None,
                  metric="accuracy", config=config, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  device=dev, amp=amp, workers=workers, resume=resume, progress=progress)

    if test_items and (out_dir / CHECKPOINT_BEST).is_file():
        net.load_state_dict(load_checkpoint(out_dir / CHECKPOINT_BEST)["model"])
        test_loader = DataLoader(Dataset(test_items, eval_tf), batch_size=batch_size, shuffle=False,
                                 num_workers=workers)
        probs, _ = _predict(net, test_loader, dev, amp)
        write_predictions(out_dir, test_items, classes, probs)
    return history[-1] if history else {}


@torch.no_grad()
def _predict(net, loader, dev, amp) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    probs, labels = [], []
    for batch in loader:
        with autocast(dev, amp):
            logits = net(batch["image"].to(dev)).float()
        probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        labels.append(np.asarray(batch["label"]))
    return np.concatenate(probs), np.concatenate(labels)


def write_predictions(out_dir: Path, items: list[dict], classes: list[str], probs: np.ndarray) -> None:
    """``predictions.csv`` (case, prob_<class>..., pred) and the reference ``labels.csv`` (case,label)."""
    with (atomic_file(out_dir / "predictions.csv", suffix=".csv") as tmp,
          open(tmp, "w", newline="", encoding="utf-8") as f):
        writer = csv.writer(f)
        writer.writerow(["case", *[f"prob_{c}" for c in classes], "pred"])
        for it, p in zip(items, probs):
            writer.writerow([it["case"], *[f"{v:.6g}" for v in p], classes[int(np.argmax(p))]])
    with atomic_file(out_dir / "labels.csv", suffix=".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "label"])
        writer.writerows([it["case"], it["label_name"]] for it in items)
