import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from PIL import Image

from medmamba.datasets import phantom


def test_phantom_3d_is_deterministic_and_holds_every_label():
    a_img, a_lab = phantom.phantom_3d((24, 32, 32), (1.0, 1.0, 1.0), num_labels=3, seed=4)
    b_img, b_lab = phantom.phantom_3d((24, 32, 32), (1.0, 1.0, 1.0), num_labels=3, seed=4)
    c_img, _ = phantom.phantom_3d((24, 32, 32), (1.0, 1.0, 1.0), num_labels=3, seed=5)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.allclose(a_img, c_img)
    assert a_img.dtype == np.float32 and np.isfinite(a_img).all()
    assert set(np.unique(a_lab)) == {0, 1, 2, 3}


def test_phantom_organs_differ_in_intensity_and_have_partial_volume_edges():
    image, label = phantom.phantom_2d((96, 96), num_labels=2, seed=1)
    means = [image[label == k].mean() for k in (1, 2)]
    assert means[1] > means[0] + 0.1
    # voxels just outside organ 2 (dilated ring) lie between the background and the organ's intensity
    from scipy import ndimage

    organ = label == 2
    ring = ndimage.binary_dilation(organ) & ~organ & (label == 0)
    inner_bg = ndimage.binary_dilation(organ, iterations=6) & ~ndimage.binary_dilation(organ, iterations=3)
    assert image[inner_bg & (label == 0)].mean() < image[ring].mean() < image[organ].mean()


def test_anisotropic_spacing_samples_the_same_anatomy():
    _, iso = phantom.phantom_3d((32, 32, 32), (1.0, 1.0, 1.0), num_labels=2, seed=7)
    _, aniso = phantom.phantom_3d((11, 32, 32), (3.0, 1.0, 1.0), num_labels=2, seed=7)
    for k in (1, 2):
        vol_iso = (iso == k).sum() * 1.0
        vol_aniso = (aniso == k).sum() * 3.0
        assert abs(vol_aniso - vol_iso) / vol_iso < 0.2, (k, vol_iso, vol_aniso)


def test_classification_classes_share_mean_intensity_but_differ_in_structure():
    images = {c: [phantom.classification_2d((32, 32), c, seed=s) for s in range(6)] for c in range(4)}
    means = np.array([[im.mean() for im in ims] for ims in images.values()])
    np.testing.assert_allclose(means, 0.5, atol=1e-4)  # mean intensity carries no class information
    # A structural feature separates "elongated" from "round": the anisotropy of the bright region's moments.
    def anisotropy(im):
        ys, xs = np.nonzero(im > np.percentile(im, 95))
        ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
        return ev[1] / ev[0]
    assert min(anisotropy(im) for im in images[1]) > max(anisotropy(im) for im in images[0])


def test_write_nnunet_phantom_3d_passes_nnunet_integrity_check(tmp_path):
    spacing = (2.0, 0.8, 0.8)
    folder = phantom.write_nnunet_phantom_3d(tmp_path, 901, "Phantom", n_cases=3, shape=(12, 32, 32),
                                             spacing=spacing, seed=0, num_labels=2)
    assert folder == tmp_path / "Dataset901_Phantom"
    verify_dataset_integrity(str(folder), num_processes=1)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ1": 1, "organ2": 2}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz" and meta["channel_names"] == {"0": "MR"}
    img = sitk.ReadImage(str(folder / "imagesTr" / "case_001_0000.nii.gz"))
    np.testing.assert_allclose(img.GetSpacing(), spacing[::-1])
    expected, expected_label = phantom.phantom_3d((12, 32, 32), spacing, 2, seed=1)
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), expected, rtol=1e-6)
    label = nib.load(str(folder / "labelsTr" / "case_001.nii.gz"))
    np.testing.assert_array_equal(np.asarray(label.dataobj).transpose(2, 1, 0), expected_label)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_write_nnunet_phantom_2d_passes_nnunet_integrity_check(tmp_path):
    folder = phantom.write_nnunet_phantom_2d(tmp_path, 902, "Phantom2D", n_cases=2, shape=(48, 40), seed=0)
    verify_dataset_integrity(str(folder), num_processes=1)
    label = np.asarray(Image.open(folder / "labelsTr" / "case_000.png"))
    assert label.shape == (48, 40) and set(np.unique(label)) == {0, 1, 2}


def test_classification_and_restoration_writers(tmp_path):
    cls_dir = phantom.write_classification_2d(tmp_path / "cls", n_per_class=4, shape=(24, 24), seed=0,
                                              num_classes=3)
    rows = {split: (cls_dir / split / "labels.csv").read_text().splitlines() for split in ("train", "test")}
    assert rows["train"][0] == "case,label" and len(rows["train"]) - 1 + len(rows["test"]) - 1 == 12
    assert {r.split(",")[1] for r in rows["test"][1:]} == {"round", "elongated", "ring"}
    for r in rows["train"][1:]:
        assert (cls_dir / "train" / "images" / f"{r.split(',')[0]}.nii.gz").is_file()

    res_dir = phantom.write_restoration_pairs(tmp_path / "res", n_cases=4, shape=(32, 32), degradation="gaussian",
                                              seed=0, std=0.1)
    clean = sorted(p.name for p in (res_dir / "train" / "clean").iterdir())
    assert clean == sorted(p.name for p in (res_dir / "train" / "degraded").iterdir()) and len(clean) == 3
    c = sitk.GetArrayFromImage(sitk.ReadImage(str(res_dir / "train" / "clean" / clean[0])))
    d = sitk.GetArrayFromImage(sitk.ReadImage(str(res_dir / "train" / "degraded" / clean[0])))
    assert abs((d - c).std() - 0.1) < 0.015


@pytest.mark.parametrize("bad", [{"num_labels": 0}, {"num_labels": 7}])
def test_phantom_rejects_bad_label_counts(bad):
    with pytest.raises(ValueError):
        phantom.phantom_2d((32, 32), seed=0, **bad)


def test_make_data_cli(tmp_path, nnunet_env, capsys):
    from medmamba.cli import main

    assert main(["make-data", "seg3d", "--id", "11", "--cases", "2", "--shape", "12", "16", "16",
                 "--spacing", "2.5", "1", "1", "--seed", "4"]) == 0
    folder = tmp_path / "nnUNet_raw" / "Dataset011_Phantom3D"
    image = sitk.ReadImage(str(folder / "imagesTr" / "case_001_0000.nii.gz"))
    np.testing.assert_allclose(image.GetSpacing(), (1.0, 1.0, 2.5))
    expected, _ = phantom.phantom_3d((12, 16, 16), (2.5, 1.0, 1.0), 2, seed=4 * 100003 + 1)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-6)
    assert main(["make-data", "seg3d", "--id", "11"]) == 2  # id taken, nothing overwritten
    assert "dataset id 11 is taken" in capsys.readouterr().err
    assert main(["make-data", "restore", str(tmp_path / "r"), "--degradation", "snow"]) == 2
    assert "--degradation 'snow'" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["make-data", "cls2d", str(tmp_path / "c"), "--per-class", "2", "--classes", "2"]) == 0
    assert (tmp_path / "c" / "train" / "labels.csv").is_file()
