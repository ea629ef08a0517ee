"""Seconds per training iteration and peak memory of every medmamba trainer against nnUNetTrainer, same plans.

One training iteration is the trainer's own ``train_step`` (forward, deep-supervision Dice+CE loss, backward,
gradient clipping, its optimizer's step; mixed precision on CUDA) on random data of the plan's patch and batch
size. Each trainer runs in its own subprocess so that peak memory is its own.

- CPU (default without a GPU): a small 3d_fullres plan (patch 20x32x32 at 2.5x1x1 mm, 4 stages), one thread;
  ``--configuration 2d``: patch 64x64, 4 stages.
- CUDA: a realistic 3d_fullres plan (patch 128^3, 6 stages, 32..320 features, batch 2); ``--configuration 2d``:
  patch 512x512, 8 stages, 32..512 features, batch 2.

Writes ``benchmarks/results/trainers-<device>.json`` (``trainers-<device>-2d.json`` for 2d; absolute figures and
ratios to nnUNetTrainer) and a PNG.
Goal (issue 5): MHSVMTrainer at most 1.2x nnUNetTrainer's time per iteration on the CUDA 3d_fullres plan.

    python benchmarks/trainers.py [--device cpu|cuda] [--configuration 3d_fullres|2d] [--iters N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BASELINE = "nnUNetTrainer"
TRAINERS = ("MHSVMTrainer", "VMUNetTrainer", "UMambaBotTrainer", "UMambaEncTrainer", "SegMambaTrainer",
            "LightMUNetTrainer", "SwinUMambaTrainer", "MambaOutTrainer")
CONFIGURATIONS = ("3d_fullres", "2d")


def plans_for(device: str, configuration: str = "3d_fullres") -> dict:
    """nnU-Net plans with one configuration (``3d_fullres`` or ``2d``), as nnUNetv2_plan_and_preprocess writes
    them."""
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"configuration {configuration!r}: expected one of {CONFIGURATIONS}")
    if configuration == "2d" and device == "cuda":
        patch, spacing, batch = [512, 512], [1.0, 1.0], 2
        features, strides = [32, 64, 128, 256, 512, 512, 512, 512], [[1, 1]] + [[2, 2]] * 7
        kernels = [[3, 3]] * 8
    elif configuration == "2d":
        patch, spacing, batch = [64, 64], [1.0, 1.0], 2
        features, strides = [32, 64, 128, 256], [[1, 1]] + [[2, 2]] * 3
        kernels = [[3, 3]] * 4
    elif device == "cuda":
        patch, spacing, batch = [128, 128, 128], [1.0, 1.0, 1.0], 2
        features, strides = [32, 64, 128, 256, 320, 320], [[1, 1, 1]] + [[2, 2, 2]] * 5
        kernels = [[3, 3, 3]] * 6
    else:
        patch, spacing, batch = [20, 32, 32], [2.5, 1.0, 1.0], 2
        features, strides = [32, 64, 128, 256], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
        kernels = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    n, dims = len(features), len(patch)
    volume_spacing, volume_shape = [1.0] * (3 - dims) + spacing, [1] * (3 - dims) + patch  # 2d: slices of a volume
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": features, "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
            "kernel_sizes": kernels, "strides": strides, "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    config = {
        "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch, "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": arch, "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset999_Benchmark", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": volume_spacing, "original_median_shape_after_transp": volume_shape,
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1.0, "mean": 0.5, "median": 0.5, "min": 0.0, "percentile_00_5": 0.0,
                  "percentile_99_5": 1.0, "std": 0.2}},
        "configurations": {configuration: config},
    }


DATASET_JSON = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "organ1": 1, "organ2": 2},
                "numTraining": 1, "file_ending": ".nii.gz"}


def measure_one(name: str, device_type: str, iters: int, warmup: int, configuration: str = "3d_fullres") -> dict:
    """Time ``iters`` train steps of trainer ``name`` in this process; peak memory over the steps."""
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    if device_type == "cpu":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:  # nnU-Net's folders: the trainer writes its log there
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[var] = tmp
        trainer_class = recursive_find_trainer_class_by_name(name)
        plans = {**plans_for(device_type, configuration), "continue_training": False}  # nnU-Net 2.8 reads this
        trainer = trainer_class(plans, configuration, 0, DATASET_JSON, torch.device(device_type))
        rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if device_type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.network = trainer.build_network_architecture(
            trainer.plans_manager, trainer.configuration_manager, 1, trainer.label_manager.num_segmentation_heads,
            trainer.enable_deep_supervision).to(trainer.device)
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        trainer.loss = trainer._build_loss()
        batch, patch = trainer.configuration_manager.batch_size, trainer.configuration_manager.patch_size
        with torch.no_grad():
            outputs = trainer.network(torch.zeros(batch, 1, *patch, device=trainer.device))
        generator = torch.Generator().manual_seed(0)
        data = torch.randn(batch, 1, *patch, generator=generator)
        # one target per deep-supervision output, or one target (a trainer without deep supervision)
        target = [torch.randint(0, 3, (batch, 1, *o.shape[2:]), generator=generator).float()
                  for o in (outputs if trainer.enable_deep_supervision else [outputs])]
        target = target if trainer.enable_deep_supervision else target[0]

        def step() -> float:
            start = time.perf_counter()
            trainer.train_step({"data": data, "target": target})  # returns the loss on the CPU: synchronised
            return time.perf_counter() - start

        for _ in range(warmup):
            step()
        times = [step() for _ in range(iters)]
    if device_type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # growth of the process's high-water mark (KiB on Linux) from before the network was built
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_start) / 1024
    return {"s_per_iter": statistics.median(times), "s_per_iter_min": min(times), "peak_mem_mb": peak_mb,
            "params_m": sum(p.numel() for p in trainer.network.parameters()) / 1e6,
            "skipped_nonfinite_steps": getattr(trainer, "nonfinite_steps_in_a_row", 0)}


def measure_in_subprocess(name: str, device: str, iters: int, configuration: str = "3d_fullres",
                          timeout: float | None = None) -> dict:
    """:func:`measure_one` in a fresh process (so that peak memory is the trainer's own).

    Args:
        name: an nnU-Net trainer class name.
        device: "cpu" or "cuda".
        iters: timed iterations (after the warm-up ones).
        configuration: "3d_fullres" or "2d" (see :func:`plans_for`).
        timeout: seconds after which the measurement is abandoned.

    Returns:
        The measurement, or ``{"error": <the last line of the child's stderr, or the time-out>}``.
    """
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, __file__, "--device", device, "--configuration", configuration, "--iters", str(iters),
               "--one", name]
    try:
        proc = subprocess.run(command, capture_output=True,
                              encoding="utf-8", errors="replace", env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not measured within {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def with_ratios(measured: dict, base: dict) -> dict:
    """``measured`` with ``time_ratio`` and ``mem_ratio`` to the baseline's figures (none for an error)."""
    if "error" in measured or "error" in base:
        return dict(measured)
    return {**measured, "time_ratio": measured["s_per_iter"] / base["s_per_iter"],
            "mem_ratio": measured["peak_mem_mb"] / base["peak_mem_mb"]}


def device_slug(device_type: str) -> str:
    import torch

    if device_type == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def plan_description(device: str, configuration: str = "3d_fullres") -> str:
    """One line for a plan: configuration, patch, batch and stages."""
    config = plans_for(device, configuration)["configurations"][configuration]
    return (f"{configuration} patch {'x'.join(map(str, config['patch_size']))}, batch {config['batch_size']}, "
            f"{len(config['architecture']['arch_kwargs']['features_per_stage'])} stages")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["trainers"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "time_ratio", "time per iteration / nnUNetTrainer"),
                           (axes[1], "mem_ratio", "peak memory / nnUNetTrainer")):
        values = [result["trainers"][n][key] for n in names]
        ax.barh(names, values, color="#4c72b0")
        ax.axvline(1.0, color="k", lw=1)
        if key == "time_ratio":
            ax.axvline(1.2, color="#c44e52", ls="--", lw=1, label="goal for MHSVMTrainer (1.2x)")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
    fig.suptitle(f"nnU-Net trainers on {result['device']}: {result['plan']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--configuration", choices=CONFIGURATIONS, default="3d_fullres")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per trainer (CPU 3, CUDA 10)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one trainer, print JSON
    args = parser.parse_args()
    import torch

    from medmamba.evaluation.efficiency import machine_description

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    iters = args.iters or (10 if device == "cuda" else 3)
    warmup = 3 if device == "cuda" else 1
    if args.one:
        print("RESULT" + json.dumps(measure_one(args.one, device, iters, warmup, args.configuration)))
        return 0

    measured = {}
    for name in (BASELINE, *TRAINERS):
        measured[name] = measure_in_subprocess(name, device, iters, args.configuration)
        print(f"{name:20s} {measured[name]}", flush=True)
    base = measured[BASELINE]
    result = {
        "device": device_slug(device),
        "plan": plan_description(device, args.configuration),
        "machine": machine_description(device),
        "torch": torch.__version__,
        "threads": 1 if device == "cpu" else None,
        "iters": iters,
        "command": f"python benchmarks/trainers.py --device {device} --configuration {args.configuration} "
                   f"--iters {iters}",
        "baseline": {BASELINE: base},
        "trainers": {name: with_ratios(m, base) for name, m in measured.items() if name != BASELINE},
        "goal": "MHSVMTrainer time_ratio <= 1.2 on the CUDA 3d_fullres 128^3 plan",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.configuration == "3d_fullres" else f"-{args.configuration}"
    out = RESULTS / f"trainers-{result['device']}{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if all("error" not in m for m in result["trainers"].values()):
        plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
