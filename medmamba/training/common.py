"""The training loop the classification and restoration tasks share (:func:`fit`: resume, per-epoch seeding,
cosine learning rate, AMP, checkpoints, history), and its pieces."""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import set_determinism
from torch.optim.lr_scheduler import LRScheduler

from medmamba.errors import MedMambaError
from medmamba.io_utils import atomic_file, check_output_dir

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def epoch_seed(seed: int, epoch: int) -> int:
    """Each epoch draws from its own seed, so a resumed run repeats the uninterrupted one exactly."""
    return (seed * 1_000_003 + epoch) % 2**31


class CosineLRScheduler(LRScheduler):
    """Cosine annealing from the initial learning rate to ``min_lr`` over ``max_steps`` epochs: the toolkit's one
    cosine schedule (our training loops and the nnU-Net trainers whose papers used one).

    Like nnU-Net's ``PolyLRScheduler``, ``step(epoch)`` sets the rate for that epoch in closed form, so resuming
    needs no scheduler state.

    Args:
        optimizer: its parameter groups get the rate.
        initial_lr: the rate at epoch 0.
        max_steps: the epoch at which ``min_lr`` is reached.
        min_lr: the final rate.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, min_lr: float = 1e-5):
        self.initial_lr, self.max_steps, self.min_lr = initial_lr, max_steps, min_lr
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        progress = min(current_step / max(self.max_steps, 1), 1.0)
        new_lr = self.min_lr + (self.initial_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr


def resolve_device(device: str | None) -> torch.device:
    """The training device from a ``--device`` value.

    Args:
        device: ``"auto"`` or None (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Returns:
        The ``torch.device``.

    Raises:
        MedMambaError: not a device, CUDA asked for but unavailable or without that index, or a type other than
            cpu and cuda.
    """
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
    """float16 autocast on CUDA when ``enabled``; a no-op context elsewhere (CPU trains in float32)."""
    return torch.autocast("cuda", dtype=torch.float16) if enabled and device.type == "cuda" else nullcontext()


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A gradient scaler, active only on CUDA with ``enabled`` (otherwise it passes gradients through)."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def save_checkpoint(path: Path, **state: Any) -> None:
    """``torch.save`` the keyword arguments as one dict, written atomically (a temporary file renamed onto
    ``path``)."""
    with atomic_file(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`save_checkpoint`, loaded onto the CPU with ``weights_only=True``.

    Args:
        path: the ``.pt`` file.

    Returns:
        The saved dict (``model``, ``optimizer``, ``scaler``, ``epoch``, ``history``, ``best``, ``config``, ...).

    Raises:
        MedMambaError: the file is missing or is not a readable checkpoint.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MedMambaError(f"{path}: checkpoint not found") from None
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise MedMambaError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None


def write_history(out_dir: Path, history: list[dict], metric: str) -> None:
    """Write ``history.json`` and ``curves.png`` (training loss and validation ``metric`` per epoch) to ``out_dir``.

    Args:
        out_dir: the run folder.
        history: one dict per epoch with ``epoch``, ``train_loss`` and, when validated, ``metric``.
        metric: the validation metric's key (missing values plot as gaps).
    """
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


def fit(net: torch.nn.Module, optimizer: torch.optim.Optimizer, out_dir: Path, *, train_items: list[dict],
        train_transform, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], target_key: str,
        validate: Callable[[], float] | None, metric: str, config: dict, epochs: int, lr: float, batch_size: int,
        seed: int, device: torch.device, amp: bool, workers: int, resume: bool, progress: bool) -> list[dict]:
    """Train ``net`` on ``train_items`` for ``epochs`` epochs, keeping the latest and the best checkpoint.

    Each epoch draws from its own seed (:func:`epoch_seed`) for the transforms, the shuffling and the weights'
    dropout, and sets the cosine learning rate in closed form, so a run resumed from ``checkpoint_latest.pt``
    repeats the uninterrupted one. On CUDA, ``amp`` trains in float16 with a gradient scaler.

    Args:
        net, optimizer: what trains.
        out_dir: the run folder (checkpoints, ``history.json``, ``curves.png``).
        train_items: MONAI dictionary items with an ``"image"`` and ``target_key``.
        train_transform: a randomisable MONAI transform applied to each item.
        loss: ``loss(output, target)`` (the output in float32).
        target_key: the items' key of the target.
        validate: returns the validation ``metric`` after an epoch (None: no validation, the best checkpoint is
            the lowest training loss).
        metric: the name of the validation metric, higher is better.
        config: the run's arguments; resuming a run made with other arguments (``epochs`` aside) is refused.
        epochs, lr, batch_size, seed, device, amp, workers: the usual.
        resume: continue from ``out_dir/checkpoint_latest.pt`` when there is one.
        progress: show a progress bar and a line per epoch.

    Returns:
        The history: one dict per epoch (``epoch``, ``train_loss`` and the metric).
    """
    from monai.data import DataLoader, Dataset
    from tqdm import tqdm

    scaler = make_scaler(device, amp)
    schedule = CosineLRScheduler(optimizer, lr, epochs, min_lr=0.0)
    history, best, start = [], -math.inf, 0
    latest = out_dir / CHECKPOINT_LATEST
    if resume and latest.is_file():
        state = load_checkpoint(latest)
        changed = sorted(k for k in config if k != "epochs" and state["config"].get(k) != config[k])
        if changed:
            raise MedMambaError(f"{latest}: cannot resume, the run differs in {', '.join(changed)}")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, best, start = list(state["history"]), float(state["best"]), int(state["epoch"])
    for epoch in range(start, epochs):
        s = epoch_seed(seed, epoch)
        set_determinism(seed=s)
        train_transform.set_random_state(seed=s)
        schedule.step(epoch)
        loader = DataLoader(Dataset(train_items, train_transform), batch_size=batch_size, shuffle=True,
                            num_workers=workers, generator=torch.Generator().manual_seed(s))
        net.train()
        total, count = 0.0, 0
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress):
            x, y = batch["image"].to(device), batch[target_key].to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                value = loss(net(x).float(), y)
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()
            total += value.item() * len(y)
            count += len(y)
        entry = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
        if validate is not None:
            entry[metric] = validate()
        best = finish_epoch(out_dir, entry, metric, history, best, progress, model=net.state_dict(),
                            optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), config=config)
    return history


def split_validation(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic split of ``cases`` into (train, validation); no validation when ``fraction`` is 0."""
    if fraction <= 0 or len(cases) < 2:
        return list(cases), []
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, int(round(fraction * len(cases)))))
    val = sorted(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in set(val)], [cases[i] for i in val]
