"""Every command on bad inputs, as a user could give them: each must be refused with a non-zero exit and one line
(no traceback) naming the file or option, leave no output behind, change no input and delete no user file.

Each case builds its own folder (copies of good data, then one thing broken), hashes everything in it, runs the
command, and compares: new paths are partial outputs, missing paths lost files, changed hashes changed inputs.
Most cases call ``medmamba.cli.main`` in this process (an exception escaping it is a traceback); ``test_console``
runs the issue's findings through the installed ``medmamba`` console command. The figures are summed in the
terminal summary (tests/conftest.py); ``test_hypothesis_*`` fuzz image headers and package members.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import report_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medmamba.cli import main as cli_main

VENV_BIN = Path(sys.executable).parent


# ---------------------------------------------------------------------------------------------------------------
# the harness


def snapshot(root: Path) -> dict[str, str]:
    """Path -> content signature for everything under ``root`` (links are not followed)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "folder"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Outcome:
    rc: int | None
    stderr: str
    traceback: str | None
    new: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def last_line(self) -> str:
        lines = [line.strip() for line in self.stderr.replace("\r", "\n").splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_in_process(argv: list[str], root: Path) -> Outcome:
    """``medmamba.cli.main(argv)`` with stderr captured; an exception escaping it is recorded as a traceback."""
    before = snapshot(root)
    err = io.StringIO()
    rc, trace = None, None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli_main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's usage errors
            rc = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # noqa: BLE001  (what the sweep is looking for)
            trace = traceback.format_exc()
    return _compare(Outcome(rc, err.getvalue(), trace), before, snapshot(root))


def run_console(argv: list[str], root: Path, env: dict) -> Outcome:
    """The installed console command, as a user runs it."""
    before = snapshot(root)
    proc = subprocess.run([str(VENV_BIN / "medmamba"), *map(str, argv)], cwd=root, env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300)
    trace = proc.stderr if "Traceback (most recent call last)" in proc.stderr else None
    return _compare(Outcome(proc.returncode, proc.stderr, trace), before, snapshot(root))


def _compare(outcome: Outcome, before: dict, after: dict) -> Outcome:
    outcome.new = sorted(set(after) - set(before))
    outcome.lost = sorted(set(before) - set(after))
    outcome.changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    return outcome


def check_refused(outcome: Outcome, named: str, command: str, case: str, kind: str = "in-process") -> None:
    """Record the outcome for the summary, then assert the sweep's properties."""
    report_row("bad_inputs", {"kind": kind, "command": command, "case": case, "rc": outcome.rc,
                              "traceback": outcome.traceback is not None, "named": named in outcome.last_line,
                              "new": outcome.new, "lost": outcome.lost, "changed": outcome.changed})
    assert outcome.traceback is None, outcome.traceback
    assert outcome.rc not in (0, None), f"exit {outcome.rc}; stderr:\n{outcome.stderr[-2000:]}"
    assert named in outcome.last_line, f"{named!r} not in the last line: {outcome.last_line!r}"
    assert "Traceback" not in outcome.stderr
    assert not outcome.new, f"output left: {outcome.new}"
    assert not outcome.lost, f"files deleted: {outcome.lost}"
    assert not outcome.changed, f"files changed: {outcome.changed}"


# ---------------------------------------------------------------------------------------------------------------
# good data, built once; each case copies what it needs


def write_image(path: Path, array: np.ndarray, spacing=(2.0, 1.0, 1.0)) -> Path:
    """A numpy-ordered array through SimpleITK (spacing in numpy order)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing[-array.ndim:])])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))
    return path


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def nrrd_with_header(path: Path, sizes, data: bytes, extra: str = "") -> Path:
    """A raw NRRD whose header says ``sizes`` whatever ``data`` holds."""
    header = (f"NRRD0004\ntype: float\ndimension: {len(sizes)}\nsizes: {' '.join(map(str, sizes))}\n"
              f"encoding: raw\nendian: little\n{extra}\n")
    path.write_bytes(header.encode() + data)
    return path


def mha_with_header(path: Path, sizes, data: bytes) -> Path:
    header = (f"ObjectType = Image\nNDims = {len(sizes)}\nDimSize = {' '.join(map(str, sizes))}\n"
              f"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + data)
    return path


def nifti_with_dims(path: Path, array: np.ndarray, dims) -> Path:
    """An uncompressed NIfTI holding ``array``'s voxels whose header claims ``dims``."""
    image = nib.Nifti1Image(array, np.eye(4))
    image.header.set_data_shape(dims)
    header = image.header.binaryblock
    path.write_bytes(header + b"\0" * (352 - len(header)) + np.ascontiguousarray(array.T).tobytes())
    return path


SHAPE = (6, 10, 10)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_package) -> Path:
    """Good inputs for every command, under one folder (see the layout in the code)."""
    from medmamba.datasets.phantom import write_classification_2d, write_restoration_pairs

    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    for case in ("a", "b"):  # convert folder: images/<case>.nii.gz, labels/<case>.nii.gz
        write_image(root / "folder" / "images" / f"{case}.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        write_image(root / "folder" / "labels" / f"{case}.nii.gz", rng.integers(0, 3, SHAPE).astype(np.uint8))
        # evaluate seg: ref and pred label maps
        write_image(root / "seg" / "ref" / f"{case}.nii.gz", rng.integers(0, 3, SHAPE).astype(np.uint8))
        write_image(root / "seg" / "pred" / f"{case}.nii.gz", rng.integers(0, 3, SHAPE).astype(np.uint8))
        # evaluate restore: 2D images
        clean = rng.normal(size=(16, 16)).astype(np.float32)
        write_image(root / "restore" / "ref" / f"{case}.nii.gz", clean)
        write_image(root / "restore" / "pred" / f"{case}.nii.gz", clean + 0.1)
        # convert png2d
        (root / "png" / "images").mkdir(parents=True, exist_ok=True)
        (root / "png" / "masks").mkdir(parents=True, exist_ok=True)
        rgb = rng.integers(0, 255, (12, 10, 3)).astype(np.uint8)
        Image.fromarray(rgb).save(root / "png" / "images" / f"{case}.png")
        mask = np.zeros((12, 10), np.uint8)
        mask[2:6, 2:6] = 255
        Image.fromarray(mask).save(root / "png" / "masks" / f"{case}.png")
    (root / "seg" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "one": 1, "two": 2}}))
    # convert msd: a two-modality task
    task = root / "msd" / "Task01_Test"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
    training = []
    for i in range(2):
        nib.save(nib.Nifti1Image(rng.normal(size=(10, 10, 6, 2)).astype(np.float32), np.eye(4)),
                 task / "imagesTr" / f"t_{i}.nii.gz")
        nib.save(nib.Nifti1Image(rng.integers(0, 2, (10, 10, 6)).astype(np.uint8), np.eye(4)),
                 task / "labelsTr" / f"t_{i}.nii.gz")
        training.append({"image": f"./imagesTr/t_{i}.nii.gz", "label": f"./labelsTr/t_{i}.nii.gz"})
    (task / "dataset.json").write_text(json.dumps({"modality": {"0": "T2", "1": "ADC"},
                                                   "labels": {"0": "background", "1": "gland"},
                                                   "training": training}))
    # evaluate cls
    (root / "cls_eval").mkdir()
    (root / "cls_eval" / "predictions.csv").write_text("case,prob_x,prob_y\nc1,0.9,0.1\nc2,0.2,0.8\n")
    (root / "cls_eval" / "labels.csv").write_text("case,label\nc1,x\nc2,y\n")
    # training data
    write_classification_2d(root / "train_cls", n_per_class=3, shape=(16, 16), seed=0, num_classes=2)
    write_restoration_pairs(root / "train_res", n_cases=3, shape=(16, 16), seed=0, std=0.1)
    # a model package, its results folder, and an image it takes
    shutil.copy(tiny_model_package["zip"], root / "model.zip")
    shutil.copytree(tiny_model_package["results"], root / "results" / "Dataset913_TinyModel" /
                    Path(tiny_model_package["results"]).name)
    (root / "predict_in").mkdir()
    shutil.copy(tiny_model_package["image"], root / "predict_in" / "scan.nii.gz")
    return root


# ---------------------------------------------------------------------------------------------------------------
# the bad inputs: each names the command, the parts of the good data it copies, and breaks one thing; it returns
# the command line and what the last line must name


@dataclass
class Case:
    command: str
    uses: tuple[str, ...]
    setup: object  # (root) -> (argv, named)


CASES: dict[str, Case] = {}


def bad(command: str, name: str, *uses: str):
    def register(setup):
        CASES[f"{command}: {name}"] = Case(command, uses, setup)
        return setup
    return register


def with_nan(path: Path, value=np.nan) -> Path:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array.flat[:3] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), useCompression=True)
    return path


def relabel(path: Path, value, dtype=np.int16) -> Path:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(dtype)
    array.flat[0] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), useCompression=True)
    return path


def user_file(folder: Path, name: str = "my notes.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("the user's own file")
    return folder


def readonly_place(root: Path) -> Path:
    """A folder nothing can be written in: a read-only folder, or /sys for root (who ignores permissions)."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked


# convert folder ------------------------------------------------------------------------------------------------

def convert_folder(root: Path, *extra) -> list:
    return ["convert", "folder", "--images", root / "folder" / "images", "--labels", root / "folder" / "labels",
            "--name", "Bad", "--id", "950", "--raw", root / "raw", *extra]


@bad("convert", "image with NaN voxels", "folder")
def _(root):
    return convert_folder(root), str(with_nan(root / "folder" / "images" / "a.nii.gz"))


@bad("convert", "image with infinite voxels", "folder")
def _(root):
    return convert_folder(root), str(with_nan(root / "folder" / "images" / "b.nii.gz", np.inf))


@bad("convert", "label value -1", "folder")
def _(root):
    return convert_folder(root), str(relabel(root / "folder" / "labels" / "a.nii.gz", -1))


@bad("convert", "non-integer label value", "folder")
def _(root):
    return convert_folder(root), str(relabel(root / "folder" / "labels" / "b.nii.gz", 0.5, np.float32))


@bad("convert", "label map with more labels than the data set", "folder")
def _(root):
    return (convert_folder(root, "--label", "background=0", "--label", "organ=1"),
            str(root / "folder" / "labels" / "a.nii.gz"))


@bad("convert", "label map with NaN", "folder")
def _(root):
    return convert_folder(root), str(with_nan(root / "folder" / "labels" / "a.nii.gz"))


@bad("convert", "truncated NIfTI", "folder")
def _(root):
    return convert_folder(root), str(truncate(root / "folder" / "images" / "b.nii.gz"))


@bad("convert", "truncated NRRD", "folder")
def _(root):
    path = root / "folder" / "images" / "a.nii.gz"
    nrrd = write_image(root / "folder" / "images" / "a.nrrd", sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    path.unlink()
    return convert_folder(root), str(truncate(nrrd, 0.9))


@bad("convert", "truncated MHA", "folder")
def _(root):
    path = root / "folder" / "labels" / "a.nii.gz"
    mha = write_image(root / "folder" / "labels" / "a.mha", sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    path.unlink()
    return convert_folder(root), str(truncate(mha, 0.9))


@bad("convert", "NRRD header claims more voxels than it holds", "folder")
def _(root):
    (root / "folder" / "images" / "a.nii.gz").unlink()
    data = np.zeros(SHAPE, np.float32).tobytes()
    return convert_folder(root), str(nrrd_with_header(root / "folder" / "images" / "a.nrrd", (10, 10, 12), data))


@bad("convert", "MHA header claims more voxels than it holds", "folder")
def _(root):
    (root / "folder" / "images" / "b.nii.gz").unlink()
    data = np.zeros(SHAPE, np.float32).tobytes()
    return convert_folder(root), str(mha_with_header(root / "folder" / "images" / "b.mha", (10, 10, 12), data))


@bad("convert", "NIfTI header claims more voxels than it holds", "folder")
def _(root):
    (root / "folder" / "images" / "a.nii.gz").unlink()
    return convert_folder(root), str(nifti_with_dims(root / "folder" / "images" / "a.nii",
                                                     np.zeros((10, 10, 6), np.float32), (10, 10, 12)))


@bad("convert", "zero-size image file", "folder")
def _(root):
    (root / "folder" / "images" / "b.nii.gz").write_bytes(b"")
    return convert_folder(root), str(root / "folder" / "images" / "b.nii.gz")


@bad("convert", "image that is a symlink loop", "folder")
def _(root):
    loop = root / "folder" / "images" / "c.nii.gz"
    os.symlink(loop.name, loop)
    return convert_folder(root), str(loop)


@bad("convert", "label on another grid than its image", "folder")
def _(root):
    path = root / "folder" / "labels" / "b.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    return convert_folder(root), str(path)


@bad("convert", "4D image for a 3D label", "folder")
def _(root):
    path = root / "folder" / "images" / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 6, 2), np.float32), np.eye(4)), path)
    return convert_folder(root), str(root / "folder" / "labels" / "a.nii.gz")


@bad("convert", "image without a label", "folder")
def _(root):
    (root / "folder" / "labels" / "b.nii.gz").unlink()
    return convert_folder(root), str(root / "folder" / "images" / "b.nii.gz")


@bad("convert", "label without an image", "folder")
def _(root):
    (root / "folder" / "images" / "a.nii.gz").unlink()
    return convert_folder(root), str(root / "folder" / "labels" / "a")


@bad("convert", "missing images folder", "folder")
def _(root):
    return convert_folder(root)[:3] + [root / "nowhere"] + convert_folder(root)[4:], str(root / "nowhere")


@bad("convert", "empty labels folder", "folder")
def _(root):
    (root / "empty").mkdir()
    argv = convert_folder(root)
    argv[argv.index("--labels") + 1] = root / "empty"
    return argv, str(root / "empty")


@bad("convert", "--id 0", "folder")
def _(root):
    argv = convert_folder(root)
    argv[argv.index("--id") + 1] = "0"
    return argv, "--id"


@bad("convert", "--id 1000", "folder")
def _(root):
    argv = convert_folder(root)
    argv[argv.index("--id") + 1] = "1000"
    return argv, "--id"


@bad("convert", "--id not a number", "folder")
def _(root):
    argv = convert_folder(root)
    argv[argv.index("--id") + 1] = "nine"
    return argv, "--id"


@bad("convert", "dataset name with a space", "folder")
def _(root):
    argv = convert_folder(root)
    argv[argv.index("--name") + 1] = "My Data"
    return argv, "dataset name 'My Data'"


@bad("convert", "--label without a value", "folder")
def _(root):
    return convert_folder(root, "--label", "organ"), "--label"


@bad("convert", "--label with a value twice", "folder")
def _(root):
    return convert_folder(root, "--label", "background=0", "--label", "organ=0"), "label mapping"


@bad("convert", "dataset id taken by a user's data set", "folder")
def _(root):
    taken = user_file(root / "raw" / "Dataset950_Mine")
    return convert_folder(root), str(taken)


@bad("convert", "--overwrite onto a user's data set folder of the same name", "folder")
def _(root):
    mine = root / "raw" / "Dataset950_Bad"
    user_file(mine / "imagesTr", "a_0000.nii.gz")
    (mine / "dataset.json").write_text('{"mine": true}')
    return convert_folder(root, "--overwrite"), str(mine / "dataset.json")


@bad("convert", "raw folder in a read-only place", "folder")
def _(root):
    argv = convert_folder(root)
    argv[argv.index("--raw") + 1] = readonly_place(root) / "raw"
    return argv, str(readonly_place(root) / "raw")


@bad("convert", "unicode and spaces in the paths, a NaN image", "folder")
def _(root):
    moved = root / "données tête" / "IRM série"
    moved.parent.mkdir()
    shutil.move(root / "folder", moved)
    argv = ["convert", "folder", "--images", moved / "images", "--labels", moved / "labels", "--name", "Tête",
            "--id", "951", "--raw", root / "raw"]
    return argv, str(with_nan(moved / "images" / "b.nii.gz"))


# convert msd and png2d -----------------------------------------------------------------------------------------

def convert_msd(root: Path) -> list:
    return ["convert", "msd", root / "msd" / "Task01_Test", "--id", "960", "--raw", root / "raw"]


@bad("convert", "MSD dataset.json not JSON", "msd")
def _(root):
    path = root / "msd" / "Task01_Test" / "dataset.json"
    path.write_text("{modality: T2")
    return convert_msd(root), str(path)


@bad("convert", "MSD dataset.json without training cases", "msd")
def _(root):
    path = root / "msd" / "Task01_Test" / "dataset.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "training": []}))
    return convert_msd(root), str(path)


@bad("convert", "MSD image listed but missing", "msd")
def _(root):
    path = root / "msd" / "Task01_Test" / "imagesTr" / "t_1.nii.gz"
    path.unlink()
    return convert_msd(root), str(path)


@bad("convert", "MSD label value not in dataset.json", "msd")
def _(root):
    return convert_msd(root), str(relabel(root / "msd" / "Task01_Test" / "labelsTr" / "t_0.nii.gz", 3))


@bad("convert", "MSD image with three channels for two modalities", "msd")
def _(root):
    path = root / "msd" / "Task01_Test" / "imagesTr" / "t_0.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 6, 3), np.float32), np.eye(4)), path)
    return convert_msd(root), str(path)


@bad("convert", "MSD labels that nnU-Net refuses (not consecutive)", "msd")
def _(root):
    task = root / "msd" / "Task01_Test"
    meta = json.loads((task / "dataset.json").read_text())
    (task / "dataset.json").write_text(json.dumps({**meta, "labels": {"0": "background", "2": "gland"}}))
    for label in (task / "labelsTr").iterdir():
        image = nib.load(label)
        nib.save(nib.Nifti1Image((np.asarray(image.dataobj) * 2).astype(np.uint8), image.affine), label)
    return convert_msd(root), f"{root / 'raw' / 'Dataset960_Test'}: fails nnU-Net's dataset integrity check"


def convert_png(root: Path, *extra) -> list:
    return ["convert", "png2d", "--images", root / "png" / "images", "--masks", root / "png" / "masks", "--name",
            "Png", "--id", "970", "--raw", root / "raw", *extra]


@bad("convert", "PNG mask with an unexpected colour", "png")
def _(root):
    path = root / "png" / "masks" / "b.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0] = 77
    Image.fromarray(mask).save(path)
    return convert_png(root, "--label", "background=0", "--label", "lesion=255"), str(path)


@bad("convert", "truncated PNG image", "png")
def _(root):
    return convert_png(root), str(truncate(root / "png" / "images" / "a.png", 0.5))


@bad("convert", "PNG mask of another size", "png")
def _(root):
    path = root / "png" / "masks" / "a.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(path)
    return convert_png(root), str(path)


@bad("convert", "--tolerance 300", "png")
def _(root):
    return convert_png(root, "--tolerance", "300"), "--tolerance"


# evaluate ------------------------------------------------------------------------------------------------------

def evaluate_seg(root: Path, *extra) -> list:
    return ["evaluate", "seg", "--pred", root / "seg" / "pred", "--ref", root / "seg" / "ref", "-o", root / "out",
            *extra]


@bad("evaluate", "seg -o folder holding a user's file", "seg")
def _(root):
    return evaluate_seg(root), str(user_file(root / "out"))


@bad("evaluate", "seg prediction missing for a case", "seg")
def _(root):
    (root / "seg" / "pred" / "b.nii.gz").unlink()
    return evaluate_seg(root), str(root / "seg" / "pred")


@bad("evaluate", "seg prediction on another grid", "seg")
def _(root):
    path = root / "seg" / "pred" / "a.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    return evaluate_seg(root), str(path)


@bad("evaluate", "seg prediction with a fractional label", "seg")
def _(root):
    return evaluate_seg(root), str(relabel(root / "seg" / "pred" / "b.nii.gz", 1.5, np.float32))


@bad("evaluate", "seg reference with NaN", "seg")
def _(root):
    return evaluate_seg(root), str(with_nan(root / "seg" / "ref" / "a.nii.gz"))


@bad("evaluate", "seg truncated reference", "seg")
def _(root):
    return evaluate_seg(root), str(truncate(root / "seg" / "ref" / "b.nii.gz"))


@bad("evaluate", "seg --dataset-json not JSON", "seg")
def _(root):
    path = root / "seg" / "dataset.json"
    path.write_text("labels: 1")
    return evaluate_seg(root, "--dataset-json", path), str(path)


@bad("evaluate", "seg --nsd-tolerance -1", "seg")
def _(root):
    return evaluate_seg(root, "--nsd-tolerance", "-1"), "--nsd-tolerance"


@bad("evaluate", "seg -o is a file", "seg")
def _(root):
    (root / "out").write_text("a file")
    return evaluate_seg(root), str(root / "out")


def evaluate_cls(root: Path) -> list:
    return ["evaluate", "cls", "--pred", root / "cls_eval" / "predictions.csv", "--ref",
            root / "cls_eval" / "labels.csv", "-o", root / "out"]


@bad("evaluate", "cls CSV with duplicate case ids", "cls_eval")
def _(root):
    path = root / "cls_eval" / "labels.csv"
    path.write_text("case,label\nc1,x\nc1,y\nc2,y\n")
    return evaluate_cls(root), str(path)


@bad("evaluate", "cls CSV without a label column", "cls_eval")
def _(root):
    path = root / "cls_eval" / "labels.csv"
    path.write_text("case,class\nc1,x\nc2,y\n")
    return evaluate_cls(root), str(path)


@bad("evaluate", "cls probability that is not a number", "cls_eval")
def _(root):
    path = root / "cls_eval" / "predictions.csv"
    path.write_text("case,prob_x,prob_y\nc1,high,0.1\nc2,0.2,0.8\n")
    return evaluate_cls(root), str(path)


@bad("evaluate", "cls CSV that is binary", "cls_eval")
def _(root):
    path = root / "cls_eval" / "predictions.csv"
    path.write_bytes(bytes(range(256)) * 4)
    return evaluate_cls(root), str(path)


@bad("evaluate", "cls -o folder holding a user's file", "cls_eval")
def _(root):
    return evaluate_cls(root), str(user_file(root / "out"))


def evaluate_restore(root: Path, *extra) -> list:
    return ["evaluate", "restore", "--pred", root / "restore" / "pred", "--ref", root / "restore" / "ref", "-o",
            root / "out", *extra]


@bad("evaluate", "restore --data-range 0", "restore")
def _(root):
    return evaluate_restore(root, "--data-range", "0"), "--data-range"


@bad("evaluate", "restore prediction with NaN", "restore")
def _(root):
    return evaluate_restore(root), str(with_nan(root / "restore" / "pred" / "a.nii.gz"))


@bad("evaluate", "restore prediction of another size", "restore")
def _(root):
    return evaluate_restore(root), str(write_image(root / "restore" / "pred" / "b.nii.gz",
                                                   np.zeros((12, 16), np.float32)))


@bad("evaluate", "efficiency --sizes -8")
def _(root):
    return ["evaluate", "efficiency", "--models", "vm_unet", "--sizes", "-8", "-o", root / "out"], "--sizes"


@bad("evaluate", "efficiency unknown model")
def _(root):
    return ["evaluate", "efficiency", "--models", "no_such_net", "--sizes", "16", "-o", root / "out"], "no_such_net"


@bad("evaluate", "efficiency -o folder holding a user's file")
def _(root):
    return (["evaluate", "efficiency", "--models", "vm_unet", "--sizes", "16", "-o", user_file(root / "out")],
            str(root / "out"))


# export-slicer -------------------------------------------------------------------------------------------------

def results_folder(root: Path) -> Path:
    return root / "results" / "Dataset913_TinyModel" / "nnUNetTrainer__nnUNetPlans__3d_fullres"


@bad("export-slicer", "results folder missing")
def _(root):
    return ["export-slicer", root / "nothing", "-o", root / "m.zip"], str(root / "nothing")


@bad("export-slicer", "truncated checkpoint", "results")
def _(root):
    path = truncate(results_folder(root) / "fold_0" / "checkpoint_final.pth")
    return ["export-slicer", results_folder(root), "-o", root / "m.zip"], str(path)


@bad("export-slicer", "checkpoint holding a pickled object", "results")
def _(root):
    import torch

    path = results_folder(root) / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "payload": subprocess.Popen}, path)
    return ["export-slicer", results_folder(root), "-o", root / "m.zip"], str(path)


@bad("export-slicer", "plans.json not JSON", "results")
def _(root):
    path = results_folder(root) / "plans.json"
    path.write_text("{configurations")
    return ["export-slicer", results_folder(root), "-o", root / "m.zip"], str(path)


@bad("export-slicer", "-o names a user's file", "results")
def _(root):
    (root / "m.zip").write_text("the user's file")
    return ["export-slicer", results_folder(root), "-o", root / "m.zip"], str(root / "m.zip")


@bad("export-slicer", "--folds x", "results")
def _(root):
    return ["export-slicer", results_folder(root), "-o", root / "m.zip", "--folds", "x"], "fold 'x'"


@bad("export-slicer", "-o in a read-only place", "results")
def _(root):
    return (["export-slicer", results_folder(root), "-o", readonly_place(root) / "m.zip"],
            str(readonly_place(root) / "m.zip"))


# predict -------------------------------------------------------------------------------------------------------

def predict(root: Path, *extra, source=None, model=None) -> list:
    return ["predict", "--model", model or root / "model.zip", "-i", source or root / "predict_in", "-o",
            root / "out", *extra]


def rewrite_zip(path: Path, edit=None, extra=()) -> Path:
    """Rewrite the package member by member (``edit(name, data) -> data``), then add ``extra`` (name, data)."""
    with zipfile.ZipFile(path) as zin:
        members = [(info, zin.read(info)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info, data in members:
            zout.writestr(info, edit(info.filename, data) if edit else data)
        for name, data in extra:
            zout.writestr(name, data)
    return path


def flip_stored_byte(path: Path, member: str) -> Path:
    """Corrupt ``member``'s compressed bytes in place: its CRC-32 no longer matches."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    name_len, extra_len = (int.from_bytes(data[info.header_offset + o: info.header_offset + o + 2], "little")
                           for o in (26, 28))
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@bad("predict", "weights member with a bad CRC", "model.zip", "predict_in")
def _(root):
    return predict(root), str(flip_stored_byte(root / "model.zip", "fold_0.safetensors"))


@bad("predict", "2D image for a 3D model", "model.zip")
def _(root):
    path = write_image(root / "in" / "slice.nii.gz", np.zeros((28, 28), np.float32))
    return predict(root, source=path), str(path)


@bad("predict", "2-channel 4D image for a 1-channel model", "model.zip")
def _(root):
    path = root / "in" / "two.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((28, 28, 20, 2), np.float32), np.eye(4)), path)
    return predict(root, source=path), str(path)


@bad("predict", "folder with a good and an unreadable image", "model.zip", "predict_in")
def _(root):
    path = root / "predict_in" / "zz_broken.nii.gz"
    path.write_bytes(b"not an image")
    return predict(root), str(path)


@bad("predict", "model zip with an extra unlisted member", "model.zip", "predict_in")
def _(root):
    return predict(root), str(rewrite_zip(root / "model.zip", extra=[("notes.txt", b"hello")]))


@bad("predict", "truncated model zip", "model.zip", "predict_in")
def _(root):
    return predict(root), str(truncate(root / "model.zip", 0.7))


@bad("predict", "model that is not a zip", "predict_in")
def _(root):
    (root / "model.zip").write_text("just text")
    return predict(root), str(root / "model.zip")


@bad("predict", "model zip without a manifest", "model.zip", "predict_in")
def _(root):
    path = root / "model.zip"
    with zipfile.ZipFile(path) as zin:
        members = [(i, zin.read(i)) for i in zin.infolist() if i.filename != "medmamba.json"]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in members:
            zout.writestr(info, data)
    return predict(root), str(path)


@bad("predict", "manifest not JSON", "model.zip", "predict_in")
def _(root):
    return predict(root), str(rewrite_zip(root / "model.zip",
                                          lambda n, d: b"{not json" if n == "medmamba.json" else d))


@bad("predict", "manifest listing wrong types", "model.zip", "predict_in")
def _(root):
    def edit(name, data):
        if name != "medmamba.json":
            return data
        return json.dumps({**json.loads(data), "channels": "MR"}).encode()
    return predict(root), str(rewrite_zip(root / "model.zip", edit))


@bad("predict", "member content changed, CRC rewritten (checksum mismatch)", "model.zip", "predict_in")
def _(root):
    return predict(root), str(rewrite_zip(root / "model.zip",
                                          lambda n, d: d.replace(b'"3d_fullres"', b'"3d_fullrez"', 1)
                                          if n == "plans.json" else d))


@bad("predict", "image with NaN voxels", "model.zip", "predict_in")
def _(root):
    return predict(root), str(with_nan(root / "predict_in" / "scan.nii.gz"))


@bad("predict", "truncated NIfTI", "model.zip", "predict_in")
def _(root):
    return predict(root), str(truncate(root / "predict_in" / "scan.nii.gz"))


@bad("predict", "NRRD header claims more voxels than it holds", "model.zip")
def _(root):
    path = nrrd_with_header(root / "lie.nrrd", (28, 28, 20), np.zeros((10, 28, 28), np.float32).tobytes())
    return predict(root, source=path), str(path)


@bad("predict", "zero-size image", "model.zip")
def _(root):
    (root / "empty.nii.gz").write_bytes(b"")
    return predict(root, source=root / "empty.nii.gz"), str(root / "empty.nii.gz")


@bad("predict", "symlink loop in the input folder", "model.zip", "predict_in")
def _(root):
    loop = root / "predict_in" / "loop.nii.gz"
    os.symlink(loop.name, loop)
    return predict(root), str(loop)


@bad("predict", "vector image for a 1-channel model", "model.zip")
def _(root):
    image = sitk.GetImageFromArray(np.zeros((20, 28, 28, 3), np.float32), isVector=True)
    path = root / "rgb.nrrd"
    sitk.WriteImage(image, str(path))
    return predict(root, source=path), str(path)


@bad("predict", "-o file exists", "model.zip", "predict_in")
def _(root):
    (root / "out.seg.nrrd").write_text("the user's segmentation")
    argv = predict(root, source=root / "predict_in" / "scan.nii.gz")
    argv[argv.index("-o") + 1] = root / "out.seg.nrrd"
    return argv, str(root / "out.seg.nrrd")


@bad("predict", "-o folder holding a user's file", "model.zip", "predict_in")
def _(root):
    return predict(root), str(user_file(root / "out"))


@bad("predict", "--folds 7 not in the package", "model.zip", "predict_in")
def _(root):
    return predict(root, "--folds", "7"), "fold 7"


@bad("predict", "-o in a read-only place", "model.zip", "predict_in")
def _(root):
    argv = predict(root)
    argv[argv.index("-o") + 1] = readonly_place(root) / "out"
    return argv, str(readonly_place(root) / "out")


@bad("predict", "unicode and spaces in the paths, a truncated image", "model.zip", "predict_in")
def _(root):
    folder = root / "scans à lire" / "séance 1"
    folder.parent.mkdir()
    shutil.move(root / "predict_in", folder)
    return predict(root, source=folder), str(truncate(folder / "scan.nii.gz"))


# make-data -----------------------------------------------------------------------------------------------------

@bad("make-data", "seg3d --cases -2")
def _(root):
    return ["make-data", "seg3d", "--id", "980", "--raw", root / "raw", "--cases", "-2"], "--cases"


@bad("make-data", "seg3d --shape 2 2 2")
def _(root):
    return ["make-data", "seg3d", "--id", "980", "--raw", root / "raw", "--shape", "2", "2", "2"], "--shape"


@bad("make-data", "seg3d --shape with two sizes")
def _(root):
    return ["make-data", "seg3d", "--id", "980", "--raw", root / "raw", "--shape", "16", "16"], "--shape"


@bad("make-data", "seg3d --labels 9")
def _(root):
    return ["make-data", "seg3d", "--id", "980", "--raw", root / "raw", "--labels", "9"], "--labels"


@bad("make-data", "seg3d --spacing 0 1 1")
def _(root):
    return ["make-data", "seg3d", "--id", "980", "--raw", root / "raw", "--spacing", "0", "1", "1"], "--spacing"


@bad("make-data", "seg2d id taken by a user's data set")
def _(root):
    return (["make-data", "seg2d", "--id", "981", "--raw", root / "raw"],
            str(user_file(root / "raw" / "Dataset981_Mine")))


@bad("make-data", "cls2d OUT holding a user's file")
def _(root):
    return ["make-data", "cls2d", user_file(root / "out"), "--per-class", "2"], str(root / "out")


@bad("make-data", "cls2d --classes 5")
def _(root):
    return ["make-data", "cls2d", root / "out", "--classes", "5"], "--classes"


@bad("make-data", "cls2d OUT is a file")
def _(root):
    (root / "out").write_text("a file")
    return ["make-data", "cls2d", root / "out", "--per-class", "2"], str(root / "out")


@bad("make-data", "restore --degradation snow")
def _(root):
    return ["make-data", "restore", root / "out", "--degradation", "snow"], "--degradation"


@bad("make-data", "restore --cases 0")
def _(root):
    return ["make-data", "restore", root / "out", "--cases", "0"], "--cases"


# train ---------------------------------------------------------------------------------------------------------

def train_cls(root: Path, *extra) -> list:
    return ["train", "cls", "--data", root / "train_cls", "--out", root / "run", "--preset", "tiny", "--epochs", "1",
            "--device", "cpu", *extra]


def train_restore(root: Path, *extra) -> list:
    return ["train", "restore", "--data", root / "train_res", "--out", root / "run", "--preset", "tiny",
            "--epochs", "1", "--device", "cpu", *extra]


@bad("train", "cls --batch-size -4", "train_cls")
def _(root):
    return train_cls(root, "--batch-size", "-4"), "--batch-size"


@bad("train", "cls --epochs 0", "train_cls")
def _(root):
    argv = train_cls(root)
    argv[argv.index("--epochs") + 1] = "0"
    return argv, "--epochs"


@bad("train", "cls --lr -1", "train_cls")
def _(root):
    return train_cls(root, "--lr", "-1"), "--lr"


@bad("train", "cls --val-fraction 1.5", "train_cls")
def _(root):
    return train_cls(root, "--val-fraction", "1.5"), "--val-fraction"


@bad("train", "cls --model of another task", "train_cls")
def _(root):
    return train_cls(root, "--model", "mhs_vm_unet"), "--model"


@bad("train", "cls --preset unknown", "train_cls")
def _(root):
    argv = train_cls(root)
    argv[argv.index("--preset") + 1] = "huge"
    return argv, "--preset"


@bad("train", "cls --data missing", "train_cls")
def _(root):
    argv = train_cls(root)
    argv[argv.index("--data") + 1] = root / "nothing"
    return argv, str(root / "nothing")


@bad("train", "cls labels.csv with duplicate ids", "train_cls")
def _(root):
    path = root / "train_cls" / "train" / "labels.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    return train_cls(root), str(path)


@bad("train", "cls image with NaN", "train_cls")
def _(root):
    path = sorted((root / "train_cls" / "train" / "images").iterdir())[0]
    return train_cls(root), str(with_nan(path))


@bad("train", "cls truncated image", "train_cls")
def _(root):
    path = sorted((root / "train_cls" / "test" / "images").iterdir())[0]
    return train_cls(root), str(truncate(path))


@bad("train", "cls --out holding a user's file", "train_cls")
def _(root):
    return train_cls(root), str(user_file(root / "run"))


@bad("train", "cls --device tpu", "train_cls")
def _(root):
    argv = train_cls(root)
    argv[argv.index("--device") + 1] = "tpu"
    return argv, "--device"


@bad("train", "restore --param std=-1", "train_res")
def _(root):
    return train_restore(root, "--degradation", "gaussian", "--param", "std=-1"), "--param"


@bad("train", "restore --param that the degradation does not take", "train_res")
def _(root):
    return train_restore(root, "--degradation", "blur", "--param", "acceleration=4"), "--param"


@bad("train", "restore --patch larger than the images", "train_res")
def _(root):
    return train_restore(root, "--patch", "64", "64"), "--patch"


@bad("train", "restore degraded images missing", "train_res")
def _(root):
    shutil.rmtree(root / "train_res" / "train" / "degraded")
    return train_restore(root), str(root / "train_res" / "train" / "degraded")


@bad("train", "restore --out is a file", "train_res")
def _(root):
    (root / "run").write_text("a file")
    return train_restore(root), str(root / "run")


# ---------------------------------------------------------------------------------------------------------------
# the tests


def prepare(case: Case, base: Path, root: Path, monkeypatch) -> tuple[list, str]:
    root.mkdir()
    for part in case.uses:
        source = base / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / part)
    monkeypatch.chdir(root)
    monkeypatch.setenv("nnUNet_raw", str(root / "raw"))
    return case.setup(root)


def restore_permissions(root: Path) -> None:
    locked = root / "locked"
    if locked.exists():
        locked.chmod(0o755)


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input(case_id, base, tmp_path, monkeypatch):
    case = CASES[case_id]
    root = tmp_path / "case"
    argv, named = prepare(case, base, root, monkeypatch)
    try:
        outcome = run_in_process(argv, root)
    finally:
        restore_permissions(root)
    check_refused(outcome, named, case.command, case_id)
    assert not Path("/sys/raw").exists() and not Path("/sys/out").exists()


def test_the_sweep_covers_every_command_with_60_inputs():
    commands = {case.command for case in CASES.values()}
    assert commands == {"convert", "evaluate", "predict", "export-slicer", "make-data", "train"}
    assert len(CASES) >= 60


CONSOLE = [  # the findings, through the console command
    "evaluate: seg -o folder holding a user's file",
    "convert: image with NaN voxels",
    "convert: label value -1",
    "predict: weights member with a bad CRC",
    "predict: 2D image for a 3D model",
    "predict: 2-channel 4D image for a 1-channel model",
    "predict: folder with a good and an unreadable image",
    "make-data: seg3d --cases -2",
    "train: cls --batch-size -4",
]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", CONSOLE)
def test_console(case_id, base, tmp_path, monkeypatch):
    case = CASES[case_id]
    root = tmp_path / "case"
    argv, named = prepare(case, base, root, monkeypatch)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    outcome = run_console(argv, root, env)
    check_refused(outcome, named, case.command, case_id, kind="console")
    assert outcome.rc == 2


# ---------------------------------------------------------------------------------------------------------------
# fuzzing image headers and package members (hypothesis: deterministic, a few dozen examples each)

FUZZ = settings(max_examples=30, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_fuzzed(outcome: Outcome, root: Path, command: str, case: str, may_succeed: bool) -> None:
    """A fuzzed input is refused like any bad input (naming a file under ``root`` or an option), or, when it is
    still a valid input, accepted with a complete output; never a traceback, a lost or changed file."""
    named = str(root) in outcome.last_line or " --" in outcome.last_line
    report_row("bad_inputs", {"kind": "fuzz", "command": command, "case": case, "rc": outcome.rc,
                              "traceback": outcome.traceback is not None, "named": outcome.rc == 0 or named,
                              "new": outcome.new if outcome.rc else [], "lost": outcome.lost,
                              "changed": outcome.changed})
    assert outcome.traceback is None, outcome.traceback
    assert not outcome.lost and not outcome.changed, (outcome.lost, outcome.changed)
    if outcome.rc == 0:
        assert may_succeed, f"accepted: {outcome.stderr[-1000:]}"
    else:
        assert outcome.rc == 2 and named, outcome.last_line
        assert not outcome.new, outcome.new


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=32)
# For predict: a valid value or an invalid one, no odd-but-valid spacing (a 7 mm input upsampled to a 1 mm model is
# valid and takes minutes on a CPU).
PLAIN_OR_INVALID_FLOAT = st.sampled_from([1.0, 2.5, 0.0, -1.0, float("nan"), float("inf"), 1e30])


NRRD_TYPES = ["float", "double", "uchar", "short", "int", "ulonglong", "block", "bogus"]
NRRD_BYTES = {"float": 4, "double": 8, "uchar": 1, "short": 2, "int": 4, "ulonglong": 8}


@st.composite
def nrrd_files(draw) -> bytes:
    """An NRRD file: header fields drawn (some inconsistent), voxels of the declared size or not."""
    # half of them the size of the label they are paired with (x y z), so that some are valid images
    sizes = draw(st.just([10, 10, 6]) | st.lists(st.integers(0, 12), min_size=1, max_size=4))
    kind = draw(st.sampled_from(NRRD_TYPES))
    lines = ["NRRD000" + draw(st.sampled_from("4445x")), f"type: {kind}",
             f"dimension: {draw(st.sampled_from([len(sizes), len(sizes), len(sizes) + 1, 0]))}",
             f"sizes: {' '.join(map(str, sizes))}",
             f"encoding: {draw(st.sampled_from(['raw', 'raw', 'gzip', 'ascii', 'bogus']))}",
             f"endian: {draw(st.sampled_from(['little', 'big', 'middle']))}"]
    if draw(st.booleans()):
        lines.append("spacings: " + " ".join(str(draw(ANY_FLOAT)) for _ in sizes))
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["space: left-posterior-superior", "space: nowhere", "kinds: domain",
                                           "space origin: (0,0,nan)", "byte skip: -1", "line skip: 99"])))
    expected = int(np.prod(sizes)) * NRRD_BYTES.get(kind, 4)
    length = int(expected * draw(st.sampled_from([1.0, 1.0, 0.5, 0.0, 2.0])))
    pattern = draw(st.sampled_from([b"\0", b"\0\0\x80\x3f", b"\x01\x02\x03", b""])) or draw(st.binary(min_size=1))
    return ("\n".join(lines) + "\n\n").encode() + (pattern * (length // len(pattern) + 1))[:length]


NIFTI_FIELDS = {  # name: (offset, struct format, count) in a NIfTI-1 header
    "sizeof_hdr": (0, "<i", 1), "dim": (40, "<8h", 8), "datatype": (70, "<h", 1), "bitpix": (72, "<h", 1),
    "pixdim": (76, "<8f", 8), "vox_offset": (108, "<f", 1), "scl_slope": (112, "<f", 1), "scl_inter": (116, "<f", 1),
    "qform_code": (252, "<h", 1), "sform_code": (254, "<h", 1),
}


@st.composite
def nifti_mutations(draw, floats=ANY_FLOAT) -> list[tuple[str, tuple]]:
    """One to three header fields of a NIfTI-1 file set to drawn values (sizes kept small)."""
    fields = draw(st.lists(st.sampled_from(sorted(NIFTI_FIELDS) + ["magic"]), min_size=1, max_size=3, unique=True))
    mutations = []
    for name in fields:
        if name == "magic":
            mutations.append((name, (draw(st.sampled_from([b"n+2\0", b"ni1\0", b"\0\0\0\0"])),)))
            continue
        _, fmt, count = NIFTI_FIELDS[name]
        value = (floats if fmt.endswith("f")
                 else st.integers(-3, 64) if name in ("dim", "bitpix") else st.integers(-(2**15), 2**15 - 1))
        if name == "sizeof_hdr":
            value = st.integers(-(2**31), 2**31 - 1)
        mutations.append((name, tuple(draw(value) for _ in range(count))))
    return mutations


def mutate_nifti(source: Path, target: Path, mutations) -> Path:
    """``source`` (any NIfTI) written to ``target`` (gzipped for ``.nii.gz``) with header fields overwritten."""
    data = bytearray(nib.Nifti1Image.from_filename(str(source)).to_bytes())
    for name, values in mutations:
        if name == "magic":
            data[344:348] = values[0]
        else:
            offset, fmt, _ = NIFTI_FIELDS[name]
            struct.pack_into(fmt, data, offset, *values)
    target.write_bytes(gzip.compress(bytes(data)) if target.name.endswith(".gz") else bytes(data))
    return target


@pytest.mark.slow
@FUZZ
@given(nrrd=nrrd_files())
def test_hypothesis_nrrd_headers_convert(base, tmp_path_factory, nrrd):
    root = tmp_path_factory.mktemp("fuzz_nrrd")
    shutil.copytree(base / "folder", root / "folder")
    (root / "folder" / "images" / "a.nii.gz").unlink()
    (root / "folder" / "images" / "a.nrrd").write_bytes(nrrd)
    outcome = run_in_process(convert_folder(root, "--no-verify"), root)
    check_fuzzed(outcome, root, "convert", "fuzzed NRRD header", may_succeed=True)


@pytest.mark.slow
@FUZZ
@given(mutations=nifti_mutations())
def test_hypothesis_nifti_headers_convert(base, tmp_path_factory, mutations):
    root = tmp_path_factory.mktemp("fuzz_nifti")
    shutil.copytree(base / "folder", root / "folder")
    image = root / "folder" / "images" / "b.nii.gz"
    mutate_nifti(image, image.with_name("b.nii"), mutations)
    image.unlink()
    outcome = run_in_process(convert_folder(root, "--no-verify"), root)
    check_fuzzed(outcome, root, "convert", "fuzzed NIfTI header", may_succeed=True)


@pytest.mark.slow
@settings(FUZZ, max_examples=10)
@given(mutations=nifti_mutations(PLAIN_OR_INVALID_FLOAT))
def test_hypothesis_nifti_headers_predict(base, tmp_path_factory, mutations):
    root = tmp_path_factory.mktemp("fuzz_nifti_predict")
    shutil.copy(base / "model.zip", root / "model.zip")
    source = mutate_nifti(base / "predict_in" / "scan.nii.gz", root / "scan.nii.gz", mutations)
    outcome = run_in_process(predict(root, source=source), root)
    check_fuzzed(outcome, root, "predict", "fuzzed NIfTI header", may_succeed=True)


@st.composite
def zip_damage(draw):
    """How a package is damaged: bytes flipped anywhere in the file, a member's bytes replaced (its listed
    checksum updated or not), or a manifest field set to any JSON value."""
    kind = draw(st.sampled_from(["flip", "member", "manifest"]))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1,
                                   max_size=4))
    if kind == "member":
        return kind, (draw(st.sampled_from(["plans.json", "dataset.json", "fold_0.safetensors"])),
                      draw(st.binary(max_size=64)) + draw(st.sampled_from([b"", b"{}", b'{"configurations": []}'])),
                      draw(st.booleans()))
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=3), max_leaves=6)
    return kind, (draw(st.sampled_from(["format", "files", "folds", "configuration", "channels", "labels", "network",
                                        "inference_allowed_mirroring_axes", "file_ending", "trainer"])),
                  draw(json_values))


def damage_package(path: Path, damage) -> Path:
    kind, detail = damage
    if kind == "flip":
        data = bytearray(path.read_bytes())
        for where, xor in detail:
            data[int(where * len(data))] ^= xor
        path.write_bytes(bytes(data))
        return path
    if kind == "member":
        member, content, relist = detail

        def edit(name, data):
            if name == member:
                return content
            if name == "medmamba.json" and relist:
                manifest = json.loads(data)
                manifest["files"][member] = hashlib.sha256(content).hexdigest()
                return json.dumps(manifest).encode()
            return data
        return rewrite_zip(path, edit)
    field_name, value = detail
    return rewrite_zip(path, lambda n, d: json.dumps({**json.loads(d), field_name: value}).encode()
                       if n == "medmamba.json" else d)


@pytest.mark.slow
@FUZZ
@given(damage=zip_damage())
def test_hypothesis_package_members_predict(base, tmp_path_factory, damage):
    """A package that still verifies reaches the image check, which refuses the 2D input: so every example ends
    in a refusal, quickly, and the package checks must name the zip without a traceback."""
    root = tmp_path_factory.mktemp("fuzz_zip")
    shutil.copy(base / "model.zip", root / "model.zip")
    damage_package(root / "model.zip", damage)
    source = write_image(root / "slice.nii.gz", np.zeros((28, 28), np.float32))
    outcome = run_in_process(predict(root, source=source), root)
    check_fuzzed(outcome, root, "predict", f"damaged package ({damage[0]})", may_succeed=False)


# ---------------------------------------------------------------------------------------------------------------
# the output-folder rule (medmamba.io_utils)


def tree(folder: Path) -> dict[str, str]:
    return {p: h for p, h in snapshot(folder).items()}


def write_output(target: Path, files: dict[str, str], command: str = "evaluate seg", overwrite: bool = False) -> None:
    from medmamba.io_utils import atomic_dir

    with atomic_dir(target, command, overwrite) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def test_an_earlier_output_of_the_same_command_is_replaced_once_the_new_one_is_complete(tmp_path):
    from medmamba.io_utils import MARKER

    out = tmp_path / "out"
    write_output(out, {"a.csv": "1", "plots/a.png": "1"})
    assert json.loads((out / MARKER).read_text())["files"] == ["a.csv", "plots/a.png"]
    with pytest.raises(RuntimeError):  # a run failing halfway leaves the earlier output as it was
        with contextlib.ExitStack() as stack:
            from medmamba.io_utils import atomic_dir

            tmp = stack.enter_context(atomic_dir(out, "evaluate seg"))
            (tmp / "a.csv").write_text("half")
            raise RuntimeError("interrupted")
    assert (out / "a.csv").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    write_output(out, {"b.csv": "2"})
    assert sorted(tree(out)) == [MARKER, "b.csv"]
    (tmp_path / "empty").mkdir()
    write_output(tmp_path / "empty", {"c.csv": "3"})  # an empty folder is taken as it is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_a_folder_with_other_files_is_refused_and_overwrite_never_deletes_them(tmp_path):
    from medmamba.errors import MedMambaError
    from medmamba.io_utils import MARKER

    out = user_file(tmp_path / "out")
    write_output(tmp_path / "other", {"x.csv": "0"}, command="make-data cls2d")
    for folder, example in ((out, "my notes.txt"), (tmp_path / "other", "x.csv")):  # a user's, another command's
        with pytest.raises(MedMambaError, match=rf"^{folder}: holds files that `medmamba evaluate seg` did not write "
                                                rf"\(e.g. {example}\); give --overwrite"):
            write_output(folder, {"a.csv": "1"})
    write_output(out, {"a.csv": "1", "sub/b.csv": "1"}, overwrite=True)
    assert sorted(tree(out)) == [MARKER, "a.csv", "my notes.txt", "sub", "sub/b.csv"]
    (out / "sub" / "mine.txt").write_text("the user's, inside the command's folder")
    write_output(out, {"a.csv": "2"}, overwrite=True)  # its own earlier files go, the user's stay
    assert sorted(tree(out)) == [MARKER, "a.csv", "my notes.txt", "sub", "sub/mine.txt"]
    assert (out / "a.csv").read_text() == "2" and (out / "my notes.txt").read_text() == "the user's own file"
    before = tree(out)
    with pytest.raises(MedMambaError, match=rf"^{out / 'my notes.txt'}: exists and was not written by"):
        write_output(out, {"my notes.txt": "ours"}, overwrite=True)  # a clash: nothing moved, nothing deleted
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]


def test_a_linked_output_folder_is_written_where_the_link_points(tmp_path):
    (tmp_path / "disk").mkdir()
    os.symlink(tmp_path / "disk", tmp_path / "link")
    write_output(tmp_path / "link", {"a.csv": "1"})
    write_output(tmp_path / "link", {"a.csv": "2"})
    assert (tmp_path / "link").is_symlink() and (tmp_path / "disk" / "a.csv").read_text() == "2"


def test_training_claims_its_folder_and_an_earlier_run_needs_resume_or_overwrite(tmp_path):
    from medmamba.errors import MedMambaError
    from medmamba.io_utils import claim_dir
    from medmamba.training.classification import COMMAND, OUTPUTS
    from medmamba.training.common import check_out_dir

    run = tmp_path / "run"
    check_out_dir(run, COMMAND, resume=False, overwrite=False)
    claim_dir(run, COMMAND, OUTPUTS)
    (run / "checkpoint_latest.pt").write_bytes(b"epoch 1")
    (run / ".history.json.tmp-x1").write_text("{")  # left by a kill while writing
    with pytest.raises(MedMambaError, match="holds an earlier run of `medmamba train cls`; give --resume"):
        check_out_dir(run, COMMAND, resume=False, overwrite=False)
    check_out_dir(run, COMMAND, resume=True, overwrite=False)
    check_out_dir(run, COMMAND, resume=False, overwrite=True)
    with pytest.raises(MedMambaError, match="did not write"):
        check_out_dir(run, "train restore", resume=True, overwrite=False)
    user_file(run)
    with pytest.raises(MedMambaError, match="did not write"):
        check_out_dir(run, COMMAND, resume=True, overwrite=False)
    theirs = user_file(tmp_path / "theirs", "history.json")
    with pytest.raises(MedMambaError, match=rf"^{theirs / 'history.json'}: exists and was not written"):
        claim_dir(theirs, COMMAND, OUTPUTS, overwrite=True)
    assert (theirs / "history.json").read_text() == "the user's own file"


@pytest.mark.parametrize("argv", [
    ["evaluate", "seg", "--pred", "{base}/seg/pred", "--ref", "{base}/seg/ref", "-o", "{out}"],
    ["make-data", "cls2d", "{out}", "--per-class", "2", "--shape", "8", "8"],
])
def test_a_command_run_twice_replaces_its_own_output(argv, base, tmp_path, capsys):
    from medmamba.io_utils import MARKER

    argv = [a.format(base=base, out=tmp_path / "out") for a in argv]
    assert cli_main(argv) == 0
    first = tree(tmp_path / "out")
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert tree(tmp_path / "out") == first and MARKER in first  # deterministic outputs, replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
