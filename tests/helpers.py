"""Helpers the tests share (fixtures and hooks stay in conftest.py): nnU-Net console runs, once-per-run session
data shared by pytest-xdist workers, and figures reported in the terminal summary."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
# ---------------------------------------------------------------------------------------------------------------
# Session-wide nnU-Net data (built once per test run, shared by pytest-xdist workers through a file lock)

NNUNET_TEST_TRAINERS = Path(__file__).parent / "nnunet_test_trainers"
PHANTOM_DATASET_ID = 901
PHANTOM_DATASET_NAME = "Dataset901_Phantom"


def session_root(tmp_path_factory) -> Path:
    """A folder shared by all xdist workers of this run (the workers' base temps share a parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build) -> dict:
    """``build(folder) -> dict`` (JSON-able) runs once per test run; other callers get its saved result."""
    from filelock import FileLock

    root = session_root(tmp_path_factory)
    done = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder = root / name
            folder.mkdir(exist_ok=True)
            done.write_text(json.dumps(build(folder)))
        return json.loads(done.read_text())


def run_command(args, env, expect_rc=0, timeout=600):
    """Run a console command the way a user would; on an unexpected exit code fail with its output."""
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=timeout)
    if proc.returncode != expect_rc:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode} (expected {expect_rc})\n"
                    f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}")
    return proc


def nnunet_subprocess_env(folders: dict, **extra) -> dict:
    """This process's environment with nnU-Net's folders set and, as a user might have it,
    ``nnUNet_extTrainer`` listing only the tests' own trainer folder: medmamba's startup hook must add its own.
    Small CPU settings: no data-augmentation workers, one export process, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(folders)
    env.update(nnUNet_extTrainer=str(NNUNET_TEST_TRAINERS), nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               # nnU-Net sets torch's threads to the core count on CPU; spinning OpenMP threads on a loaded
               # machine slow the scan's many small ops down by 10x or more.
               OMP_WAIT_POLICY="PASSIVE")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def plan_phantom_in_process(root: Path, dataset_id: int, name: str, seed: int) -> tuple[Path, Path]:
    """A 3-case 3D phantom (20 x 28 x 28, 2 labels) written under ``root``'s nnU-Net folders and planned by
    nnU-Net's planner in this process (its folders set only meanwhile, torch's thread count restored).

    Returns:
        (the raw data set folder, its nnUNetPlans.json).
    """
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )

    from medmamba.datasets.phantom import write_nnunet_phantom_3d

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / var).mkdir(exist_ok=True)
            mp.setenv(var, str(root / var))
        mp.setenv("nnUNet_n_proc_DA", "1")
        raw = write_nnunet_phantom_3d(root / "nnUNet_raw", dataset_id, name, n_cases=3, shape=(20, 28, 28),
                                      spacing=(2.5, 1.0, 1.0), seed=seed, num_labels=2)
        extract_fingerprint_dataset(dataset_id, num_processes=1, check_dataset_integrity=True)
        plan_experiment_dataset(dataset_id)
    torch.set_num_threads(threads)  # nnU-Net's planner changes it
    return raw, root / "nnUNet_preprocessed" / raw.name / "nnUNetPlans.json"


def official_state_dict(case: dict, seed: int = 0, scale: float = 1.0) -> dict:
    """Random tensors (``scale`` times standard normal) under the official names and shapes of a case of
    ``tests/data/official_keys/<entry>.json``; names that held one tensor share it."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {k: scale * torch.randn(shape, generator=generator) for k, shape in case["keys"].items()}
    for names in case["aliases"]:
        for name in names[1:]:
            state[name] = state[names[0]]
    return state


# ---------------------------------------------------------------------------------------------------------------
# Figures that tests report in the terminal summary: each test process appends JSON lines to a file in
# $MEDMAMBA_TEST_REPORTS (made by the main process, inherited by pytest-xdist workers); the main process sums them.

REPORTS_VAR = "MEDMAMBA_TEST_REPORTS"


def report_row(kind: str, row: dict) -> None:
    """Record one measured row for the terminal summary (``kind`` names the figure, e.g. ``bad_inputs``)."""
    folder = os.environ.get(REPORTS_VAR)
    if folder and Path(folder).is_dir():
        with open(Path(folder) / f"{kind}-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
