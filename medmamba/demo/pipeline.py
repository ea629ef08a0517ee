"""The demo pipeline: every part of medmamba, end to end, on generated data, through the real commands.

Steps run in order; each one records completion in ``<output_dir>/demo_state.json``. A second run with the same
configuration skips the completed steps; a step that did not complete has its outputs removed and runs again; a
different configuration starts over, removing only what the demo wrote. Nothing from two configurations is mixed.

The console shows one line per step, with a progress bar while it runs; everything the commands print goes to
``<output_dir>/logs/<step>.log``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml
from tqdm import tqdm

from medmamba.errors import MedMambaError

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")
BIN = Path(sys.executable).parent
DEMO_TRAINERS = Path(__file__).with_name("ext_trainer")  # medmamba_demo_trainers: the budgeted <Trainer>_demo
DEMO_TRAINER_SUFFIX = "_demo"
EPOCH_LINE = re.compile(r".*Epoch (\d+)$")  # nnU-Net logs "<time>: Epoch N" when epoch N starts


def load_config(path: str | os.PathLike | None, device: str | None = None) -> dict:
    """Read the demo's YAML configuration.

    Args:
        path: the YAML file; the packaged ``default.yaml`` when None or empty.
        device: overrides the configuration's ``device``. On ``"cuda"`` the epochs (and nnU-Net's iterations per
            epoch) are multiplied by ``cuda_budget_factor`` (default 1).

    Returns:
        The configuration dict.

    Raises:
        MedMambaError: the file cannot be read or parsed, or lacks the segmentation, classification or
            restoration section.
    """
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise MedMambaError(f"{path}: cannot read the demo configuration ({err})") from None
    if not isinstance(cfg, dict) or not {"segmentation", "classification", "restoration"} <= cfg.keys():
        raise MedMambaError(f"{path}: needs the sections segmentation, classification and restoration")
    if device:
        cfg["device"] = device
    if cfg["device"] == "cuda":
        factor = cfg.get("cuda_budget_factor", 1)
        cfg["segmentation"]["epochs"] *= factor
        cfg["segmentation"]["iterations_per_epoch"] *= factor
        cfg["classification"]["epochs"] *= factor
        cfg["restoration"]["epochs"] *= factor
    return cfg


def config_hash(cfg: dict) -> str:
    """First 16 hex digits of the SHA-256 of ``cfg`` as sorted-key JSON: what tells a changed configuration."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Step:
    """A demo step: ``name`` (its console label and state key), ``outputs`` (the paths it writes, removed before it
    runs again or when the configuration changes) and ``run``."""

    name: str
    outputs: Callable[["Demo"], list[Path]]
    run: Callable[["Demo"], None]


class Demo:
    """The demo run: its configuration, folders (nnU-Net's raw, preprocessed and results under ``out/nnunet``) and
    steps; :meth:`run` runs the steps not yet done and returns the report's path.

    Args:
        cfg: the configuration from :func:`load_config`.
        out: the output folder; the configuration's ``output_dir`` when None.
    """

    def __init__(self, cfg: dict, out: Path | None = None):
        self.cfg = cfg
        self.out = Path(out or cfg["output_dir"]).resolve()
        seg = cfg["segmentation"]
        self.dataset = f"Dataset{seg['dataset_id']:03d}_{seg['dataset_name']}"
        self.nnunet = {k: self.out / "nnunet" / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        self.raw = self.nnunet["nnUNet_raw"] / self.dataset
        self.logs = self.out / "logs"
        self.bar: tqdm | None = None  # the running step's progress bar

    # ---------------------------------------------------------------- helpers
    @property
    def seg(self) -> dict:
        return self.cfg["segmentation"]

    def demo_trainer(self, trainer: str) -> str:
        return trainer + DEMO_TRAINER_SUFFIX

    def results_folder(self, trainer: str) -> Path:
        return (self.nnunet["nnUNet_results"] / self.dataset
                / f"{self.demo_trainer(trainer)}__nnUNetPlans__{self.seg['configuration']}")

    def env(self) -> dict:
        env = os.environ.copy()
        env.update({k: str(v) for k, v in self.nnunet.items()})
        ext = [p for p in env.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        env["nnUNet_extTrainer"] = os.pathsep.join([*ext, str(DEMO_TRAINERS)])
        seg = self.seg
        env["MEDMAMBA_DEMO_BUDGET"] = json.dumps({"trainers": seg["trainers"], "recipe": {
            "num_epochs": seg["epochs"], "num_iterations_per_epoch": seg["iterations_per_epoch"],
            "num_val_iterations_per_epoch": seg["val_iterations_per_epoch"]}})
        env.setdefault("nnUNet_n_proc_DA", "2" if self.cfg["device"] == "cpu" else "8")
        env["nnUNet_compile"] = "false"
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin against the trainer's
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def sh(self, name: str, args: list[str]) -> None:
        """Run a command with its output in logs/<name>.log; nnU-Net's epoch lines advance the step's bar; fail with
        one line naming the log."""
        log = self.logs / f"{name}.log"
        with open(log, "a", encoding="utf-8") as fh, subprocess.Popen(
                args, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                encoding="utf-8", errors="replace", bufsize=1) as proc:
            fh.write(f"$ {' '.join(args)}\n")
            for line in proc.stdout:
                fh.write(line)
                epoch = EPOCH_LINE.match(line.strip())
                if epoch and self.bar is not None:
                    self.bar.update(int(epoch[1]) + 1 - self.bar.n)
        if proc.returncode:
            raise MedMambaError(f"{args[0]} failed (exit {proc.returncode}); see {log}")

    def medmamba(self, name: str, *args: str) -> None:
        self.sh(name, [sys.executable, "-m", "medmamba", *args])

    # ---------------------------------------------------------------- steps
    def make_data(self) -> None:
        from medmamba.datasets import phantom

        seg, seed = self.seg, self.cfg["seed"]
        shape, spacing = tuple(seg["shape"]), tuple(seg["spacing"])
        raw = phantom.write_nnunet_phantom_3d(self.nnunet["nnUNet_raw"], seg["dataset_id"], seg["dataset_name"],
                                              n_cases=seg["n_train"], shape=shape, spacing=spacing, seed=seed,
                                              num_labels=seg["num_labels"])
        for folder in ("imagesTs", "labelsTs"):
            (raw / folder).mkdir()
        for i in range(seg["n_test"]):
            image, label = phantom.phantom_3d(shape, spacing, seg["num_labels"], seed=10_000 + seed + i)
            phantom.write_sitk(image, raw / "imagesTs" / f"test_{i:03d}_0000.nii.gz", spacing)
            phantom.write_sitk(label, raw / "labelsTs" / f"test_{i:03d}.nii.gz", spacing)
        cls, res = self.cfg["classification"], self.cfg["restoration"]
        phantom.write_classification_2d(self.out / "data" / "classification", n_per_class=cls["n_per_class"],
                                        shape=(cls["image_size"],) * 2, seed=seed)
        phantom.write_restoration_pairs(self.out / "data" / "restoration", n_cases=res["n_cases"],
                                        shape=(res["image_size"],) * 2, degradation=res["degradation"], seed=seed)

    def plan(self) -> None:
        self.sh("plan_and_preprocess", [str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(self.seg["dataset_id"]),
                                        "-c", self.seg["configuration"], "-np", "2", "--verify_dataset_integrity"])

    def train(self, trainer: str) -> None:
        seg = self.seg
        self.sh(f"train_{trainer}", [str(BIN / "nnUNetv2_train"), str(seg["dataset_id"]), seg["configuration"],
                                     str(seg["fold"]), "-tr", self.demo_trainer(trainer),
                                     "-device", self.cfg["device"]])

    def predict(self, trainer: str) -> None:
        seg = self.seg
        self.sh(f"predict_{trainer}", [
            str(BIN / "nnUNetv2_predict"), "-i", str(self.raw / "imagesTs"),
            "-o", str(self.out / "predictions" / trainer),
            "-d", str(seg["dataset_id"]), "-c", seg["configuration"], "-f", str(seg["fold"]),
            "-tr", self.demo_trainer(trainer), "-device", self.cfg["device"], "-npp", "1", "-nps", "1"])

    def evaluate(self, trainer: str) -> None:
        self.medmamba(f"evaluate_{trainer}", "evaluate", "seg", "--pred", str(self.out / "predictions" / trainer),
                      "--ref", str(self.raw / "labelsTs"), "--dataset-json", str(self.raw / "dataset.json"),
                      "--nsd-tolerance", str(self.seg["nsd_tolerance_mm"]),
                      "-o", str(self.out / "evaluation" / trainer))

    def slicer(self) -> None:
        trainer = self.seg["trainers"][0]
        model = self.out / "slicer" / f"{trainer}.zip"
        self.medmamba("export_slicer", "export-slicer", str(self.results_folder(trainer)), "-o", str(model),
                      "--folds", str(self.seg["fold"]))
        first = sorted((self.raw / "imagesTs").iterdir())[0]
        segmentation = self.out / "slicer" / first.name.replace("_0000.nii.gz", ".seg.nrrd")  # a file beside the zip
        self.medmamba("predict_slicer", "predict", "--model", str(model), "-i", str(first),
                      "-o", str(segmentation), "--format", "seg.nrrd", "--device", self.cfg["device"])

    def classification(self) -> None:
        cls, run = self.cfg["classification"], self.out / "classification"
        self.medmamba("train_cls", "train", "cls", "--model", cls["model"], "--preset", cls["preset"],
                      "--data", str(self.out / "data" / "classification"),
                      "--epochs", str(cls["epochs"]), "--batch-size", str(cls["batch_size"]),
                      "--seed", str(self.cfg["seed"]), "--device", self.cfg["device"], "--out", str(run / "train"))
        self.medmamba("evaluate_cls", "evaluate", "cls", "--pred", str(run / "train" / "predictions.csv"),
                      "--ref", str(run / "train" / "labels.csv"), "-o", str(run / "evaluation"))

    def restoration(self) -> None:
        res, run = self.cfg["restoration"], self.out / "restoration"
        self.medmamba("train_restore", "train", "restore", "--model", res["model"], "--preset", res["preset"],
                      "--data", str(self.out / "data" / "restoration"), "--degradation", res["degradation"],
                      "--epochs", str(res["epochs"]), "--batch-size", str(res["batch_size"]),
                      "--lr", str(res["lr"]),
                      "--seed", str(self.cfg["seed"]), "--device", self.cfg["device"], "--out", str(run / "train"))
        clean = str(self.out / "data" / "restoration" / "test" / "clean")
        self.medmamba("evaluate_restore", "evaluate", "restore", "--pred", str(run / "train" / "predictions"),
                      "--ref", clean, "-o", str(run / "evaluation"))
        # the baseline a restorer must beat: its degraded inputs, measured the same way
        self.medmamba("evaluate_restore", "evaluate", "restore", "--pred", str(run / "train" / "inputs"),
                      "--ref", clean, "-o", str(run / "evaluation_inputs"))

    def efficiency(self) -> None:
        from medmamba.demo.efficiency import compare_plans_networks

        compare_plans_networks(self)

    def report(self) -> None:
        from medmamba.demo.report import write_report

        write_report(self)

    # ---------------------------------------------------------------- orchestration
    def steps(self) -> list[Step]:
        trainers = self.seg["trainers"]
        steps = [
            Step("data", lambda d: [d.out / "data", d.raw], Demo.make_data),
            Step("plan", lambda d: [d.nnunet["nnUNet_preprocessed"] / d.dataset], Demo.plan),
        ]
        for t in trainers:
            steps.append(Step(f"train {t}", lambda d, t=t: [d.results_folder(t)], lambda d, t=t: d.train(t)))
            steps.append(Step(f"predict {t}", lambda d, t=t: [d.out / "predictions" / t], lambda d, t=t: d.predict(t)))
            steps.append(Step(f"evaluate {t}", lambda d, t=t: [d.out / "evaluation" / t], lambda d, t=t: d.evaluate(t)))
        steps += [
            Step("slicer export", lambda d: [d.out / "slicer"], Demo.slicer),
            Step("classification", lambda d: [d.out / "classification"], Demo.classification),
            Step("restoration", lambda d: [d.out / "restoration"], Demo.restoration),
            Step("efficiency", lambda d: [d.out / "efficiency.json"], Demo.efficiency),
            Step("report", lambda d: [d.out / "report.html"], Demo.report),
        ]
        return steps

    def run(self) -> Path:
        state_file = self.out / "demo_state.json"
        digest = config_hash(self.cfg)
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else None
        steps = self.steps()
        if state and state.get("config") != digest:
            print(f"medmamba demo: the configuration changed; removing the earlier run's outputs in {self.out}")
            for step in steps:
                remove(step.outputs(self))
            remove([self.logs, state_file, self.out / "report.html"])
            state = {"config": digest, "done": {}}
        if state is None and self.out.exists() and any(self.out.iterdir()):
            raise MedMambaError(f"{self.out}: exists and was not made by `medmamba demo`; choose another output_dir")
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        state = state or {"config": digest, "done": {}}
        state_file.write_text(json.dumps(state, indent=2))
        print(f"medmamba demo: {len(steps)} steps on {self.cfg['device']}, logs in {self.logs}", flush=True)
        for i, step in enumerate(steps, 1):
            label = f"[{i:2d}/{len(steps)}] {step.name}"
            if step.name in state["done"]:
                print(f"{label}: done in an earlier run, reused", flush=True)
                continue
            remove(step.outputs(self))
            start = time.perf_counter()
            log = self.logs / f"{step.name.replace(' ', '_')}.log"
            with console() as screen, log_output(log):
                epochs = self.seg["epochs"] if step.name.startswith("train") else None
                self.bar = tqdm(total=epochs, desc=label, unit="epoch", leave=False, file=screen, dynamic_ncols=True,
                                mininterval=1.0, bar_format=None if epochs else f"{{desc}}: running (logs/{log.name})")
                try:
                    with self.bar:
                        step.run(self)
                finally:
                    self.bar = None
            state["done"][step.name] = round(time.perf_counter() - start, 1)
            state_file.write_text(json.dumps(state, indent=2))
            print(f"{label}: {state['done'][step.name]:.0f} s", flush=True)
        print(f"medmamba demo: report written to {self.out / 'report.html'}", flush=True)
        return self.out / "report.html"


def remove(paths: list[Path]) -> None:
    """Delete each path, a folder with its contents; paths that do not exist are skipped."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@contextlib.contextmanager
def console():
    """A text stream on the console as it is now (a duplicate of file descriptor 1), for progress bars that must
    stay on screen while ``log_output`` sends everything else to a log."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield stream
    finally:
        stream.close()


@contextlib.contextmanager
def log_output(log: Path):
    """What in-process steps and the libraries they call print, C++ code included (file descriptors 1 and 2), goes
    to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
