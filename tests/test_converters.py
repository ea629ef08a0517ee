import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from PIL import Image

from medmamba.cli import main as cli_main
from medmamba.datasets.converters import convert_folder, convert_msd, convert_png2d
from medmamba.errors import MedMambaError

AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])
AFFINE[:3, 3] = [-10.0, 5.0, 3.0]


def make_msd(root, n_cases=2, shape=(12, 10, 6), seed=0):
    """An MSD-like two-modality task: 4D images (X, Y, Z, 2), labels 0..2, one test case, a macOS ._ file."""
    rng = np.random.default_rng(seed)
    task = root / "Task05_Prostate"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    training, originals = [], {}
    for i in range(n_cases):
        image = rng.normal(size=shape + (2,)).astype(np.float32)
        label = rng.integers(0, 3, shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, AFFINE), task / "imagesTr" / f"prostate_{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label, AFFINE), task / "labelsTr" / f"prostate_{i:02d}.nii.gz")
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz",
                         "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
        originals[f"prostate_{i:02d}"] = (image, label)
    nib.save(nib.Nifti1Image(rng.normal(size=shape + (2,)).astype(np.float32), AFFINE),
             task / "imagesTs" / "prostate_99.nii.gz")
    (task / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    meta = {"name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": n_cases,
            "training": training, "test": ["./imagesTs/prostate_99.nii.gz"]}
    (task / "dataset.json").write_text(json.dumps(meta))
    return task, originals


def test_msd_to_nnunet(tmp_path):
    task, originals = make_msd(tmp_path / "msd")
    out = convert_msd(task, tmp_path / "raw", 505, verify=False)  # the CLI test covers verify=True
    assert out == tmp_path / "raw" / "Dataset505_Prostate"
    verify_dataset_integrity(str(out), num_processes=1)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2", "1": "ADC"} and meta["labels"] == {"background": 0, "PZ": 1, "TZ": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    image, label = originals["prostate_01"]
    for c in range(2):
        written = nib.load(out / "imagesTr" / f"prostate_01_{c:04d}.nii.gz")
        np.testing.assert_array_equal(written.get_fdata(), image[..., c])
        np.testing.assert_allclose(written.affine, AFFINE)
    np.testing.assert_array_equal(nib.load(out / "labelsTr" / "prostate_01.nii.gz").get_fdata(), label)
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["prostate_99_0000.nii.gz",
                                                                    "prostate_99_0001.nii.gz"]
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset505_Prostate"]


def write_dicom_series(array: np.ndarray, folder, spacing, origin):
    """int16 (z, y, x) array -> one DICOM file per slice, with the tags ITK needs to rebuild the volume."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    for z in range(array.shape[0]):
        sl = sitk.GetImageFromArray(array[z])
        sl.SetSpacing(spacing[:2])
        position = (origin[0], origin[1], origin[2] + z * spacing[2])
        for tag, value in {
            "0008|0060": "MR", "0020|000e": series_uid, "0020|000d": series_uid + ".0",
            "0008|0018": f"{series_uid}.{z + 1}", "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{spacing[2]:.6f}", "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(sl)


def sitk_image(array, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def make_folder(root, rng):
    """Two channels (T1, T2) per case in NRRD, MHA, NIfTI and one DICOM series; labels with values {0, 5, 7}."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    shape = (5, 8, 9)
    arrays = {}
    for case, (t1_ext, t2_ext) in {"a": (".nrrd", ".mha"), "b": (".nii.gz", ".nrrd"), "c": ("dicom", ".mha")}.items():
        t1 = rng.integers(0, 1000, shape).astype(np.int16)
        t2 = rng.normal(size=shape).astype(np.float32)
        label = rng.choice(np.array([0, 5, 7], np.uint8), shape)
        if t1_ext == "dicom":
            write_dicom_series(t1, images / f"{case}_T1", (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
        else:
            sitk.WriteImage(sitk_image(t1), str(images / f"{case}_T1{t1_ext}"))
        sitk.WriteImage(sitk_image(t2), str(images / f"{case}_T2{t2_ext}"))
        sitk.WriteImage(sitk_image(label), str(labels / f"{case}.mha"))
        arrays[case] = (t1, t2, label)
    return images, labels, arrays


def test_folder_with_dicom_nrrd_mha_to_nnunet(tmp_path):
    images, labels, arrays = make_folder(tmp_path / "src", np.random.default_rng(0))
    out = convert_folder(images, labels, tmp_path / "raw", 7, "Mixed", channels=["T1", "T2"], verify=False)
    verify_dataset_integrity(str(out), num_processes=1)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "label_5": 1, "label_7": 2}
    assert meta["channel_names"] == {"0": "T1", "1": "T2"} and meta["numTraining"] == 3
    for case, (t1, t2, label) in arrays.items():
        back_t1 = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back_t1), t1)
        np.testing.assert_allclose(back_t1.GetSpacing(), (1.0, 1.0, 2.0), atol=1e-5)
        written = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0001.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), t2)
        expected = np.select([label == 5, label == 7], [1, 2], 0)
        written_label = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written_label), expected)


def test_folder_with_explicit_label_names(tmp_path):
    images, labels, _ = make_folder(tmp_path / "src", np.random.default_rng(1))
    out = convert_folder(images, labels, tmp_path / "raw", 8, "Named", channels=["T1", "T2"],
                         labels={"background": 0, "tumour": 7, "edema": 5}, verify=False)
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "tumour": 1, "edema": 2}


def make_png_set(root, rng, n=3, mask_ext=".png", suffix="_segmentation", colour=False):
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    data = {}
    for i in range(n):
        case = f"ISIC_{i:07d}"
        image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        label = np.zeros((20, 24), np.uint8)
        label[4 + i: 12, 5:15 + i] = 1
        label[14:18, 2:6] = 2 if colour else 1
        Image.fromarray(image).save(images / f"{case}.jpg", quality=95)
        if colour:
            palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
            Image.fromarray(palette[label]).save(masks / f"{case}{suffix}{mask_ext}")
        else:
            Image.fromarray(label * 255).save(masks / f"{case}{suffix}{mask_ext}")
        data[case] = (np.asarray(Image.open(images / f"{case}.jpg")), label)
    return images, masks, data


def test_png2d_isic_style_binary_masks(tmp_path):
    images, masks, data = make_png_set(tmp_path / "src", np.random.default_rng(0))
    out = convert_png2d(images, masks, tmp_path / "raw", 120, "Isic", mask_suffix="_segmentation", verify=False)
    verify_dataset_integrity(str(out), num_processes=1)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["file_ending"] == ".png"
    assert meta["labels"] == {"background": 0, "label_255": 1}
    for case, (image, label) in data.items():
        np.testing.assert_array_equal(np.asarray(Image.open(out / "imagesTr" / f"{case}_0000.png")), image)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "labelsTr" / f"{case}.png")), label)


def test_png2d_kvasir_style_jpeg_masks_and_colour_maps(tmp_path):
    images, masks, data = make_png_set(tmp_path / "kv", np.random.default_rng(1), mask_ext=".jpg", suffix="")
    out = convert_png2d(images, masks, tmp_path / "raw", 121, "Kvasir", labels={"background": 0, "polyp": 255},
                        verify=False)
    for case, (_, label) in data.items():  # JPEG noise on the mask is thresholded away
        np.testing.assert_array_equal(np.asarray(Image.open(out / "labelsTr" / f"{case}.png")), label)
    images, masks, data = make_png_set(tmp_path / "col", np.random.default_rng(2), colour=True, suffix="_mask")
    out = convert_png2d(images, masks, tmp_path / "raw", 122, "Colour", mask_suffix="_mask",
                        labels={"background": (0, 0, 0), "road": (255, 0, 0), "car": (0, 255, 0)}, verify=False)
    verify_dataset_integrity(str(out), num_processes=1)
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "road": 1, "car": 2}
    for case, (_, label) in data.items():
        np.testing.assert_array_equal(np.asarray(Image.open(out / "labelsTr" / f"{case}.png")), label)


# ---------------------------------------------------------------------------------------------------------------
# bad input: one-line MedMambaError naming the file, nothing written


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _break_msd_label_value(task):
    path = task / "labelsTr" / "prostate_01.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return path


def _break_msd_geometry(task):
    path = task / "labelsTr" / "prostate_00.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 5), np.uint8), AFFINE), path)
    return path


def _truncate_msd_image(task):
    path = task / "imagesTr" / "prostate_01.nii.gz"
    _truncate(path)
    return path


@pytest.mark.parametrize("breaker, problem", [
    (_truncate_msd_image, "unreadable"),
    (_break_msd_label_value, "unexpected label values [3]"),
    (_break_msd_geometry, "geometry"),
])
def test_msd_bad_input(tmp_path, breaker, problem):
    task, _ = make_msd(tmp_path / "msd")
    path = breaker(task)
    with pytest.raises(MedMambaError) as err:
        convert_msd(task, tmp_path / "raw", 505, verify=False)
    assert str(path) in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "raw").exists()  # nothing written, not even the raw folder


def _folder_truncated(images, labels):
    path = images / "b_T1.nii.gz"
    _truncate(path)
    return path


def _folder_geometry(images, labels):
    path = labels / "a.mha"
    img = sitk.ReadImage(str(path))
    img.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(img, str(path))
    return path


def _folder_non_integer(images, labels):
    path = labels / "b.mha"
    img = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(img).astype(np.float32)
    array[0, 0, 0] = 0.5
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))
    return path


def _folder_missing_label(images, labels):
    (labels / "c.mha").unlink()
    return images / "c_T1"


def _folder_missing_channel(images, labels):
    (images / "a_T2.mha").unlink()
    return labels / "a"


@pytest.mark.parametrize("breaker, problem", [
    (_folder_truncated, "unreadable"),
    (_folder_geometry, "spacing"),
    (_folder_non_integer, "non-integer label value 0.5"),
    (_folder_missing_label, "no matching label"),
    (_folder_missing_channel, "no image for channel 'T2'"),
])
def test_folder_bad_input(tmp_path, breaker, problem):
    images, labels, _ = make_folder(tmp_path / "src", np.random.default_rng(0))
    path = breaker(images, labels)
    with pytest.raises(MedMambaError) as err:
        convert_folder(images, labels, tmp_path / "raw", 7, "Mixed", channels=["T1", "T2"], verify=False)
    assert str(path) in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_folder_unexpected_label_value_and_empty_folder(tmp_path):
    images, labels, _ = make_folder(tmp_path / "src", np.random.default_rng(0))
    with pytest.raises(MedMambaError, match=r"labels/a\.mha: unexpected label values \[7\]"):
        convert_folder(images, labels, tmp_path / "raw", 7, "Mixed", channels=["T1", "T2"],
                       labels={"background": 0, "edema": 5}, verify=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedMambaError, match=r"empty: no label files found"):
        convert_folder(images, tmp_path / "empty", tmp_path / "raw", 7, "Mixed", verify=False)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_png2d_bad_input(tmp_path):
    images, masks, _ = make_png_set(tmp_path / "src", np.random.default_rng(0), colour=True)
    raw = tmp_path / "raw"
    with pytest.raises(MedMambaError, match=r"ISIC_0000000_segmentation\.png: unexpected mask value \(0, 255, 0\)"):
        convert_png2d(images, masks, raw, 1, "X", mask_suffix="_segmentation",
                      labels={"background": (0, 0, 0), "lesion": (255, 0, 0)}, verify=False)
    small = masks / "ISIC_0000001_segmentation.png"
    good = small.read_bytes()
    Image.fromarray(np.zeros((10, 24, 3), np.uint8)).save(small)
    with pytest.raises(MedMambaError, match=r"ISIC_0000001_segmentation\.png: size 24x10 differs"):
        convert_png2d(images, masks, raw, 1, "X", mask_suffix="_segmentation", verify=False)
    small.unlink()
    with pytest.raises(MedMambaError, match=r"ISIC_0000001\.jpg: image has no mask"):
        convert_png2d(images, masks, raw, 1, "X", mask_suffix="_segmentation", verify=False)
    small.write_bytes(good)
    _truncate(images / "ISIC_0000002.jpg")
    with pytest.raises(MedMambaError, match=r"ISIC_0000002\.jpg: unreadable image"):
        convert_png2d(images, masks, raw, 1, "X", mask_suffix="_segmentation", verify=False)
    assert not raw.exists() or list(raw.iterdir()) == []


def test_cli_convert_ok_and_bad_input(tmp_path, nnunet_env, capsys):
    task, _ = make_msd(tmp_path / "msd", n_cases=1)
    assert cli_main(["convert", "msd", str(task), "--id", "42"]) == 0  # default: with nnU-Net's integrity check
    assert (tmp_path / "nnUNet_raw" / "Dataset042_Prostate" / "dataset.json").is_file()
    assert cli_main(["convert", "msd", str(task), "--id", "42"]) == 2  # id taken
    assert "id 42 is taken" in capsys.readouterr().err
    _truncate(task / "labelsTr" / "prostate_00.nii.gz")
    proc = subprocess.run([sys.executable, "-m", "medmamba", "convert", "msd", str(task), "--id", "43"],
                          capture_output=True, encoding="utf-8", errors="replace", env=nnunet_env)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]  # earlier lines are the progress bar
    assert last.startswith("medmamba convert: error: ") and "prostate_00.nii.gz: unreadable image" in last
    assert "Traceback" not in proc.stderr and proc.stderr.count("error") == 1
    assert sorted(p.name for p in (tmp_path / "nnUNet_raw").iterdir()) == ["Dataset042_Prostate"]


def test_png2d_palette_masks_keep_their_indices(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    label = np.zeros((12, 10), np.uint8)
    label[2:6, 1:4], label[7:11, 5:9] = 1, 2
    Image.fromarray(np.full((12, 10), 90, np.uint8)).save(images / "voc_1.png")
    mask = Image.fromarray(label, mode="P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    mask.save(masks / "voc_1.png")
    out = convert_png2d(images, masks, tmp_path / "raw", 123, "Voc", verify=False)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labelsTr" / "voc_1.png")), label)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_2": 2} and meta["channel_names"] == {"0": "grey"}
