"""Shared pieces of the training loops: seeding, device and AMP, checkpoints, history plots."""
from __future__ import annotations

import json
import math
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmamba.errors import MedMambaError
from medmamba.io_utils import atomic_file, check_output_dir

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch draws from its own seed, so a resumed run repeats the uninterrupted one exactly."""
    return (seed * 1_000_003 + epoch) % 2**31


def set_cosine_lr(optimizer: torch.optim.Optimizer, lr: float, epoch: int, epochs: int) -> None:
    """Cosine decay from ``lr`` in closed form (no scheduler state), so ``--resume`` with more epochs is exact."""
    for group in optimizer.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise MedMambaError(f"--device {device!r}: not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MedMambaError(f"--device {device}: CUDA is not available")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise MedMambaError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if resolved.type not in ("cpu", "cuda"):
        raise MedMambaError(f"--device {device}: training runs on cpu or cuda")
    return resolved


def check_out_dir(out_dir: Path, command: str, resume: bool, overwrite: bool) -> None:
    """Refuse the output folder before any work: files the command did not write (without ``overwrite``), or an
    earlier run that neither ``resume`` continues nor ``overwrite`` starts over.

    Args:
        out_dir: the run's output folder.
        command: ``"train cls"`` or ``"train restore"``.
        resume: continue the run in ``out_dir``.
        overwrite: start over, and write beside files the command did not write (none is deleted).
    """
    check_output_dir(out_dir, command, overwrite)
    if not (resume or overwrite) and (Path(out_dir) / CHECKPOINT_LATEST).is_file():
        raise MedMambaError(f"{out_dir}: holds an earlier run of `medmamba {command}`; give --resume to continue "
                            f"it or --overwrite to start over")


def check_network_input(net: torch.nn.Module, shape: tuple[int, ...], option: str, device: torch.device) -> None:
    """One forward pass on zeros of ``shape`` (channels first): an input the network cannot take is refused here,
    before training, naming ``option``."""
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *shape, device=device))
    except (RuntimeError, ValueError, AssertionError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        size = "x".join(map(str, shape[1:]))
        raise MedMambaError(f"{option}: the network cannot take {shape[0]}-channel {size} inputs ({detail})") from None


def autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.float16) if enabled and device.type == "cuda" else nullcontext()


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def save_checkpoint(path: Path, **state: Any) -> None:
    with atomic_file(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MedMambaError(f"{path}: checkpoint not found") from None
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise MedMambaError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None


def write_history(out_dir: Path, history: list[dict], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_file(out_dir / "history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=2))
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss")
    ax2.plot(epochs, [h.get(metric, float("nan")) for h in history], marker="o", color="tab:green")
    ax2.set(xlabel="epoch", ylabel=f"validation {metric}")
    fig.tight_layout()
    with atomic_file(out_dir / "curves.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def finish_epoch(out_dir: Path, entry: dict, metric: str, history: list[dict], best: float, progress: bool,
                 **state: Any) -> float:
    """Record an epoch: history, curves, latest checkpoint and best checkpoint (by ``metric``, else by the lowest
    training loss). Returns the best score so far."""
    from tqdm import tqdm

    score = entry.get(metric, -entry["train_loss"])
    history.append(entry)
    state.update(epoch=entry["epoch"], history=history)
    if score > best:
        best = score
        save_checkpoint(out_dir / CHECKPOINT_BEST, best=best, **state)
    save_checkpoint(out_dir / CHECKPOINT_LATEST, best=best, **state)
    write_history(out_dir, history, metric)
    if progress:
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
    return best


def split_validation(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split of ``cases`` into (train, validation); no validation when ``fraction`` is 0."""
    if fraction <= 0 or len(cases) < 2:
        return list(cases), []
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, int(round(fraction * len(cases)))))
    val = sorted(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in set(val)], [cases[i] for i in val]
