"""Checked image reading for the converters: every failure is a one-line ``MedMambaError`` naming the file.

Medical images (NIfTI, NRRD, MHA/MHD, a DICOM series folder) go through SimpleITK; 2D natural images
(PNG, JPEG, BMP, TIFF) through Pillow.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from medmamba.errors import MedMambaError

MEDICAL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NATURAL_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LOSSY_ENDINGS = (".jpg", ".jpeg")


def split_ending(path: os.PathLike, endings: Iterable[str]) -> tuple[str, str] | None:
    """``(stem, ending)`` when the name ends with one of ``endings`` (case-insensitive), else None."""
    name = Path(path).name
    for ending in endings:
        if name.lower().endswith(ending):
            return name[: -len(ending)], ending
    return None


def is_dicom_series(folder: os.PathLike) -> bool:
    """Whether ``folder`` is a folder holding at least one DICOM series (as GDCM finds them)."""
    import SimpleITK as sitk

    return Path(folder).is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def list_entries(folder: os.PathLike, endings: Iterable[str], what: str, dicom: bool = False) -> dict[str, Path]:
    """Map stem -> path for files with ``endings`` (and DICOM series folders when ``dicom``); error when empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedMambaError(f"{folder}: {what} folder does not exist")
    entries: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):  # macOS resource forks ("._x.nii.gz") ship inside MSD tarballs
            continue
        if path.is_symlink() and not path.exists() and split_ending(path, endings):
            raise MedMambaError(f"{path}: a broken or looping symbolic link")
        parts = split_ending(path, endings) if path.is_file() else None
        stem = parts[0] if parts else (path.name if dicom and is_dicom_series(path) else None)
        if stem is None:
            continue
        if stem in entries:
            raise MedMambaError(f"{path}: two {what} files share the stem {stem!r} ({entries[stem].name})")
        entries[stem] = path
    if not entries:
        raise MedMambaError(f"{folder}: no {what} files found (expected {', '.join(endings)})")
    return entries


def read_sitk(path: os.PathLike):
    """Read a medical image file or DICOM series folder with SimpleITK; refuse unreadable files and NaN or
    infinite voxels.

    Args:
        path: the file, or a folder holding one DICOM series.

    Returns:
        The SimpleITK image.
    """
    import SimpleITK as sitk

    path = Path(path)
    with _native_stderr() as native:
        try:
            if path.is_dir():
                ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
                if len(ids) != 1:
                    raise MedMambaError(f"{path}: expected one DICOM series, found {len(ids)}")
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))
                image = reader.Execute()
            else:
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(path))
                reader.ReadImageInformation()
                _check_declared_size(path, reader)
                image = reader.Execute()
        except RuntimeError as err:
            detail = _first_line(err).split(" Reason:")[0]  # ITK's "Reason" is a stale errno
            extra = " ".join(native.read().split())
            raise MedMambaError(f"{path}: unreadable image ({detail}{'; ' + extra if extra else ''})"[:400]) from None
    if split_ending(path, (".nii.gz", ".nii")):
        # ITK's NIfTI reader zero-fills a truncated file and reads NaN as 0 without a word; nibabel shows both
        check_finite(read_nibabel(path)[1], path)
    else:
        check_finite(sitk.GetArrayViewFromImage(image), path)
    return image


# The most a compressed file can expand (deflate's limit is about 1032:1).
MAX_EXPANSION = 1100
DETACHED_ENDINGS = (".nhdr", ".mhd", ".hdr")  # headers whose voxels live in another file


def read_header(path: os.PathLike):
    """SimpleITK reader holding the image's size, spacing, origin and direction (pixels not read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise MedMambaError(f"{path}: unreadable image ({_first_line(err)})") from None
    return reader


def _check_declared_size(path: Path, reader) -> None:
    """Refuse a header that declares more voxel bytes than its file can hold, before anything is allocated for
    them (a lying header would otherwise cost its full size in memory)."""
    import SimpleITK as sitk

    if split_ending(path, DETACHED_ENDINGS):
        return
    one = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    declared = int(np.prod(reader.GetSize(), dtype=np.float64)) * sitk.GetArrayViewFromImage(one).nbytes
    if declared > MAX_EXPANSION * max(path.stat().st_size, 1):
        raise MedMambaError(f"{path}: the header declares {'x'.join(map(str, reader.GetSize()))} voxels "
                            f"({declared} bytes), more than the {path.stat().st_size}-byte file can hold")


class _Captured:
    def __init__(self, file):
        self.file = file

    def read(self) -> str:
        self.file.flush()
        self.file.seek(0)
        return self.file.read().decode(errors="replace")


@contextlib.contextmanager
def _native_stderr():
    """Capture what C++ libraries (ITK's MetaIO) print on file descriptor 2; pass it on unless an error used it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        captured = _Captured(tmp)
        failed = False
        try:
            yield captured
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                text = captured.read()
                if text:
                    sys.stderr.write(text)


def read_nibabel(path: os.PathLike):
    """Load a NIfTI file with nibabel and read its voxels now, so truncation shows here."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return img, np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types (ImageFileError, EOFError, zlib/OSError) for bad files
        raise MedMambaError(f"{path}: unreadable image ({_first_line(err)})") from None


def read_natural(path: os.PathLike, mask: bool = False) -> np.ndarray:
    """A 2D natural image as uint8 (H, W) or (H, W, 3); alpha is dropped. A palette ("P") mask keeps its
    indices (VOC-style label maps), a palette image becomes RGB."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("L", "RGB") or (mask and img.mode == "P"):
                return np.asarray(img)
            if img.mode in ("1", "LA", "I;16", "I"):
                return np.asarray(img.convert("L"))
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise MedMambaError(f"{path}: unreadable image ({_first_line(err)})") from None


def check_same_geometry(image, other, image_path: os.PathLike, other_path: os.PathLike, tol: float = 1e-4) -> None:
    """SimpleITK images on the same voxel grid: size, spacing, origin and direction."""
    checks = (
        ("size", image.GetSize(), other.GetSize()),
        ("spacing", image.GetSpacing(), other.GetSpacing()),
        ("origin", image.GetOrigin(), other.GetOrigin()),
        ("direction", image.GetDirection(), other.GetDirection()),
    )
    for what, a, b in checks:
        if len(a) != len(b) or not np.allclose(a, b, rtol=tol, atol=tol):
            raise MedMambaError(f"{other_path}: {what} {_fmt(b)} differs from {Path(image_path).name}'s {_fmt(a)}")


def check_finite(array: np.ndarray, path: os.PathLike) -> None:
    """No NaN or infinite voxels; the error counts them.

    Args:
        array: the voxels.
        path: the file they come from, named in the error.
    """
    if array.dtype.kind not in "fc":
        return
    nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    if nan or inf:
        raise MedMambaError(f"{path}: {nan} NaN and {inf} infinite voxel(s) of {array.size}; fix or remove them")


def check_label_values(array: np.ndarray, path: os.PathLike, allowed: Iterable[int] | None = None) -> np.ndarray:
    """Integer, non-negative label values (possibly stored as float), a subset of ``allowed`` when given.

    Args:
        array: the label map.
        path: its file, named in errors.
        allowed: the label values the data set defines, or None.

    Returns:
        The sorted distinct values.
    """
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise MedMambaError(f"{path}: label map contains NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            bad = array[array != np.round(array)].flat[0]
            raise MedMambaError(f"{path}: non-integer label value {bad:g}")
    elif array.dtype.kind not in "iub":
        raise MedMambaError(f"{path}: label map has non-numeric type {array.dtype}")
    values = np.unique(array).astype(np.int64)
    if values.size and values[0] < 0:
        raise MedMambaError(f"{path}: negative label value {values[0]} (labels are 0 for background, then 1, 2, ...)")
    if allowed is not None:
        unexpected = sorted(set(values.tolist()) - set(int(v) for v in allowed))
        if unexpected:
            raise MedMambaError(f"{path}: unexpected label values {unexpected} (expected {sorted(allowed)})")
    return values


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _first_line(err: BaseException) -> str:
    """The informative part of an exception message, on one line (ITK's first line is only its source location)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception thrown in SimpleITK"):
        lines = lines[1:]
    text = re.sub(r"^(sitk::ERROR:|ITK ERROR:|itk::ERROR:)\s*(\w+\(0x[0-9a-f]+\):)?\s*", "", " ".join(lines),
                  flags=re.IGNORECASE)
    if "[nrrd]" in text:  # teem's chain of "trouble" lines: its last link says what is wrong
        text = "NRRD: " + text.rsplit("[nrrd]", 1)[1].strip()
    return " ".join(text.split())[:200] or type(err).__name__
